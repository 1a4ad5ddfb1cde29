-- Workflow orchestrator: versioned workflow definitions, the instances that ran them,
-- event triggers that start instances and subscriptions of instances waiting for events.
-- No foreign key leaves this schema (a database per component must work); ids of rows in
-- other components' schemas are plain uuid columns.

CREATE SCHEMA workflow_orchestrator_service;
COMMENT ON SCHEMA workflow_orchestrator_service IS
    'Owned by the workflow_orchestrator component; no other component reads or writes it.';
REVOKE ALL ON SCHEMA workflow_orchestrator_service FROM PUBLIC;

-- Versions are immutable: only deleted_at (soft delete of the whole definition) may change.
CREATE FUNCTION workflow_orchestrator_service.forbid_version_change() RETURNS trigger
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

CREATE TABLE workflow_orchestrator_service.workflow_definitions (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace   text        NOT NULL
        CONSTRAINT workflow_definitions_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    name        text        NOT NULL
        CONSTRAINT workflow_definitions_name_dns_subdomain
        CHECK (name ~ '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' AND length(name) <= 253),
    version     integer     NOT NULL CONSTRAINT workflow_definitions_version_positive CHECK (version >= 1),
    spec        jsonb       NOT NULL CONSTRAINT workflow_definitions_spec_object CHECK (jsonb_typeof(spec) = 'object'),
    spec_hash   text        NOT NULL CONSTRAINT workflow_definitions_spec_hash_sha256 CHECK (spec_hash ~ '^[0-9a-f]{64}$'),
    k8s_uid     uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz CONSTRAINT workflow_definitions_deleted_after_created CHECK (deleted_at >= created_at),
    CONSTRAINT workflow_definitions_one_row_per_version UNIQUE (namespace, name, version)
);
COMMENT ON TABLE workflow_orchestrator_service.workflow_definitions IS
    'Every accepted spec of a WorkflowDefinition, one immutable row per version. A re-applied identical spec (same spec_hash as the latest live version) adds no row, so writes are idempotent; instances point at the exact version they ran.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_definitions.version IS
    'Counts from 1 per (namespace, name); the unique key (namespace, name, version) also serves "latest version" lookups by a backward index scan.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_definitions.spec_hash IS
    'sha256 (hex) of the spec as canonical JSON (sorted keys, no spaces): detects "nothing changed" without comparing documents.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_definitions.k8s_uid IS
    'metadata.uid of the custom resource that supplied this version (null when written through the API).';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_definitions.deleted_at IS
    'Soft delete: set on every version when the resource is deleted, so instances that ran it keep their history.';
CREATE TRIGGER workflow_definitions_immutable
    BEFORE UPDATE ON workflow_orchestrator_service.workflow_definitions
    FOR EACH ROW EXECUTE FUNCTION workflow_orchestrator_service.forbid_version_change();

