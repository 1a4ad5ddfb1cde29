-- Observability, second step: retention per table, and views answering the common questions.
--
-- Retention drops one daily partition per call (observability_service.drop_partition), so
-- the caller commits after each and holds the parent's lock only for one catalog change;
-- it sets lock_timeout first, so a busy table is skipped and retried on the next run
-- instead of queueing writers behind the DROP. The views read only this schema's tables;
-- span attribute names (plait.*) are documented in docs/observability.md.

CREATE VIEW observability_service.partitions AS
SELECT p.tab AS parent,
       c.relname AS partition_name,
       CASE WHEN c.relname ~ '_p[0-9]{8}$' THEN to_date(right(c.relname, 8), 'YYYYMMDD') END AS day,
       pg_catalog.pg_total_relation_size(c.oid) AS total_bytes
FROM (VALUES ('observability_logs'), ('observability_metrics'), ('observability_traces')) AS p (tab)
JOIN pg_catalog.pg_inherits i ON i.inhparent = format('observability_service.%I', p.tab)::regclass
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid;
COMMENT ON VIEW observability_service.partitions IS
    'Partitions of the three observability tables: the UTC day each holds (NULL for the DEFAULT partition) and its size on disk.';

CREATE FUNCTION observability_service.drop_partition(partition_name text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    parent text := substring(partition_name FROM '^(observability_(?:logs|metrics|traces))_p[0-9]{8}$');
    child regclass;
BEGIN
    IF parent IS NULL THEN
        RAISE EXCEPTION 'not a daily observability partition: %', partition_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'names look like observability_logs_p20250131';
    END IF;
    child := to_regclass(format('observability_service.%I', partition_name));
    IF child IS NULL THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_inherits
                   WHERE inhrelid = child
                     AND inhparent = format('observability_service.%I', parent)::regclass) THEN
        RAISE EXCEPTION '% is not a partition of observability_service.%', partition_name, parent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('DROP TABLE observability_service.%I', partition_name);
    RETURN true;
END
$$;
COMMENT ON FUNCTION observability_service.drop_partition(text) IS
    'Retention: drops one daily partition (e.g. observability_logs_p20250131) of the three observability tables; false if it does not exist. SECURITY DEFINER so the component role can run it; call it in its own short transaction with lock_timeout set.';
REVOKE ALL ON FUNCTION observability_service.drop_partition(text) FROM PUBLIC;

-- Span attributes are JSON; these views give them columns. Times in seconds.
CREATE VIEW observability_service.task_attempts AS
SELECT t.trace_id,
       t.span_id,
       t.parent_span_id,
       t.workflow_instance_id,
       t.attributes ->> 'plait.namespace' AS namespace,
       t.attributes ->> 'plait.instance' AS instance,
       t.attributes ->> 'plait.workflow.name' AS workflow,
       t.attributes ->> 'plait.task.name' AS task,
       (t.attributes ->> 'plait.attempt')::integer AS attempt,
       t.attributes ->> 'plait.outcome' AS outcome,
       t.attributes ->> 'plait.job.name' AS job_name,
       t.start_time,
       t.end_time,
       extract(epoch FROM t.end_time - t.start_time)::double precision AS duration_seconds,
       (t.attributes ->> 'plait.task.queue_wait_seconds')::double precision AS queue_wait_seconds,
       (t.attributes ->> 'plait.task.run_seconds')::double precision AS run_seconds,
       (t.attributes ->> 'plait.task.overhead_seconds')::double precision AS overhead_seconds,
       t.status_code,
       t.status_message
FROM observability_service.observability_traces t
WHERE t.name = 'plait.task';
COMMENT ON VIEW observability_service.task_attempts IS
    'One row per task attempt span (name plait.task) with its plait.* attributes as columns; duration = Job created to completion observed.';

CREATE VIEW observability_service.workflow_runs AS
SELECT t.trace_id,
       t.span_id,
       t.workflow_instance_id,
       t.attributes ->> 'plait.namespace' AS namespace,
       t.attributes ->> 'plait.instance' AS instance,
       t.attributes ->> 'plait.workflow.name' AS workflow,
       t.attributes ->> 'plait.outcome' AS outcome,
       t.start_time,
       t.end_time,
       extract(epoch FROM t.end_time - t.start_time)::double precision AS duration_seconds,
       t.status_code
