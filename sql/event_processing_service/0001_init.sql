-- Event processing: event definitions (versioned), received CloudEvents, per-key ordered
-- sequences, the dispatch queue and the dead-letter queue. No foreign key leaves this schema.

CREATE SCHEMA event_processing_service;
COMMENT ON SCHEMA event_processing_service IS
    'Owned by the event_processing component; no other component reads or writes it.';
REVOKE ALL ON SCHEMA event_processing_service FROM PUBLIC;

CREATE FUNCTION event_processing_service.forbid_version_change() RETURNS trigger
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

CREATE TABLE event_processing_service.event_definitions (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace   text        NOT NULL
        CONSTRAINT event_definitions_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    name        text        NOT NULL
        CONSTRAINT event_definitions_name_dns_subdomain
        CHECK (name ~ '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' AND length(name) <= 253),
    version     integer     NOT NULL CONSTRAINT event_definitions_version_positive CHECK (version >= 1),
    event_type  text        NOT NULL CONSTRAINT event_definitions_event_type_nonempty CHECK (event_type <> ''),
    spec        jsonb       NOT NULL CONSTRAINT event_definitions_spec_object CHECK (jsonb_typeof(spec) = 'object'),
    spec_hash   text        NOT NULL CONSTRAINT event_definitions_spec_hash_sha256 CHECK (spec_hash ~ '^[0-9a-f]{64}$'),
    k8s_uid     uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz CONSTRAINT event_definitions_deleted_after_created CHECK (deleted_at >= created_at),
    CONSTRAINT event_definitions_one_row_per_version UNIQUE (namespace, name, version)
);
COMMENT ON TABLE event_processing_service.event_definitions IS
    'Every accepted spec of an EventDefinition (a CloudEvents type and the JSON Schema of its data), one immutable row per version; identical re-applies add nothing.';
COMMENT ON COLUMN event_processing_service.event_definitions.event_type IS
    'The CloudEvents type this definition describes, copied out of the spec so ingestion can find the schema by type.';
COMMENT ON COLUMN event_processing_service.event_definitions.spec_hash IS
    'sha256 (hex) of the spec as canonical JSON: detects "nothing changed" on re-apply.';
CREATE INDEX event_definitions_by_type
    ON event_processing_service.event_definitions (event_type, namespace) WHERE deleted_at IS NULL;
CREATE TRIGGER event_definitions_immutable
    BEFORE UPDATE ON event_processing_service.event_definitions
    FOR EACH ROW EXECUTE FUNCTION event_processing_service.forbid_version_change();

