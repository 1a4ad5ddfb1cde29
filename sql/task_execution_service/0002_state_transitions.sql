-- The allowed moves between a task attempt's states, from plait.task_execution.states
-- (STATES): the repository's UPDATEs already match only rows in an allowed predecessor
-- state; this trigger refuses any other writer's forbidden move too (Running -> Pending,
-- Succeeded -> Failed, ...). An attempt starts Pending, or Skipped when its run ended
-- before it could start.

CREATE FUNCTION task_execution_service.enforce_state_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT NEW.state = ANY(TG_ARGV) THEN
        RETURN NEW;  -- not a state at all: the column's CHECK constraint refuses it by name
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NOT ('-> ' || NEW.state) = ANY(TG_ARGV) THEN
            RAISE EXCEPTION '%.%: a row cannot start with state %', TG_TABLE_SCHEMA, TG_TABLE_NAME, NEW.state
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = TG_TABLE_NAME || '_state_initial',
                      HINT = 'a row starts as one of: ' || array_to_string(ARRAY(
                          SELECT substr(a, 4) FROM unnest(TG_ARGV) a WHERE a LIKE '-> %'), ', ');
        END IF;
        RETURN NEW;
    END IF;
    IF NOT (OLD.state || ' -> ' || NEW.state) = ANY(TG_ARGV) THEN
        RAISE EXCEPTION '%.%: state % -> % is not an allowed transition',
            TG_TABLE_SCHEMA, TG_TABLE_NAME, OLD.state, NEW.state
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = TG_TABLE_NAME || '_state_transition',
                  HINT = OLD.state || ' may move to: ' || coalesce(nullif(array_to_string(ARRAY(
                      SELECT substr(a, length(OLD.state) + 5) FROM unnest(TG_ARGV) a
                      WHERE a LIKE OLD.state || ' -> %'), ', '), ''), 'nothing (final)');
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION task_execution_service.enforce_state_transition() IS
    'Refuses a change of state (or a first state) that the state machine given as the trigger''s arguments does not allow. The arguments are plait.kernel.transitions.StateMachine.trigger_arguments() of the states.py that declares the lifecycle: every state, ''-> S'' for each first state, ''A -> B'' for each allowed move; tests/kernel/test_states.py keeps the two equal.';

CREATE TRIGGER task_instances_state_transition
    BEFORE UPDATE OF state ON task_execution_service.task_instances
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION task_execution_service.enforce_state_transition('Cancelled', 'Failed', 'Pending', 'Running', 'Skipped', 'Succeeded', 'TimedOut', 'Waiting', '-> Pending', '-> Skipped', 'Pending -> Cancelled', 'Pending -> Failed', 'Pending -> Running', 'Pending -> Skipped', 'Pending -> Succeeded', 'Pending -> TimedOut', 'Pending -> Waiting', 'Running -> Cancelled', 'Running -> Failed', 'Running -> Succeeded', 'Running -> TimedOut', 'Waiting -> Cancelled', 'Waiting -> Failed', 'Waiting -> Succeeded', 'Waiting -> TimedOut');
CREATE TRIGGER task_instances_state_initial
    BEFORE INSERT ON task_execution_service.task_instances
    FOR EACH ROW EXECUTE FUNCTION task_execution_service.enforce_state_transition('Cancelled', 'Failed', 'Pending', 'Running', 'Skipped', 'Succeeded', 'TimedOut', 'Waiting', '-> Pending', '-> Skipped', 'Pending -> Cancelled', 'Pending -> Failed', 'Pending -> Running', 'Pending -> Skipped', 'Pending -> Succeeded', 'Pending -> TimedOut', 'Pending -> Waiting', 'Running -> Cancelled', 'Running -> Failed', 'Running -> Succeeded', 'Running -> TimedOut', 'Waiting -> Cancelled', 'Waiting -> Failed', 'Waiting -> Succeeded', 'Waiting -> TimedOut');
