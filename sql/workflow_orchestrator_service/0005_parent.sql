-- Sub-workflows: a run started by a task of another run (workflowRef) records that run as
-- its parent, so that its end wakes the parent at once, and so that the chain of parents
-- bounds how deep sub-workflows nest.

ALTER TABLE workflow_orchestrator_service.workflow_instances
    ADD COLUMN parent_id uuid
        REFERENCES workflow_orchestrator_service.workflow_instances (id) ON DELETE SET NULL;
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.parent_id IS
    'The run whose task (workflowRef) started this one as a sub-workflow; null for other runs, or once the parent is deleted.';
CREATE INDEX workflow_instances_parent
    ON workflow_orchestrator_service.workflow_instances (parent_id) WHERE parent_id IS NOT NULL;
COMMENT ON INDEX workflow_orchestrator_service.workflow_instances_parent IS
    'A parent''s sub-workflow runs, found without scanning the others.';