CREATE TABLE workflow_orchestrator_service.workflow_event_triggers (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace           text        NOT NULL
        CONSTRAINT workflow_event_triggers_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    name                text        NOT NULL
        CONSTRAINT workflow_event_triggers_name_dns_subdomain
        CHECK (name ~ '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' AND length(name) <= 253),
    k8s_uid             uuid,
    event_type          text        CONSTRAINT workflow_event_triggers_event_type_nonempty CHECK (event_type <> ''),
    schedule            text        CONSTRAINT workflow_event_triggers_schedule_nonempty CHECK (schedule <> ''),
    filter              text        CONSTRAINT workflow_event_triggers_filter_nonempty CHECK (filter <> ''),
    workflow_name       text        NOT NULL,
    workflow_version    integer     CONSTRAINT workflow_event_triggers_workflow_version_positive CHECK (workflow_version >= 1),
    arguments           jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT workflow_event_triggers_arguments_object CHECK (jsonb_typeof(arguments) = 'object'),
    concurrency_policy  text        NOT NULL DEFAULT 'Allow'
        CONSTRAINT workflow_event_triggers_concurrency_policy_known
        CHECK (concurrency_policy IN ('Allow', 'Forbid', 'Replace')),
    spec                jsonb       NOT NULL
        CONSTRAINT workflow_event_triggers_spec_object CHECK (jsonb_typeof(spec) = 'object'),
    spec_hash           text        NOT NULL
        CONSTRAINT workflow_event_triggers_spec_hash_sha256 CHECK (spec_hash ~ '^[0-9a-f]{64}$'),
    enabled             boolean     NOT NULL DEFAULT true,
    rate_tokens         double precision
        CONSTRAINT workflow_event_triggers_rate_tokens_not_negative CHECK (rate_tokens >= 0),
    rate_refilled_at    timestamptz,
    last_scheduled_time timestamptz,
    last_fired_at       timestamptz,
    last_instance       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CONSTRAINT workflow_event_triggers_event_xor_schedule
        CHECK ((event_type IS NULL) <> (schedule IS NULL)),
    CONSTRAINT workflow_event_triggers_filter_needs_event
        CHECK (filter IS NULL OR event_type IS NOT NULL)
);
COMMENT ON TABLE workflow_orchestrator_service.workflow_event_triggers IS
    'Current state of each EventTrigger: which events (a type and a CEL filter) or which cron schedule starts which workflow, with what arguments. Not versioned: the full spec is kept with its hash, and the instances a trigger started record its id.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.event_type IS
    'CloudEvents type that fires the trigger; null for a cron trigger (exactly one of event_type and schedule is set).';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.schedule IS
    'Cron expression of a scheduled trigger (its time zone and catch-up policy are in spec).';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.filter IS
    'CEL expression over the event that must hold for the trigger to fire; null fires on every event of the type.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.workflow_version IS
    'Pinned definition version; null starts the latest version at the time of each event.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.arguments IS
    'Workflow argument name -> CEL expression over the event, evaluated per event.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.spec IS
    'The whole accepted spec (rate limit, catch-up policy, ...) as canonical JSON; spec_hash makes re-applying it a no-op.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.rate_tokens IS
    'Token bucket of spec.rateLimit: starts still available as of rate_refilled_at (null = a full bucket). Updated under the row lock that serializes a trigger''s starts across dispatchers.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.last_scheduled_time IS
    'Newest cron tick already handled (started, skipped or caught up); the scheduler starts from here after a restart.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.last_instance IS
    'Name of the WorkflowInstance this trigger started last (with last_fired_at).';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.enabled IS
    'False while the trigger is suspended (spec.suspend).';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_triggers.deleted_at IS
    'Soft delete: the row stays so instances it started can still name it; a live trigger of the same name may then be created again.';
CREATE UNIQUE INDEX workflow_event_triggers_live_name
    ON workflow_orchestrator_service.workflow_event_triggers (namespace, name) WHERE deleted_at IS NULL;
COMMENT ON INDEX workflow_orchestrator_service.workflow_event_triggers_live_name IS
    'One live trigger per (namespace, name): the upsert target of the operator.';
CREATE INDEX workflow_event_triggers_dispatch
    ON workflow_orchestrator_service.workflow_event_triggers (event_type)
    WHERE deleted_at IS NULL AND enabled AND event_type IS NOT NULL;
COMMENT ON INDEX workflow_orchestrator_service.workflow_event_triggers_dispatch IS
    'Dispatch looks up the enabled triggers of an incoming event''s type.';
CREATE INDEX workflow_event_triggers_scheduled
    ON workflow_orchestrator_service.workflow_event_triggers (id)
    WHERE deleted_at IS NULL AND enabled AND schedule IS NOT NULL;
COMMENT ON INDEX workflow_orchestrator_service.workflow_event_triggers_scheduled IS
    'The cron scheduler scans only the enabled scheduled triggers.';

