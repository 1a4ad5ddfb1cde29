-- Observability: Plait's own logs, metrics and trace spans. All three are append-only and
-- high volume, so they are partitioned by day on their time column: retention drops whole
-- partitions (a catalog change taking a brief lock) instead of deleting rows. None has a
-- unique key, so partitioning costs no idempotency guarantee. A DEFAULT partition catches
-- rows outside the pre-created days, so no write is ever refused for lack of a partition.

CREATE SCHEMA observability_service;
COMMENT ON SCHEMA observability_service IS
    'Owned by the observability component; no other component reads or writes it.';
REVOKE ALL ON SCHEMA observability_service FROM PUBLIC;

CREATE TABLE observability_service.observability_logs (
    time                  timestamptz NOT NULL DEFAULT now(),
    level                 text        NOT NULL
        CONSTRAINT observability_logs_level_known
        CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    component             text        NOT NULL CONSTRAINT observability_logs_component_nonempty CHECK (component <> ''),
    logger                text        NOT NULL DEFAULT '',
    message               text        NOT NULL,
    attributes            jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT observability_logs_attributes_object CHECK (jsonb_typeof(attributes) = 'object'),
    namespace             text,
    workflow_instance_id  uuid,
    task_instance_id      uuid,
    trace_id              text        CONSTRAINT observability_logs_trace_id_w3c CHECK (trace_id ~ '^[0-9a-f]{32}$'),
    span_id               text        CONSTRAINT observability_logs_span_id_w3c CHECK (span_id ~ '^[0-9a-f]{16}$')
) PARTITION BY RANGE (time);
COMMENT ON TABLE observability_service.observability_logs IS
    'Log records of Plait''s processes and tasks. Partitioned by day on time (partitions observability_logs_pYYYYMMDD plus observability_logs_default); no primary key: records are found by time, instance or trace, never updated.';
COMMENT ON COLUMN observability_service.observability_logs.component IS
    'Plait component (or "task" for a task''s own output) that wrote the record.';
COMMENT ON COLUMN observability_service.observability_logs.workflow_instance_id IS
    'Workflow instance the record is about, if any (no foreign key: another component''s schema).';
CREATE INDEX observability_logs_time_brin ON observability_service.observability_logs USING brin (time);
COMMENT ON INDEX observability_service.observability_logs_time_brin IS
    'Time-range scans inside a day''s partition; BRIN because rows arrive in time order.';
CREATE INDEX observability_logs_instance
    ON observability_service.observability_logs (workflow_instance_id, time)
    WHERE workflow_instance_id IS NOT NULL;
COMMENT ON INDEX observability_service.observability_logs_instance IS
    '"The logs of this run", in order.';
CREATE INDEX observability_logs_trace
    ON observability_service.observability_logs (trace_id) WHERE trace_id IS NOT NULL;
CREATE TABLE observability_service.observability_logs_default
    PARTITION OF observability_service.observability_logs DEFAULT;

