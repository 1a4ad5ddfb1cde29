-- Live dashboards: every new task attempt and every change of its state is announced on
-- the channel plait_tasks (PostgreSQL NOTIFY, sent at commit; identical payloads of one
-- transaction are sent once). The payload: {"run" (the workflow instance's id), "task",
-- "attempt", "state"}.

CREATE FUNCTION task_execution_service.notify_task_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pg_notify('plait_tasks', json_build_object(
        'run', NEW.workflow_instance_id, 'task', left(NEW.task_name, 300),
        'attempt', NEW.attempt, 'state', NEW.state)::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION task_execution_service.notify_task_change() IS
    'NOTIFY plait_tasks with the attempt''s run, task, attempt and state (the dashboard''s live updates).';

CREATE TRIGGER task_instances_notify_insert
    AFTER INSERT ON task_execution_service.task_instances
    FOR EACH ROW EXECUTE FUNCTION task_execution_service.notify_task_change();
CREATE TRIGGER task_instances_notify_update
    AFTER UPDATE OF state ON task_execution_service.task_instances
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION task_execution_service.notify_task_change();
