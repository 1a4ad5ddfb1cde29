-- The allowed moves between a run's phases and between a subscription's statuses, from
-- plait.workflow_orchestrator.states (PHASES, SUBSCRIPTIONS): the repository's UPDATEs
-- already match only rows in an allowed predecessor state; these triggers refuse any other
-- writer's forbidden move too (Running -> Pending, Succeeded -> Running, ...).

CREATE FUNCTION workflow_orchestrator_service.enforce_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    col text := TG_ARGV[0];
    machine jsonb := TG_ARGV[1]::jsonb;
    new_state text := to_jsonb(NEW) ->> col;
    old_state text;
BEGIN
    IF NOT (machine -> 'transitions') ? new_state THEN
        RETURN NEW;  -- not a state at all: the column's CHECK constraint refuses it by name
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NOT (machine -> 'initial') ? new_state THEN
            RAISE EXCEPTION '%.%: a row cannot start with % %', TG_TABLE_SCHEMA, TG_TABLE_NAME, col, new_state
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = TG_TABLE_NAME || '_' || col || '_initial',
                      HINT = 'a row starts as one of ' || (machine -> 'initial')::text;
        END IF;
    ELSE
        old_state := to_jsonb(OLD) ->> col;
        IF NOT coalesce((machine -> 'transitions' -> old_state) ? new_state, false) THEN
            RAISE EXCEPTION '%.%: % % -> % is not an allowed transition',
                TG_TABLE_SCHEMA, TG_TABLE_NAME, col, old_state, new_state
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = TG_TABLE_NAME || '_' || col || '_transition',
                      HINT = old_state || ' may move to '
                          || coalesce(machine -> 'transitions' -> old_state, '[]'::jsonb)::text;
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION workflow_orchestrator_service.enforce_transition() IS
    'Refuses a state change (or a first state) that the state machine given as the trigger''s arguments does not allow: (column, the table as JSON {"initial": [...], "transitions": {state: [next states]}}). The JSON is plait.kernel.transitions.StateMachine.as_json() of the states.py that declares the lifecycle; tests/kernel/test_states.py keeps the two equal.';

CREATE TRIGGER workflow_instances_phase_transition
    BEFORE UPDATE OF phase ON workflow_orchestrator_service.workflow_instances
    FOR EACH ROW WHEN (OLD.phase IS DISTINCT FROM NEW.phase)
    EXECUTE FUNCTION workflow_orchestrator_service.enforce_transition('phase', '{"initial":["Pending"],"transitions":{"Cancelled":[],"Error":["Running"],"Failed":["Running"],"Pending":["Cancelled","Error","Failed","Running","Succeeded"],"Running":["Cancelled","Error","Failed","Succeeded","Suspended"],"Succeeded":[],"Suspended":["Cancelled","Error","Failed","Running","Succeeded"]}}');
CREATE TRIGGER workflow_instances_phase_initial
    BEFORE INSERT ON workflow_orchestrator_service.workflow_instances
    FOR EACH ROW EXECUTE FUNCTION workflow_orchestrator_service.enforce_transition('phase', '{"initial":["Pending"],"transitions":{"Cancelled":[],"Error":["Running"],"Failed":["Running"],"Pending":["Cancelled","Error","Failed","Running","Succeeded"],"Running":["Cancelled","Error","Failed","Succeeded","Suspended"],"Succeeded":[],"Suspended":["Cancelled","Error","Failed","Running","Succeeded"]}}');

CREATE TRIGGER workflow_event_subscriptions_status_transition
    BEFORE UPDATE OF status ON workflow_orchestrator_service.workflow_event_subscriptions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION workflow_orchestrator_service.enforce_transition('status', '{"initial":["Waiting"],"transitions":{"Cancelled":[],"Expired":[],"Matched":[],"Waiting":["Cancelled","Expired","Matched"]}}');
CREATE TRIGGER workflow_event_subscriptions_status_initial
    BEFORE INSERT ON workflow_orchestrator_service.workflow_event_subscriptions
    FOR EACH ROW EXECUTE FUNCTION workflow_orchestrator_service.enforce_transition('status', '{"initial":["Waiting"],"transitions":{"Cancelled":[],"Expired":[],"Matched":[],"Waiting":["Cancelled","Expired","Matched"]}}');
