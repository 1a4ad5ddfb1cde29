-- The allowed moves of the dispatch queue and of dead letters, from
-- plait.event_processing.states (QUEUE, DEAD_LETTERS). Only state changes are checked
-- (a row's first state is its column default), so ingestion's inserts pay nothing.

CREATE FUNCTION event_processing_service.enforce_state_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT NEW.state = ANY(TG_ARGV) THEN
        RETURN NEW;  -- not a state at all: the column's CHECK constraint refuses it by name
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
COMMENT ON FUNCTION event_processing_service.enforce_state_transition() IS
    'Refuses a change of state (or a first state) that the state machine given as the trigger''s arguments does not allow. The arguments are plait.kernel.transitions.StateMachine.trigger_arguments() of the states.py that declares the lifecycle: every state, ''-> S'' for each first state, ''A -> B'' for each allowed move; tests/kernel/test_states.py keeps the two equal.';

CREATE FUNCTION event_processing_service.enforce_status_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT NEW.status = ANY(TG_ARGV) THEN
        RETURN NEW;  -- not a state at all: the column's CHECK constraint refuses it by name
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
COMMENT ON FUNCTION event_processing_service.enforce_status_transition() IS
    'Refuses a change of status (or a first status) that the state machine given as the trigger''s arguments does not allow. The arguments are plait.kernel.transitions.StateMachine.trigger_arguments() of the states.py that declares the lifecycle: every state, ''-> S'' for each first state, ''A -> B'' for each allowed move; tests/kernel/test_states.py keeps the two equal.';

CREATE TRIGGER event_queue_state_state_transition
    BEFORE UPDATE OF state ON event_processing_service.event_queue_state
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION event_processing_service.enforce_state_transition('DeadLettered', 'Done', 'Leased', 'Pending', '-> Pending', 'DeadLettered -> Pending', 'Leased -> DeadLettered', 'Leased -> Done', 'Leased -> Pending', 'Pending -> Leased');

CREATE TRIGGER dead_letter_queue_status_transition
    BEFORE UPDATE OF status ON event_processing_service.dead_letter_queue
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION event_processing_service.enforce_status_transition('Discarded', 'Open', 'Replayed', '-> Open', 'Open -> Discarded', 'Open -> Replayed');
