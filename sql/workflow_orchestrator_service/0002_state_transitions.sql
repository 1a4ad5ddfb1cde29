-- The allowed moves between a run's phases and between a subscription's statuses, from
-- plait.workflow_orchestrator.states (PHASES, SUBSCRIPTIONS): the repository's UPDATEs
-- already match only rows in an allowed predecessor state; these triggers refuse any other
-- writer's forbidden move too (Running -> Pending, Succeeded -> Running, ...).

CREATE FUNCTION workflow_orchestrator_service.enforce_phase_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT NEW.phase = ANY(TG_ARGV) THEN
        RETURN NEW;  -- not a state at all: the column's CHECK constraint refuses it by name
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NOT ('-> ' || NEW.phase) = ANY(TG_ARGV) THEN
            RAISE EXCEPTION '%.%: a row cannot start with phase %', TG_TABLE_SCHEMA, TG_TABLE_NAME, NEW.phase
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = TG_TABLE_NAME || '_phase_initial',
                      HINT = 'a row starts as one of: ' || array_to_string(ARRAY(
                          SELECT substr(a, 4) FROM unnest(TG_ARGV) a WHERE a LIKE '-> %'), ', ');
        END IF;
        RETURN NEW;
    END IF;
    IF NOT (OLD.phase || ' -> ' || NEW.phase) = ANY(TG_ARGV) THEN
        RAISE EXCEPTION '%.%: phase % -> % is not an allowed transition',
            TG_TABLE_SCHEMA, TG_TABLE_NAME, OLD.phase, NEW.phase
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = TG_TABLE_NAME || '_phase_transition',
                  HINT = OLD.phase || ' may move to: ' || coalesce(nullif(array_to_string(ARRAY(
                      SELECT substr(a, length(OLD.phase) + 5) FROM unnest(TG_ARGV) a
                      WHERE a LIKE OLD.phase || ' -> %'), ', '), ''), 'nothing (final)');
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION workflow_orchestrator_service.enforce_phase_transition() IS
    'Refuses a change of phase (or a first phase) that the state machine given as the trigger''s arguments does not allow. The arguments are plait.kernel.transitions.StateMachine.trigger_arguments() of the states.py that declares the lifecycle: every state, ''-> S'' for each first state, ''A -> B'' for each allowed move; tests/kernel/test_states.py keeps the two equal.';

CREATE FUNCTION workflow_orchestrator_service.enforce_status_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT NEW.status = ANY(TG_ARGV) THEN
        RETURN NEW;  -- not a state at all: the column's CHECK constraint refuses it by name
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NOT ('-> ' || NEW.status) = ANY(TG_ARGV) THEN
            RAISE EXCEPTION '%.%: a row cannot start with status %', TG_TABLE_SCHEMA, TG_TABLE_NAME, NEW.status
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = TG_TABLE_NAME || '_status_initial',
                      HINT = 'a row starts as one of: ' || array_to_string(ARRAY(
                          SELECT substr(a, 4) FROM unnest(TG_ARGV) a WHERE a LIKE '-> %'), ', ');
        END IF;
        RETURN NEW;
    END IF;
    IF NOT (OLD.status || ' -> ' || NEW.status) = ANY(TG_ARGV) THEN
        RAISE EXCEPTION '%.%: status % -> % is not an allowed transition',
            TG_TABLE_SCHEMA, TG_TABLE_NAME, OLD.status, NEW.status
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = TG_TABLE_NAME || '_status_transition',
                  HINT = OLD.status || ' may move to: ' || coalesce(nullif(array_to_string(ARRAY(
                      SELECT substr(a, length(OLD.status) + 5) FROM unnest(TG_ARGV) a
                      WHERE a LIKE OLD.status || ' -> %'), ', '), ''), 'nothing (final)');
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION workflow_orchestrator_service.enforce_status_transition() IS
    'Refuses a change of status (or a first status) that the state machine given as the trigger''s arguments does not allow. The arguments are plait.kernel.transitions.StateMachine.trigger_arguments() of the states.py that declares the lifecycle: every state, ''-> S'' for each first state, ''A -> B'' for each allowed move; tests/kernel/test_states.py keeps the two equal.';

CREATE TRIGGER workflow_instances_phase_transition
    BEFORE UPDATE OF phase ON workflow_orchestrator_service.workflow_instances
    FOR EACH ROW WHEN (OLD.phase IS DISTINCT FROM NEW.phase)
    EXECUTE FUNCTION workflow_orchestrator_service.enforce_phase_transition('Cancelled', 'Error', 'Failed', 'Pending', 'Running', 'Succeeded', 'Suspended', '-> Pending', 'Error -> Running', 'Failed -> Running', 'Pending -> Cancelled', 'Pending -> Error', 'Pending -> Failed', 'Pending -> Running', 'Pending -> Succeeded', 'Running -> Cancelled', 'Running -> Error', 'Running -> Failed', 'Running -> Succeeded', 'Running -> Suspended', 'Suspended -> Cancelled', 'Suspended -> Error', 'Suspended -> Failed', 'Suspended -> Running', 'Suspended -> Succeeded');
CREATE TRIGGER workflow_instances_phase_initial
    BEFORE INSERT ON workflow_orchestrator_service.workflow_instances
    FOR EACH ROW EXECUTE FUNCTION workflow_orchestrator_service.enforce_phase_transition('Cancelled', 'Error', 'Failed', 'Pending', 'Running', 'Succeeded', 'Suspended', '-> Pending', 'Error -> Running', 'Failed -> Running', 'Pending -> Cancelled', 'Pending -> Error', 'Pending -> Failed', 'Pending -> Running', 'Pending -> Succeeded', 'Running -> Cancelled', 'Running -> Error', 'Running -> Failed', 'Running -> Succeeded', 'Running -> Suspended', 'Suspended -> Cancelled', 'Suspended -> Error', 'Suspended -> Failed', 'Suspended -> Running', 'Suspended -> Succeeded');

CREATE TRIGGER workflow_event_subscriptions_status_transition
    BEFORE UPDATE OF status ON workflow_orchestrator_service.workflow_event_subscriptions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION workflow_orchestrator_service.enforce_status_transition('Cancelled', 'Expired', 'Matched', 'Waiting', '-> Waiting', 'Waiting -> Cancelled', 'Waiting -> Expired', 'Waiting -> Matched');
CREATE TRIGGER workflow_event_subscriptions_status_initial
    BEFORE INSERT ON workflow_orchestrator_service.workflow_event_subscriptions
    FOR EACH ROW EXECUTE FUNCTION workflow_orchestrator_service.enforce_status_transition('Cancelled', 'Expired', 'Matched', 'Waiting', '-> Waiting', 'Waiting -> Cancelled', 'Waiting -> Expired', 'Waiting -> Matched');
