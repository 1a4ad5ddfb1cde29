-- The allowed moves between a task attempt's states, from plait.task_execution.states
-- (STATES): the repository's UPDATEs already match only rows in an allowed predecessor
-- state; this trigger refuses any other writer's forbidden move too (Running -> Pending,
-- Succeeded -> Failed, ...). An attempt starts Pending, or Skipped when its run ended
-- before it could start.

CREATE FUNCTION task_execution_service.enforce_transition() RETURNS trigger
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
COMMENT ON FUNCTION task_execution_service.enforce_transition() IS
    'Refuses a state change (or a first state) that the state machine given as the trigger''s arguments does not allow: (column, the table as JSON {"initial": [...], "transitions": {state: [next states]}}). The JSON is plait.kernel.transitions.StateMachine.as_json() of the states.py that declares the lifecycle; tests/kernel/test_states.py keeps the two equal.';

CREATE TRIGGER task_instances_state_transition
    BEFORE UPDATE OF state ON task_execution_service.task_instances
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION task_execution_service.enforce_transition('state', '{"initial":["Pending","Skipped"],"transitions":{"Cancelled":[],"Failed":[],"Pending":["Cancelled","Failed","Running","Skipped","Succeeded","TimedOut","Waiting"],"Running":["Cancelled","Failed","Succeeded","TimedOut"],"Skipped":[],"Succeeded":[],"TimedOut":[],"Waiting":["Cancelled","Failed","Succeeded","TimedOut"]}}');
CREATE TRIGGER task_instances_state_initial
    BEFORE INSERT ON task_execution_service.task_instances
    FOR EACH ROW EXECUTE FUNCTION task_execution_service.enforce_transition('state', '{"initial":["Pending","Skipped"],"transitions":{"Cancelled":[],"Failed":[],"Pending":["Cancelled","Failed","Running","Skipped","Succeeded","TimedOut","Waiting"],"Running":["Cancelled","Failed","Succeeded","TimedOut"],"Skipped":[],"Succeeded":[],"TimedOut":[],"Waiting":["Cancelled","Failed","Succeeded","TimedOut"]}}');
