-- Live dashboards: every new run and every change of a run's phase or result is announced
-- on the channel plait_runs (PostgreSQL NOTIFY, sent when the transaction commits), so
-- plait api pushes it to the browsers watching instead of each page polling.
-- The payload names the run: {"id", "namespace", "name", "phase"} (well under NOTIFY's
-- 8000-byte limit: a namespace is at most 63 characters, a name 253).

CREATE FUNCTION workflow_orchestrator_service.notify_run_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pg_notify('plait_runs', json_build_object(
        'id', NEW.id, 'namespace', NEW.namespace, 'name', NEW.name, 'phase', NEW.phase)::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION workflow_orchestrator_service.notify_run_change() IS
    'NOTIFY plait_runs with the run''s id, namespace, name and phase (the dashboard''s live updates).';

CREATE TRIGGER workflow_instances_notify_insert
    AFTER INSERT ON workflow_orchestrator_service.workflow_instances
    FOR EACH ROW EXECUTE FUNCTION workflow_orchestrator_service.notify_run_change();
CREATE TRIGGER workflow_instances_notify_update
    AFTER UPDATE ON workflow_orchestrator_service.workflow_instances
    FOR EACH ROW
    WHEN (OLD.phase IS DISTINCT FROM NEW.phase OR OLD.message IS DISTINCT FROM NEW.message
          OR OLD.outputs IS DISTINCT FROM NEW.outputs OR OLD.retries IS DISTINCT FROM NEW.retries)
    EXECUTE FUNCTION workflow_orchestrator_service.notify_run_change();
