-- Artifacts: files a task attempt stores in its workflow's artifact repository (an s3
-- Integration), larger than the 4 KiB termination message that carries its outputs. A row
-- is written before the attempt's Job, with the object key the attempt may upload to, so
-- no object is ever stored without its row: retention finds every object to delete here,
-- an unsuccessful attempt's partial upload included.

CREATE TABLE task_execution_service.task_artifacts (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace             text        NOT NULL
        CONSTRAINT task_artifacts_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    workflow_instance_id  uuid        NOT NULL,
    task_name             text        NOT NULL CONSTRAINT task_artifacts_task_name_nonempty CHECK (task_name <> ''),
    attempt               integer     NOT NULL CONSTRAINT task_artifacts_attempt_positive CHECK (attempt >= 1),
    name                  text        NOT NULL
        CONSTRAINT task_artifacts_name_identifier CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]*$'),
    integration_name      text        NOT NULL,
    bucket                text        NOT NULL,
    object_key            text        NOT NULL CONSTRAINT task_artifacts_object_key_nonempty CHECK (object_key <> ''),
    max_bytes             bigint      NOT NULL CONSTRAINT task_artifacts_max_bytes_nonnegative CHECK (max_bytes >= 0),
    size_bytes            bigint      CONSTRAINT task_artifacts_size_within_limit CHECK (size_bytes BETWEEN 0 AND max_bytes),
    created_at            timestamptz NOT NULL DEFAULT now(),
    stored_at             timestamptz,
    deleted_at            timestamptz,
    CONSTRAINT task_artifacts_one_per_attempt UNIQUE (workflow_instance_id, task_name, attempt, name),
    CONSTRAINT task_artifacts_size_when_stored CHECK ((stored_at IS NULL) = (size_bytes IS NULL))
);
COMMENT ON TABLE task_execution_service.task_artifacts IS
    'Every output artifact of a task attempt: where its object is (the Integration, bucket and key), its limit, and, once the attempt succeeded and the object was checked, its size. Retention deletes the objects of old rows and sets deleted_at.';
COMMENT ON COLUMN task_execution_service.task_artifacts.workflow_instance_id IS
    'workflow_orchestrator_service.workflow_instances.id (no foreign key: another component''s schema).';
COMMENT ON COLUMN task_execution_service.task_artifacts.integration_name IS
    'The workflow''s artifactRepository Integration (of type s3) in namespace, when the attempt started.';
COMMENT ON COLUMN task_execution_service.task_artifacts.object_key IS
    '<prefix><namespace>/<workflow instance uid>/<task>/<attempt>/<name>: one object per attempt and artifact, never overwritten by another attempt.';
COMMENT ON COLUMN task_execution_service.task_artifacts.max_bytes IS
    'The artifact''s size limit (its maxBytes, else the default): plait-artifacts refuses a larger file before uploading, and the operator checks the stored object again.';
COMMENT ON COLUMN task_execution_service.task_artifacts.size_bytes IS
    'Size of the stored object, checked by the operator when the attempt succeeded (null until then, and for an attempt that did not succeed).';
COMMENT ON COLUMN task_execution_service.task_artifacts.stored_at IS
    'When the operator found the object stored and within its limit: only then do downstream tasks read it.';
COMMENT ON COLUMN task_execution_service.task_artifacts.deleted_at IS
    'When the object was deleted (retention, or an object over its limit); the row stays as history.';
CREATE INDEX task_artifacts_to_delete
    ON task_execution_service.task_artifacts (created_at)
    WHERE deleted_at IS NULL;
COMMENT ON INDEX task_execution_service.task_artifacts_to_delete IS
    'Retention visits only objects not deleted yet, oldest first.';