CREATE TABLE workflow_orchestrator_service.workflow_instances (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace         text        NOT NULL
        CONSTRAINT workflow_instances_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    name              text        NOT NULL
        CONSTRAINT workflow_instances_name_dns_subdomain
        CHECK (name ~ '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' AND length(name) <= 253),
    workflow_name     text        NOT NULL,
    workflow_version  integer     NOT NULL,
    phase             text        NOT NULL DEFAULT 'Pending'
        CONSTRAINT workflow_instances_phase_known
        CHECK (phase IN ('Pending', 'Running', 'Suspended', 'Succeeded', 'Failed', 'Cancelled', 'Error')),
    inputs            jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT workflow_instances_inputs_object CHECK (jsonb_typeof(inputs) = 'object'),
    outputs           jsonb
        CONSTRAINT workflow_instances_outputs_object CHECK (jsonb_typeof(outputs) = 'object'),
    message           text,
    failure           jsonb
        CONSTRAINT workflow_instances_failure_object CHECK (jsonb_typeof(failure) = 'object'),
    retries           integer     NOT NULL DEFAULT 0
        CONSTRAINT workflow_instances_retries_not_negative CHECK (retries >= 0),
    trigger_id        uuid        REFERENCES workflow_orchestrator_service.workflow_event_triggers (id),
    event_id          uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    CONSTRAINT workflow_instances_ran_a_version
        FOREIGN KEY (namespace, workflow_name, workflow_version)
        REFERENCES workflow_orchestrator_service.workflow_definitions (namespace, name, version),
    CONSTRAINT workflow_instances_finished_iff_final
        CHECK ((finished_at IS NOT NULL) = (phase IN ('Succeeded', 'Failed', 'Cancelled', 'Error'))),
    CONSTRAINT workflow_instances_started_unless_pending
        CHECK (CASE phase
                   WHEN 'Pending' THEN started_at IS NULL
                   WHEN 'Running' THEN started_at IS NOT NULL
                   WHEN 'Suspended' THEN started_at IS NOT NULL
                   WHEN 'Succeeded' THEN started_at IS NOT NULL
                   ELSE true
               END),
    CONSTRAINT workflow_instances_finished_after_started
        CHECK (finished_at >= started_at),
    CONSTRAINT workflow_instances_event_needs_trigger
        CHECK (event_id IS NULL OR trigger_id IS NOT NULL)
);
COMMENT ON TABLE workflow_orchestrator_service.workflow_instances IS
    'One row per workflow run, the system of record of its phase; the custom resource only mirrors a bounded summary. Task-level state lives in task_execution_service.task_instances.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.id IS
    'The WorkflowInstance''s metadata.uid, or a uuid5 of (trigger, event) when a trigger starts it: a caller-chosen id makes creation idempotent (INSERT ... ON CONFLICT (id) DO NOTHING).';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.workflow_version IS
    'The exact definition version this instance runs; the foreign key (namespace, workflow_name, workflow_version) pins it.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.phase IS
    'Pending, Running, Suspended, Succeeded, Failed, Cancelled or Error (plait.workflow_orchestrator.states.WorkflowPhase lists the same values; a test keeps them equal).';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.failure IS
    'Why a finished run did not succeed: {task, attempt, exitCode, message}, as shown in the WorkflowInstance status.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.retries IS
    'How many retries of the run were carried out (spec.retry of the resource asks for more); a retry reopens a Failed run.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_instances.event_id IS
    'event_processing_service.event_instances.id of the event that started it (no foreign key: another component''s schema).';
CREATE INDEX workflow_instances_keyset
    ON workflow_orchestrator_service.workflow_instances (namespace, created_at DESC, id DESC);
COMMENT ON INDEX workflow_orchestrator_service.workflow_instances_keyset IS
    'Keyset pagination of a namespace''s instances, newest first: WHERE (created_at, id) < (cursor) ORDER BY created_at DESC, id DESC.';
CREATE INDEX workflow_instances_by_workflow
    ON workflow_orchestrator_service.workflow_instances (namespace, workflow_name, created_at DESC, id DESC);
COMMENT ON INDEX workflow_orchestrator_service.workflow_instances_by_workflow IS
    'Keyset pagination of one workflow''s runs; also serves the definition foreign key''s delete check by prefix.';
CREATE INDEX workflow_instances_active
    ON workflow_orchestrator_service.workflow_instances (created_at)
    WHERE phase IN ('Pending', 'Running', 'Suspended');
COMMENT ON INDEX workflow_orchestrator_service.workflow_instances_active IS
    'The engine resumes unfinished instances at start-up without scanning finished history.';
