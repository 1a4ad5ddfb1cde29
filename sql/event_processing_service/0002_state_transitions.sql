-- The allowed moves of the dispatch queue and of dead letters, from
-- plait.event_processing.states (QUEUE, DEAD_LETTERS). Only state changes are checked
-- (a row's first state is its column default), so ingestion's inserts pay nothing.

CREATE FUNCTION event_processing_service.enforce_transition() RETURNS trigger
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
COMMENT ON FUNCTION event_processing_service.enforce_transition() IS
    'Refuses a state change (or a first state) that the state machine given as the trigger''s arguments does not allow: (column, the table as JSON {"initial": [...], "transitions": {state: [next states]}}). The JSON is plait.kernel.transitions.StateMachine.as_json() of the states.py that declares the lifecycle; tests/kernel/test_states.py keeps the two equal.';

CREATE TRIGGER event_queue_state_state_transition
    BEFORE UPDATE OF state ON event_processing_service.event_queue_state
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION event_processing_service.enforce_transition('state', '{"initial":["Pending"],"transitions":{"DeadLettered":["Pending"],"Done":[],"Leased":["DeadLettered","Done","Pending"],"Pending":["Leased"]}}');

CREATE TRIGGER dead_letter_queue_status_transition
    BEFORE UPDATE OF status ON event_processing_service.dead_letter_queue
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION event_processing_service.enforce_transition('status', '{"initial":["Open"],"transitions":{"Discarded":[],"Open":["Discarded","Replayed"],"Replayed":[]}}');
