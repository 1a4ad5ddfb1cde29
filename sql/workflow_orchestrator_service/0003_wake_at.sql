-- Deadlines wake a run by themselves. Every advance of a run records the earliest moment
-- it must be looked at again even if nothing else happens (its workflow timeout, the end
-- of a retry's backoff); a loop in every operator replica claims the runs that are due
-- (FOR UPDATE SKIP LOCKED, so each due run is claimed by one replica) and advances them.
-- In the database, not in a process's memory: a restart or the loss of a replica loses
-- no deadline.

ALTER TABLE workflow_orchestrator_service.workflow_instances
    ADD COLUMN wake_at timestamptz,
    ADD CONSTRAINT workflow_instances_no_wake_when_final
        CHECK (wake_at IS NULL OR phase NOT IN ('Succeeded', 'Failed', 'Cancelled', 'Error'));
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.wake_at IS
    'When an unfinished run must be advanced even if nothing happens: the earlier of its workflow timeout and the end of a retry''s backoff (null: no deadline pending). A replica that claims a due run moves this a lease ahead (30 s) until its advance writes the next deadline, so a replica lost mid-way delays the run, never strands it.';
CREATE INDEX workflow_instances_wake
    ON workflow_orchestrator_service.workflow_instances (wake_at) WHERE wake_at IS NOT NULL;
COMMENT ON INDEX workflow_orchestrator_service.workflow_instances_wake IS
    'The deadline loop finds the due runs, and the next deadline to sleep until, without scanning the other runs.';