CREATE INDEX workflow_instances_trigger
    ON workflow_orchestrator_service.workflow_instances (trigger_id) WHERE trigger_id IS NOT NULL;

CREATE TABLE workflow_orchestrator_service.workflow_event_subscriptions (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workflow_instance_id  uuid        NOT NULL
        REFERENCES workflow_orchestrator_service.workflow_instances (id) ON DELETE CASCADE,
    task_name             text        NOT NULL,
    attempt               integer     NOT NULL DEFAULT 1
        CONSTRAINT workflow_event_subscriptions_attempt_positive CHECK (attempt >= 1),
    event_type            text        NOT NULL
        CONSTRAINT workflow_event_subscriptions_event_type_nonempty CHECK (event_type <> ''),
    event_source          text,
    subject               text,
    filter                jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT workflow_event_subscriptions_filter_object CHECK (jsonb_typeof(filter) = 'object'),
    status                text        NOT NULL DEFAULT 'Waiting'
        CONSTRAINT workflow_event_subscriptions_status_known
        CHECK (status IN ('Waiting', 'Matched', 'Cancelled', 'Expired')),
    matched_event_id      uuid,
    outputs               jsonb
        CONSTRAINT workflow_event_subscriptions_outputs_object CHECK (jsonb_typeof(outputs) = 'object'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz,
    resolved_at           timestamptz,
    CONSTRAINT workflow_event_subscriptions_one_per_attempt UNIQUE (workflow_instance_id, task_name, attempt),
    CONSTRAINT workflow_event_subscriptions_matched_has_event
        CHECK ((status = 'Matched') = (matched_event_id IS NOT NULL)),
    CONSTRAINT workflow_event_subscriptions_matched_has_outputs
        CHECK ((status = 'Matched') = (outputs IS NOT NULL)),
    CONSTRAINT workflow_event_subscriptions_resolved_iff_not_waiting
        CHECK ((status = 'Waiting') = (resolved_at IS NULL))
);
COMMENT ON TABLE workflow_orchestrator_service.workflow_event_subscriptions IS
    'A running instance waiting for an event ("wait for event" task): one row per task attempt, so a retried subscribe is idempotent.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_subscriptions.subject IS
    'Reserved prefilter: an exact CloudEvents subject the correlation requires (null matches any subject). Not filled yet: every waiting subscription of the event''s type is evaluated with its correlation.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_subscriptions.filter IS
    '{"correlation": CEL text, "bindings": {"params": ..., "tasks": ..., "workflow": ...}}: the expression and the values it reads, frozen when the task started waiting.';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_subscriptions.matched_event_id IS
    'event_processing_service.event_instances.id that satisfied it (no foreign key: another component''s schema).';
COMMENT ON COLUMN workflow_orchestrator_service.workflow_event_subscriptions.outputs IS
    'The task''s outputs taken from the matched event''s data, stored with the match so that recording the task attempt can be repeated after a crash.';
CREATE INDEX workflow_event_subscriptions_waiting
    ON workflow_orchestrator_service.workflow_event_subscriptions (event_type, subject)
    WHERE status = 'Waiting';
COMMENT ON INDEX workflow_orchestrator_service.workflow_event_subscriptions_waiting IS
    'Matching an incoming event looks only at waiting subscriptions of its type (and subject).';
CREATE INDEX workflow_event_subscriptions_expiry
    ON workflow_orchestrator_service.workflow_event_subscriptions (expires_at)
    WHERE status = 'Waiting' AND expires_at IS NOT NULL;
COMMENT ON INDEX workflow_orchestrator_service.workflow_event_subscriptions_expiry IS
    'The expiry timer finds the next waiting subscription to time out.';
CREATE INDEX workflow_event_subscriptions_matched_event
    ON workflow_orchestrator_service.workflow_event_subscriptions (matched_event_id)
    WHERE matched_event_id IS NOT NULL;
COMMENT ON INDEX workflow_orchestrator_service.workflow_event_subscriptions_matched_event IS
    'A redelivered event finds the subscriptions it already matched (to finish recording them).';
