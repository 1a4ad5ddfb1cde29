-- The test gate (WorkflowDefinition spec.testGate): a version stored with the gate on is
-- a candidate until the WorkflowTests of its workflow have passed on it. New runs that
-- name no version run the newest version that is neither a candidate nor failed, so a
-- version whose tests fail is never picked up by them.

CREATE TABLE workflow_orchestrator_service.workflow_definition_gates (
    definition_id  uuid        PRIMARY KEY
        REFERENCES workflow_orchestrator_service.workflow_definitions (id) ON DELETE CASCADE,
    state          text        NOT NULL DEFAULT 'Testing'
        CONSTRAINT workflow_definition_gates_state_known
        CHECK (state IN ('Testing', 'Passed', 'Failed', 'Untested', 'Superseded')),
    message        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    decided_at     timestamptz,
    CONSTRAINT workflow_definition_gates_decided_unless_testing
        CHECK ((decided_at IS NULL) = (state = 'Testing'))
);
COMMENT ON TABLE workflow_orchestrator_service.workflow_definition_gates IS
    'One row per version stored with spec.testGate on (none for other versions): whether its WorkflowTests let it be used by new runs that name no version. Written in the transaction that stores the version, so no gated version is ever usable untested.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_definition_gates.state IS
    'Testing (a candidate: its tests run), Passed (every test passed: usable), Failed (a test did not pass: not used by unpinned runs), Untested (no WorkflowTest tests the workflow: usable), Superseded (a newer version was stored before it was decided: never used by unpinned runs).';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_definition_gates.message IS
    'Why it was decided so: the tests that passed, or the first failing test and case with what was wrong.';
CREATE INDEX workflow_definition_gates_undecided
    ON workflow_orchestrator_service.workflow_definition_gates (created_at)
    WHERE state IN ('Testing', 'Failed');
COMMENT ON INDEX workflow_orchestrator_service.workflow_definition_gates_undecided IS
    'The versions the operator tests (again): candidates, and failed versions whose tests may change.';
