-- Why an attempt failed, so that a retry policy can tell a task's own failure from a Pod
-- error (retries.retryOn: OnFailure, OnError, Always) and never retries what no retry can
-- fix. Recorded by the component that sees the end of the attempt, not guessed later from
-- the exit code and message.

ALTER TABLE task_execution_service.task_instances
    ADD COLUMN failure_cause text,
    ADD CONSTRAINT task_instances_failure_cause_known
        CHECK (failure_cause IN ('Failure', 'Error', 'Invalid')),
    ADD CONSTRAINT task_instances_failure_cause_when_failed
        CHECK (failure_cause IS NULL OR state IN ('Failed', 'TimedOut'));
COMMENT ON COLUMN task_execution_service.task_instances.failure_cause IS
    'Why a Failed or TimedOut attempt did not succeed (plait.task_execution.states.FailureCause): Failure (the task''s process exited non-zero or ran past its timeout), Error (the Pod was refused or evicted, its container could not start or reported no exit, or the Job could not be built), Invalid (its inputs or when could not be evaluated; never retried). Null for other states and for rows from before this column.';
