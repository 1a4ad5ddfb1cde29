-- In-cluster runs of WorkflowTests: a run whose tasks are mocked (WorkflowInstance
-- spec.mocks) keeps its mocks with its row, so every advance (after a restart too) knows
-- that a mocked task starts no Job.

ALTER TABLE workflow_orchestrator_service.workflow_instances
    ADD COLUMN mocks jsonb
        CONSTRAINT workflow_instances_mocks_object CHECK (jsonb_typeof(mocks) = 'object');
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.mocks IS
    'Task name -> mock (plait.resources.test.Mock, as JSON) of a run started by a WorkflowTest: a mocked task starts no Job, its attempts end as the mock says. Null for other runs.';
