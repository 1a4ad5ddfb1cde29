-- The run list filters by label: each run keeps its WorkflowInstance's metadata.labels,
-- recorded when the run's row is made and kept in step when they change (the operator
-- writes them again whenever it sees the object's labels differ from the row's).

ALTER TABLE workflow_orchestrator_service.workflow_instances
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT workflow_instances_labels_object CHECK (jsonb_typeof(labels) = 'object');
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.labels IS
    'The WorkflowInstance''s metadata.labels (key -> value, both strings); {} for a run without labels, or recorded before labels were kept.';
CREATE INDEX workflow_instances_labels
    ON workflow_orchestrator_service.workflow_instances USING gin (labels jsonb_path_ops);
COMMENT ON INDEX workflow_orchestrator_service.workflow_instances_labels IS
    'Runs by label: labels @> {"key": "value"} (the dashboard''s label filter). jsonb_path_ops serves containment only, not a key''s existence (labels ? key).';

-- A change of a run's labels is a change the run list shows (a filtered list gains or
-- loses the run): announce it on plait_runs like a change of phase.
DROP TRIGGER workflow_instances_notify_update
    ON workflow_orchestrator_service.workflow_instances;
CREATE TRIGGER workflow_instances_notify_update
    AFTER UPDATE ON workflow_orchestrator_service.workflow_instances
    FOR EACH ROW
    WHEN (OLD.phase IS DISTINCT FROM NEW.phase OR OLD.message IS DISTINCT FROM NEW.message
          OR OLD.outputs IS DISTINCT FROM NEW.outputs OR OLD.retries IS DISTINCT FROM NEW.retries
          OR OLD.labels IS DISTINCT FROM NEW.labels)
    EXECUTE FUNCTION workflow_orchestrator_service.notify_run_change();