CREATE TABLE observability_service.observability_metrics (
    time        timestamptz      NOT NULL DEFAULT now(),
    name        text             NOT NULL
        CONSTRAINT observability_metrics_name_prometheus CHECK (name ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*$'),
    kind        text             NOT NULL
        CONSTRAINT observability_metrics_kind_known CHECK (kind IN ('counter', 'gauge', 'histogram', 'summary')),
    value       double precision NOT NULL
        CONSTRAINT observability_metrics_value_finite CHECK (value NOT IN ('NaN', 'Infinity', '-Infinity')),
    labels      jsonb            NOT NULL DEFAULT '{}'
        CONSTRAINT observability_metrics_labels_object CHECK (jsonb_typeof(labels) = 'object'),
    unit        text,
    component   text             NOT NULL CONSTRAINT observability_metrics_component_nonempty CHECK (component <> '')
) PARTITION BY RANGE (time);
COMMENT ON TABLE observability_service.observability_metrics IS
    'Samples of Plait''s metrics for SQL analysis (Prometheus scrapes /metrics for alerting). Partitioned by day on time; no primary key: samples are only appended and aggregated.';
COMMENT ON COLUMN observability_service.observability_metrics.labels IS
    'Prometheus-style label set, e.g. {"namespace": "ci", "workflow": "build"}.';
CREATE INDEX observability_metrics_name_time
    ON observability_service.observability_metrics (name, time);
COMMENT ON INDEX observability_service.observability_metrics_name_time IS
    'A metric''s series over a time range, the one query these samples serve.';
CREATE TABLE observability_service.observability_metrics_default
    PARTITION OF observability_service.observability_metrics DEFAULT;

CREATE TABLE observability_service.observability_traces (
    start_time            timestamptz NOT NULL,
    end_time              timestamptz NOT NULL,
    trace_id              text        NOT NULL CONSTRAINT observability_traces_trace_id_w3c CHECK (trace_id ~ '^[0-9a-f]{32}$'),
    span_id               text        NOT NULL CONSTRAINT observability_traces_span_id_w3c CHECK (span_id ~ '^[0-9a-f]{16}$'),
    parent_span_id        text        CONSTRAINT observability_traces_parent_span_id_w3c CHECK (parent_span_id ~ '^[0-9a-f]{16}$'),
    name                  text        NOT NULL CONSTRAINT observability_traces_name_nonempty CHECK (name <> ''),
    kind                  text        NOT NULL DEFAULT 'INTERNAL'
        CONSTRAINT observability_traces_kind_known
        CHECK (kind IN ('INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER')),
    status_code           text        NOT NULL DEFAULT 'UNSET'
        CONSTRAINT observability_traces_status_known CHECK (status_code IN ('UNSET', 'OK', 'ERROR')),
    status_message        text,
    component             text        NOT NULL CONSTRAINT observability_traces_component_nonempty CHECK (component <> ''),
    attributes            jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT observability_traces_attributes_object CHECK (jsonb_typeof(attributes) = 'object'),
    events                jsonb       NOT NULL DEFAULT '[]'
        CONSTRAINT observability_traces_events_array CHECK (jsonb_typeof(events) = 'array'),
    workflow_instance_id  uuid,
    CONSTRAINT observability_traces_end_after_start CHECK (end_time >= start_time),
    CONSTRAINT observability_traces_not_own_parent CHECK (parent_span_id IS DISTINCT FROM span_id)
) PARTITION BY RANGE (start_time);
COMMENT ON TABLE observability_service.observability_traces IS
    'Finished spans (OpenTelemetry model) of workflow runs and Plait''s own operations. Partitioned by day on start_time; no unique key on (trace_id, span_id) because it would have to include start_time, and a span is written once when it ends.';
COMMENT ON COLUMN observability_service.observability_traces.events IS
    'Span events as a JSON array of {name, time, attributes}.';
CREATE INDEX observability_traces_trace
    ON observability_service.observability_traces (trace_id);
COMMENT ON INDEX observability_service.observability_traces_trace IS
    'Assembling one trace (all its spans).';
CREATE INDEX observability_traces_instance
    ON observability_service.observability_traces (workflow_instance_id, start_time)
    WHERE workflow_instance_id IS NOT NULL;
CREATE TABLE observability_service.observability_traces_default
    PARTITION OF observability_service.observability_traces DEFAULT;

-- Partition maintenance. SECURITY DEFINER so that the observability component's role, which
-- may only read and write rows, can run it on a timer: the function runs as the schema owner.
CREATE FUNCTION observability_service.ensure_partitions(days_ahead integer DEFAULT 7)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    parent record;
    day date;
    partition_name text;
    busy boolean;
    created integer := 0;
    today date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    IF days_ahead < 0 OR days_ahead > 366 THEN
        RAISE EXCEPTION 'days_ahead must be between 0 and 366, got %', days_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR parent IN
        SELECT * FROM (VALUES ('observability_logs', 'time'),
                              ('observability_metrics', 'time'),
                              ('observability_traces', 'start_time')) AS p (tab, col)
    LOOP
        FOR day IN SELECT generate_series(today - 1, today + days_ahead, interval '1 day')::date LOOP
            partition_name := format('%s_p%s', parent.tab, to_char(day, 'YYYYMMDD'));
            CONTINUE WHEN to_regclass(format('observability_service.%I', partition_name)) IS NOT NULL;
            -- Rows of that day already in the default partition would make CREATE fail;
            -- they stay there (and are purged by drop_partitions_before) and the day is skipped.
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM observability_service.%I WHERE %I >= %L AND %I < %L)',
                           parent.tab || '_default', parent.col,
                           day::timestamp AT TIME ZONE 'UTC', parent.col,
                           (day + 1)::timestamp AT TIME ZONE 'UTC')
                INTO busy;
            IF busy THEN
                RAISE NOTICE 'observability_service.%: rows for % are in the default partition; not partitioning that day',
                    parent.tab, day;
                CONTINUE;
            END IF;
            EXECUTE format('CREATE TABLE observability_service.%I PARTITION OF observability_service.%I FOR VALUES FROM (%L) TO (%L)',
                           partition_name, parent.tab,
                           day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION observability_service.ensure_partitions(integer) IS
    'Creates the daily partitions (UTC days) from yesterday to days_ahead days ahead for the three observability tables; idempotent. Returns how many it created.';

CREATE FUNCTION observability_service.drop_partitions_before(cutoff date)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    parent record;
    child record;
    dropped integer := 0;
BEGIN
    FOR parent IN
        SELECT * FROM (VALUES ('observability_logs', 'time'),
                              ('observability_metrics', 'time'),
                              ('observability_traces', 'start_time')) AS p (tab, col)
    LOOP
        FOR child IN
            SELECT c.relname
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('observability_service.%I', parent.tab)::regclass
              AND c.relname ~ ('^' || parent.tab || '_p[0-9]{8}$')
              AND to_date(right(c.relname, 8), 'YYYYMMDD') < cutoff
        LOOP
            EXECUTE format('DROP TABLE observability_service.%I', child.relname);
            dropped := dropped + 1;
        END LOOP;
        EXECUTE format('DELETE FROM observability_service.%I WHERE %I < %L',
                       parent.tab || '_default', parent.col, cutoff::timestamp AT TIME ZONE 'UTC');
    END LOOP;
    RETURN dropped;
END
$$;
COMMENT ON FUNCTION observability_service.drop_partitions_before(date) IS
    'Retention: drops every daily partition of a UTC day before cutoff (and deletes older rows that landed in the default partitions). Returns how many partitions it dropped.';

REVOKE ALL ON FUNCTION observability_service.ensure_partitions(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION observability_service.drop_partitions_before(date) FROM PUBLIC;

SELECT observability_service.ensure_partitions(7);
