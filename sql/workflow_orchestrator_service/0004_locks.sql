-- Locks across runs (spec.synchronization of a workflow or a task): one row per request,
-- held by a run (task_name '') or by a task of it. Granting is serialised per lock by a
-- transaction-level advisory lock on the lock's name, in queue order: higher priority
-- first, then first come. In the database, not in a process: an operator killed while a
-- run holds a lock loses nothing; the lock is let go when the run (or the task) ends,
-- and the rows go with a deleted run.

CREATE TABLE workflow_orchestrator_service.lock_requests (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace text NOT NULL,
    lock_key text NOT NULL CHECK (length(lock_key) BETWEEN 1 AND 253),
    lock_limit integer NOT NULL CHECK (lock_limit BETWEEN 1 AND 10000),
    workflow_instance_id uuid NOT NULL
        REFERENCES workflow_orchestrator_service.workflow_instances (id) ON DELETE CASCADE,
    instance_name text NOT NULL,
    task_name text NOT NULL DEFAULT '',
    priority integer NOT NULL DEFAULT 0,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    granted_at timestamptz,
    CONSTRAINT lock_requests_one_per_holder
        UNIQUE (workflow_instance_id, task_name, namespace, lock_key)
);
COMMENT ON TABLE workflow_orchestrator_service.lock_requests IS
    'Requests for the named locks of spec.synchronization, waiting (granted_at null) or held; a row is deleted when its holder lets the lock go.';
COMMENT ON COLUMN workflow_orchestrator_service.lock_requests.task_name IS
    'The task (or fan-out item) that holds or waits for the lock; empty when the whole run does.';
COMMENT ON COLUMN workflow_orchestrator_service.lock_requests.lock_limit IS
    'How many may hold the lock at once, as the request''s definition says (1: a mutex).';
CREATE INDEX lock_requests_queue
    ON workflow_orchestrator_service.lock_requests (namespace, lock_key, priority DESC, requested_at, id);
COMMENT ON INDEX workflow_orchestrator_service.lock_requests_queue IS
    'A lock''s queue in grant order, and its holders, without scanning other locks.';
