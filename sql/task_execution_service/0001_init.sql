-- Task execution: versioned task definitions and one row per task attempt (one Kubernetes
-- Job each). No foreign key leaves this schema: workflow_instance_id is a plain uuid.

CREATE SCHEMA task_execution_service;
COMMENT ON SCHEMA task_execution_service IS
    'Owned by the task_execution component; no other component reads or writes it.';
REVOKE ALL ON SCHEMA task_execution_service FROM PUBLIC;

CREATE FUNCTION task_execution_service.forbid_version_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF (to_jsonb(NEW) - 'deleted_at') IS DISTINCT FROM (to_jsonb(OLD) - 'deleted_at') THEN
        RAISE EXCEPTION '%.% rows are immutable versions; only deleted_at may change',
            TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'check_violation',
                  HINT = 'store a changed spec as a new version';
    END IF;
    RETURN NEW;
END
$$;

CREATE TABLE task_execution_service.task_definitions (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace   text        NOT NULL
        CONSTRAINT task_definitions_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    name        text        NOT NULL
        CONSTRAINT task_definitions_name_dns_subdomain
        CHECK (name ~ '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' AND length(name) <= 253),
    version     integer     NOT NULL CONSTRAINT task_definitions_version_positive CHECK (version >= 1),
    spec        jsonb       NOT NULL CONSTRAINT task_definitions_spec_object CHECK (jsonb_typeof(spec) = 'object'),
    spec_hash   text        NOT NULL CONSTRAINT task_definitions_spec_hash_sha256 CHECK (spec_hash ~ '^[0-9a-f]{64}$'),
    k8s_uid     uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz CONSTRAINT task_definitions_deleted_after_created CHECK (deleted_at >= created_at),
    CONSTRAINT task_definitions_one_row_per_version UNIQUE (namespace, name, version)
);
COMMENT ON TABLE task_execution_service.task_definitions IS
    'Every accepted spec of a TaskDefinition (image, command, inputs, timeout, retries), one immutable row per version; identical re-applies add nothing.';
COMMENT ON COLUMN task_execution_service.task_definitions.spec_hash IS
    'sha256 (hex) of the spec as canonical JSON: detects "nothing changed" on re-apply.';
CREATE TRIGGER task_definitions_immutable
    BEFORE UPDATE ON task_execution_service.task_definitions
    FOR EACH ROW EXECUTE FUNCTION task_execution_service.forbid_version_change();

