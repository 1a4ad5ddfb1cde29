-- In-cluster runs of WorkflowTests: a run is requested (Pending) by `plait test run NAME`
-- or a change of the workflow under test, and carried out by the operator, which
-- pins the workflow version it tests and keeps the coverage of its cases.

ALTER TABLE testing_framework_service.test_runs
    ADD COLUMN workflow_version integer
        CONSTRAINT test_runs_workflow_version_positive CHECK (workflow_version >= 1),
    ADD COLUMN requested_by text NOT NULL DEFAULT 'cli'
        CONSTRAINT test_runs_requested_by_known
        CHECK (requested_by IN ('cli', 'definition-change')),
    ADD COLUMN coverage jsonb NOT NULL DEFAULT '[]'
        CONSTRAINT test_runs_coverage_array CHECK (jsonb_typeof(coverage) = 'array');
COMMENT ON COLUMN testing_framework_service.test_runs.workflow_version IS
    'Version of the WorkflowDefinition the cases ran (workflow_orchestrator_service.workflow_definitions; no foreign key: another component''s schema); null until the run starts.';
COMMENT ON COLUMN testing_framework_service.test_runs.requested_by IS
    'What asked for the run: cli (plait test run NAME) or definition-change (spec.runOnDefinitionChange, a new version of the workflow).';
COMMENT ON COLUMN testing_framework_service.test_runs.coverage IS
    'What the cases exercised of the workflow, one line an aspect (tasks run, when/depends branches, retries, exit task), as plait test run prints it.';
CREATE UNIQUE INDEX test_runs_one_per_definition_change
    ON testing_framework_service.test_runs (namespace, test_name, test_version, workflow_version)
    WHERE requested_by = 'definition-change';
COMMENT ON INDEX testing_framework_service.test_runs_one_per_definition_change IS
    'A new workflow version starts one run of each test that follows it, however many replicas notice it.';
CREATE INDEX test_runs_unfinished
    ON testing_framework_service.test_runs (created_at) WHERE status IN ('Pending', 'Running');
COMMENT ON INDEX testing_framework_service.test_runs_unfinished IS
    'The runs the operator carries out, found without scanning finished ones.';
