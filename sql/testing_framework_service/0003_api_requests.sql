-- Runs of WorkflowTests requested over the API (`POST .../workflowtests/{name}/runs`, the
-- dashboard's Run button): requested_by 'api'.

ALTER TABLE testing_framework_service.test_runs
    DROP CONSTRAINT test_runs_requested_by_known,
    ADD CONSTRAINT test_runs_requested_by_known
        CHECK (requested_by IN ('cli', 'definition-change', 'api'));
COMMENT ON COLUMN testing_framework_service.test_runs.requested_by IS
    'What asked for the run: cli (plait test run NAME), definition-change (spec.runOnDefinitionChange, a new version of the workflow) or api (plait api: its REST route or the dashboard).';