CREATE TABLE task_execution_service.task_instances (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace             text        NOT NULL
        CONSTRAINT task_instances_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    workflow_instance_id  uuid        NOT NULL,
    task_name             text        NOT NULL CONSTRAINT task_instances_task_name_nonempty CHECK (task_name <> ''),
    attempt               integer     NOT NULL CONSTRAINT task_instances_attempt_positive CHECK (attempt >= 1),
    job_name              text        NOT NULL
        CONSTRAINT task_instances_job_name_dns_label
        CHECK (job_name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(job_name) <= 63),
    definition_name       text,
    definition_version    integer,
    state                 text        NOT NULL DEFAULT 'Pending'
        CONSTRAINT task_instances_state_known
        CHECK (state IN ('Pending', 'Running', 'Waiting', 'Succeeded', 'Failed', 'Skipped', 'Cancelled', 'TimedOut')),
    inputs                jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT task_instances_inputs_object CHECK (jsonb_typeof(inputs) = 'object'),
    outputs               jsonb
        CONSTRAINT task_instances_outputs_object CHECK (jsonb_typeof(outputs) = 'object'),
    exit_code             integer,
    message               text,
    trace_id              text        CONSTRAINT task_instances_trace_id_w3c CHECK (trace_id ~ '^[0-9a-f]{32}$'),
    span_id               text        CONSTRAINT task_instances_span_id_w3c CHECK (span_id ~ '^[0-9a-f]{16}$'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    superseded_at         timestamptz,
    CONSTRAINT task_instances_one_row_per_attempt UNIQUE (workflow_instance_id, task_name, attempt),
    CONSTRAINT task_instances_one_row_per_job UNIQUE (job_name),
    CONSTRAINT task_instances_ran_a_version
        FOREIGN KEY (namespace, definition_name, definition_version)
        REFERENCES task_execution_service.task_definitions (namespace, name, version),
    CONSTRAINT task_instances_definition_name_and_version
        CHECK ((definition_name IS NULL) = (definition_version IS NULL)),
    CONSTRAINT task_instances_finished_iff_final
        CHECK ((finished_at IS NOT NULL)
               = (state IN ('Succeeded', 'Failed', 'Skipped', 'Cancelled', 'TimedOut'))),
    CONSTRAINT task_instances_not_started_yet
        CHECK (state NOT IN ('Pending', 'Skipped') OR started_at IS NULL),
    CONSTRAINT task_instances_started_when_running
        CHECK (state NOT IN ('Running', 'Waiting', 'Succeeded') OR started_at IS NOT NULL),
    CONSTRAINT task_instances_finished_after_started CHECK (finished_at >= started_at),
    CONSTRAINT task_instances_success_exits_zero
        CHECK (state <> 'Succeeded' OR coalesce(exit_code, 0) = 0),
    CONSTRAINT task_instances_superseded_when_final
        CHECK (superseded_at IS NULL OR finished_at IS NOT NULL)
);
COMMENT ON COLUMN task_execution_service.task_instances.superseded_at IS
    'Set when a retry of the run reopened this unsuccessful attempt''s task: the row stays as history, the engine plans from the attempts after it.';
COMMENT ON TABLE task_execution_service.task_instances IS
    'One row per task attempt, each run as one Kubernetes Job; the unique keys make a replayed "start attempt" a no-op, so two operator replicas never run an attempt twice. High volume: retention deletes old rows in small batches by created_at (BRIN index) rather than partitioning, because both unique keys must hold across all time.';
COMMENT ON COLUMN task_execution_service.task_instances.workflow_instance_id IS
    'workflow_orchestrator_service.workflow_instances.id (no foreign key: another component''s schema).';
COMMENT ON COLUMN task_execution_service.task_instances.attempt IS
    'Counts from 1; Plait retries by creating attempt n+1 (Jobs run with backoffLimit 0), so every attempt is visible.';
COMMENT ON COLUMN task_execution_service.task_instances.job_name IS
    'Deterministic Kubernetes Job name derived from (instance, task, attempt); unique, so a Job maps to exactly one attempt.';
COMMENT ON COLUMN task_execution_service.task_instances.definition_name IS
    'TaskDefinition used, with definition_version; both null for a task declared inline in the workflow.';
COMMENT ON COLUMN task_execution_service.task_instances.state IS
    'Pending, Running, Waiting (for an event), Succeeded, Failed, Skipped, Cancelled or TimedOut (plait.task_execution.states.TaskState).';
COMMENT ON COLUMN task_execution_service.task_instances.outputs IS
    'JSON object the task wrote to its termination message (at most 4 KiB).';
COMMENT ON COLUMN task_execution_service.task_instances.trace_id IS
    'W3C trace id of the attempt, to join with observability_service.observability_traces.';
CREATE INDEX task_instances_keyset
    ON task_execution_service.task_instances (namespace, created_at DESC, id DESC);
COMMENT ON INDEX task_execution_service.task_instances_keyset IS
    'Keyset pagination of a namespace''s task attempts, newest first.';
CREATE INDEX task_instances_active
    ON task_execution_service.task_instances (created_at)
    WHERE state IN ('Pending', 'Running', 'Waiting');
COMMENT ON INDEX task_execution_service.task_instances_active IS
    'Reconciliation after a restart visits only unfinished attempts.';
CREATE INDEX task_instances_created_brin
    ON task_execution_service.task_instances USING brin (created_at);
COMMENT ON INDEX task_execution_service.task_instances_created_brin IS
    'Retention: rows arrive in created_at order, so a tiny BRIN index finds the oldest blocks for batched deletes.';
CREATE INDEX task_instances_definition
    ON task_execution_service.task_instances (namespace, definition_name, definition_version)
    WHERE definition_name IS NOT NULL;