FROM observability_service.observability_traces t
WHERE t.name = 'plait.workflow';
COMMENT ON VIEW observability_service.workflow_runs IS
    'One row per finished workflow run (root span plait.workflow), with its outcome and duration.';

CREATE VIEW observability_service.slowest_task_attempts AS
SELECT *
FROM observability_service.task_attempts
WHERE start_time > now() - interval '1 day'
ORDER BY duration_seconds DESC
LIMIT 100;
COMMENT ON VIEW observability_service.slowest_task_attempts IS
    'The 100 longest task attempts started in the last 24 hours, longest first.';

CREATE VIEW observability_service.slowest_tasks AS
SELECT namespace,
       workflow,
       task,
       count(*) AS attempts,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds) AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds) AS p95_seconds,
       max(duration_seconds) AS max_seconds,
       avg(run_seconds) AS avg_run_seconds
FROM observability_service.task_attempts
WHERE start_time > now() - interval '7 days'
GROUP BY namespace, workflow, task
ORDER BY p95_seconds DESC;
COMMENT ON VIEW observability_service.slowest_tasks IS
    'Per task of a workflow definition, over the last 7 days: attempts and duration percentiles, slowest (p95) first.';

CREATE VIEW observability_service.workflow_failure_rates AS
SELECT namespace,
       workflow,
       count(*) AS runs,
       count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE outcome = 'failed') AS failed,
       count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled,
       round(count(*) FILTER (WHERE outcome = 'failed')::numeric / count(*), 4) AS failure_rate,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds) AS p95_seconds
FROM observability_service.workflow_runs
WHERE start_time > now() - interval '7 days'
GROUP BY namespace, workflow
ORDER BY failure_rate DESC, runs DESC;
COMMENT ON VIEW observability_service.workflow_failure_rates IS
    'Per workflow definition, over runs started in the last 7 days: outcomes, failure rate (failed / runs) and p95 duration.';

CREATE VIEW observability_service.task_failure_rates AS
SELECT namespace,
       workflow,
       task,
       count(*) AS attempts,
       count(*) FILTER (WHERE outcome <> 'succeeded') AS unsuccessful,
       round(count(*) FILTER (WHERE outcome <> 'succeeded')::numeric / count(*), 4) AS failure_rate
FROM observability_service.task_attempts
WHERE start_time > now() - interval '7 days'
GROUP BY namespace, workflow, task
ORDER BY failure_rate DESC, attempts DESC;
COMMENT ON VIEW observability_service.task_failure_rates IS
    'Per task of a workflow definition, over the last 7 days: attempts and the share that did not succeed (retries included).';

CREATE VIEW observability_service.task_overhead AS
SELECT namespace,
       workflow,
       count(*) AS attempts,
       sum(queue_wait_seconds) AS queue_wait_seconds,
       sum(run_seconds) AS run_seconds,
       sum(overhead_seconds) AS overhead_seconds,
       round((sum(overhead_seconds)
              / nullif(sum(coalesce(queue_wait_seconds, 0) + coalesce(run_seconds, 0)
                           + coalesce(overhead_seconds, 0)), 0))::numeric, 4) AS overhead_share
FROM observability_service.task_attempts
WHERE start_time > now() - interval '7 days'
GROUP BY namespace, workflow
ORDER BY overhead_share DESC NULLS LAST;
COMMENT ON VIEW observability_service.task_overhead IS
    'Per workflow definition, over the last 7 days: where task time went: Kubernetes'' queue wait, the tasks'' own run time, and Plait''s overhead, with Plait''s share of the total.';

CREATE INDEX observability_traces_instance_name
    ON observability_service.observability_traces
    ((attributes ->> 'plait.namespace'), (attributes ->> 'plait.instance'), start_time)
    WHERE attributes ? 'plait.instance';
COMMENT ON INDEX observability_service.observability_traces_instance_name IS
    'Finding a run''s trace by namespace and instance name (plait traces show).';
