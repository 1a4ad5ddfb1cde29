-- The operator replicas that share the runs (docs/operator.md, "Several replicas"). Each
-- live replica keeps its row's heartbeat fresh; the live members of a scope (the
-- namespaces they watch) are those whose heartbeat is recent, and each run belongs to
-- exactly one of them (rendezvous hashing of the run's
-- id over the members' names, computed by every replica from the same rows). A replica
-- that stops deletes its row; one that dies is dropped when its heartbeat grows old, and
-- the others take its runs over.

CREATE TABLE workflow_orchestrator_service.operator_members (
    member text PRIMARY KEY CHECK (length(member) BETWEEN 1 AND 253),
    scope text NOT NULL CHECK (length(scope) >= 1),
    joined_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE workflow_orchestrator_service.operator_members IS
    'Operator replicas sharing the runs: one row per replica, its heartbeat refreshed every few seconds; rows of stopped replicas are deleted.';
COMMENT ON COLUMN workflow_orchestrator_service.operator_members.member IS
    'The replica''s name: its pod (or host) name and a random suffix, new at every start.';
COMMENT ON COLUMN workflow_orchestrator_service.operator_members.scope IS
    'What the replica watches: * for every namespace, else its namespaces, sorted and comma-separated. Only replicas of the same scope share runs.';
CREATE INDEX operator_members_scope
    ON workflow_orchestrator_service.operator_members (scope, heartbeat_at);
COMMENT ON COLUMN workflow_orchestrator_service.operator_members.heartbeat_at IS
    'When the replica last said it is alive (the database''s clock, so replicas'' clocks need not agree).';

-- The runs not yet ended, found without reading the history: a replica resumes those it
-- owns when it starts, when it takes over a dead replica's share, and at every resync.
CREATE INDEX workflow_instances_unfinished
    ON workflow_orchestrator_service.workflow_instances (namespace, id)
    WHERE phase IN ('Pending', 'Running', 'Suspended');
COMMENT ON INDEX workflow_orchestrator_service.workflow_instances_unfinished IS
    'Runs not yet ended (Pending, Running, Suspended), for the replicas that resume them.';