CREATE TABLE event_processing_service.event_sequences (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace      text        NOT NULL
        CONSTRAINT event_sequences_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    event_type     text        NOT NULL CONSTRAINT event_sequences_event_type_nonempty CHECK (event_type <> ''),
    partition_key  text        NOT NULL CONSTRAINT event_sequences_partition_key_nonempty CHECK (partition_key <> ''),
    last_position  bigint      NOT NULL DEFAULT 0 CONSTRAINT event_sequences_position_not_negative CHECK (last_position >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_sequences_one_per_key UNIQUE (namespace, event_type, partition_key)
);
COMMENT ON TABLE event_processing_service.event_sequences IS
    'One ordered series per (namespace, CloudEvents type, partition key): the counter that gives each keyed event its position. The key is the CloudEvents partitionkey extension, else the subject; events with neither are not sequenced, so they never contend on one counter row.';
COMMENT ON COLUMN event_processing_service.event_sequences.last_position IS
    'Position of the newest event in the series; incremented in the transaction that stores the event, so positions have no gaps and duplicates do not consume one.';

CREATE TABLE event_processing_service.event_instances (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace          text        NOT NULL
        CONSTRAINT event_instances_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    source             text        NOT NULL CONSTRAINT event_instances_source_nonempty CHECK (source <> ''),
    event_id           text        NOT NULL CONSTRAINT event_instances_event_id_nonempty CHECK (event_id <> ''),
    type               text        NOT NULL CONSTRAINT event_instances_type_nonempty CHECK (type <> ''),
    spec_version       text        NOT NULL DEFAULT '1.0' CONSTRAINT event_instances_spec_version_1 CHECK (spec_version = '1.0'),
    subject            text,
    time               timestamptz,
    data_content_type  text,
    data_schema        text,
    data               jsonb,
    data_base64        text,
    extensions         jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT event_instances_extensions_object CHECK (jsonb_typeof(extensions) = 'object'),
    partition_key      text,
    sequence_id        uuid        REFERENCES event_processing_service.event_sequences (id),
    sequence_position  bigint      CONSTRAINT event_instances_position_positive CHECK (sequence_position >= 1),
    received_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_instances_one_per_source_id UNIQUE (namespace, source, event_id),
    CONSTRAINT event_instances_one_per_position UNIQUE (sequence_id, sequence_position),
    CONSTRAINT event_instances_sequenced_iff_keyed
        CHECK ((partition_key IS NULL) = (sequence_id IS NULL)
               AND (sequence_id IS NULL) = (sequence_position IS NULL)),
    CONSTRAINT event_instances_one_data_form CHECK (data IS NULL OR data_base64 IS NULL)
);
COMMENT ON TABLE event_processing_service.event_instances IS
    'Every accepted CloudEvent, stored before it is acknowledged. High volume: retention deletes old rows in small batches by received_at (BRIN index) instead of time partitioning, because the deduplication key (namespace, source, event_id) must be unique across all time and a unique key on a partitioned table would have to include the partition column.';
COMMENT ON COLUMN event_processing_service.event_instances.event_id IS
    'The CloudEvents id; with source it identifies the event within its namespace, so a redelivered event is recognised and stored once (the same event sent to two namespaces is two events).';
COMMENT ON COLUMN event_processing_service.event_instances.data IS
    'Event data when it is JSON; data_base64 holds any other payload (never both).';
COMMENT ON COLUMN event_processing_service.event_instances.extensions IS
    'CloudEvents extension attributes other than partitionkey (that one is partition_key).';
COMMENT ON COLUMN event_processing_service.event_instances.partition_key IS
    'The partitionkey extension, else the subject: events of one type with the same key are dispatched in sequence_position order.';
COMMENT ON COLUMN event_processing_service.event_instances.sequence_position IS
    'Position within event_sequences(sequence_id), from 1, without gaps.';
CREATE INDEX event_instances_keyset
    ON event_processing_service.event_instances (namespace, received_at DESC, id DESC);
COMMENT ON INDEX event_processing_service.event_instances_keyset IS
    'Keyset pagination of a namespace''s events, newest first.';
CREATE INDEX event_instances_received_brin
    ON event_processing_service.event_instances USING brin (received_at);
COMMENT ON INDEX event_processing_service.event_instances_received_brin IS
    'Retention: rows arrive in received_at order, so a tiny BRIN index finds the oldest blocks for batched deletes.';

CREATE TABLE event_processing_service.event_queue_state (
    event_instance_id  uuid        PRIMARY KEY
        REFERENCES event_processing_service.event_instances (id) ON DELETE CASCADE,
    state              text        NOT NULL DEFAULT 'Pending'
        CONSTRAINT event_queue_state_state_known
        CHECK (state IN ('Pending', 'Leased', 'Done', 'DeadLettered')),
    attempts           integer     NOT NULL DEFAULT 0 CONSTRAINT event_queue_state_attempts_not_negative CHECK (attempts >= 0),
    max_attempts       integer     NOT NULL DEFAULT 5 CONSTRAINT event_queue_state_max_attempts_positive CHECK (max_attempts >= 1),
    available_at       timestamptz NOT NULL DEFAULT now(),
    leased_by          text,
    lease_expires_at   timestamptz,
    last_error         text,
    sequence_id        uuid,
    sequence_position  bigint,
    enqueued_at        timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_queue_state_attempts_within_max CHECK (attempts <= max_attempts),
    CONSTRAINT event_queue_state_lease_iff_leased
        CHECK ((state = 'Leased') = (leased_by IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT event_queue_state_sequenced_together
        CHECK ((sequence_id IS NULL) = (sequence_position IS NULL))
);
COMMENT ON TABLE event_processing_service.event_queue_state IS
    'Dispatch state of each stored event (a transactional outbox): enqueued in the same transaction as the event, leased with FOR UPDATE SKIP LOCKED so any number of API replicas dispatch each event once at a time. Rows go with their event (ON DELETE CASCADE) under event retention.';
COMMENT ON COLUMN event_processing_service.event_queue_state.state IS
    'Pending, Leased, Done or DeadLettered (plait.event_processing.states.QueueState).';
COMMENT ON COLUMN event_processing_service.event_queue_state.lease_expires_at IS
    'A Leased row whose lease expired is taken over by another worker: a crashed dispatcher loses no event.';
COMMENT ON COLUMN event_processing_service.event_queue_state.available_at IS
    'Earliest next attempt; pushed back with each failure (backoff).';
CREATE INDEX event_queue_state_ready
    ON event_processing_service.event_queue_state (available_at) WHERE state = 'Pending';
COMMENT ON INDEX event_processing_service.event_queue_state_ready IS
    'The dequeue query reads only pending rows, oldest available first; done rows cost nothing.';
CREATE INDEX event_queue_state_leases
    ON event_processing_service.event_queue_state (lease_expires_at) WHERE state = 'Leased';
COMMENT ON COLUMN event_processing_service.event_queue_state.sequence_position IS
    'Copy of the event''s position in its sequence (null when unkeyed): an event is leased only when no earlier event of its sequence is Pending or Leased, so one key is dispatched in order while different keys go in parallel.';
CREATE INDEX event_queue_state_unfinished_in_sequence
    ON event_processing_service.event_queue_state (sequence_id, sequence_position)
    WHERE state IN ('Pending', 'Leased') AND sequence_id IS NOT NULL;
COMMENT ON INDEX event_processing_service.event_queue_state_unfinished_in_sequence IS
    'Head-of-line check of the dequeue query: is an earlier event of this sequence still unfinished?';


CREATE TABLE event_processing_service.dead_letter_queue (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace          text        NOT NULL
        CONSTRAINT dead_letter_queue_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    event_instance_id  uuid        REFERENCES event_processing_service.event_instances (id) ON DELETE SET NULL,
    source             text        NOT NULL,
    event_id           text        NOT NULL,
    type               text        NOT NULL,
    payload            jsonb       NOT NULL CONSTRAINT dead_letter_queue_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    reason             text        NOT NULL CONSTRAINT dead_letter_queue_reason_nonempty CHECK (reason <> ''),
    attempts           integer     NOT NULL DEFAULT 0 CONSTRAINT dead_letter_queue_attempts_not_negative CHECK (attempts >= 0),
    status             text        NOT NULL DEFAULT 'Open'
        CONSTRAINT dead_letter_queue_status_known CHECK (status IN ('Open', 'Replayed', 'Discarded')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    resolved_at        timestamptz,
    CONSTRAINT dead_letter_queue_resolved_iff_closed CHECK ((status = 'Open') = (resolved_at IS NULL))
);
COMMENT ON TABLE event_processing_service.dead_letter_queue IS
    'Events whose dispatch failed for good, with the full CloudEvent (payload) so they can be inspected and replayed even after event retention removed the original row (event_instance_id then becomes null).';
COMMENT ON COLUMN event_processing_service.dead_letter_queue.payload IS
    'The event in CloudEvents JSON (structured) form.';
COMMENT ON COLUMN event_processing_service.dead_letter_queue.status IS
    'Open, Replayed or Discarded (plait.event_processing.states.DeadLetterStatus).';
CREATE UNIQUE INDEX dead_letter_queue_one_open
    ON event_processing_service.dead_letter_queue (namespace, source, event_id) WHERE status = 'Open';
COMMENT ON INDEX event_processing_service.dead_letter_queue_one_open IS
    'At most one open dead letter per event: dead-lettering twice is a no-op, yet a replayed event that fails again gets a new row.';
CREATE INDEX dead_letter_queue_keyset
    ON event_processing_service.dead_letter_queue (namespace, created_at DESC, id DESC);
CREATE INDEX dead_letter_queue_event
    ON event_processing_service.dead_letter_queue (event_instance_id) WHERE event_instance_id IS NOT NULL;
COMMENT ON INDEX event_processing_service.dead_letter_queue_event IS
    'Serves ON DELETE SET NULL when retention deletes events.';
