-- Integration: the catalog of integration types (seeded here) and configured Integration
-- resources, versioned. Secrets are referenced by name, never stored.

CREATE SCHEMA integration_service;
COMMENT ON SCHEMA integration_service IS
    'Owned by the integration component; no other component reads or writes it.';
REVOKE ALL ON SCHEMA integration_service FROM PUBLIC;

CREATE FUNCTION integration_service.forbid_version_change() RETURNS trigger
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

CREATE TABLE integration_service.integration_definitions (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    type             text        NOT NULL
        CONSTRAINT integration_definitions_type_identifier CHECK (type ~ '^[a-z][a-z0-9_-]{0,62}$'),
    display_name     text        NOT NULL,
    description      text        NOT NULL DEFAULT '',
    settings_schema  jsonb       NOT NULL
        CONSTRAINT integration_definitions_settings_schema_object CHECK (jsonb_typeof(settings_schema) = 'object'),
    secret_keys      text[]      NOT NULL DEFAULT '{}',
    builtin          boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integration_definitions_one_per_type UNIQUE (type)
);
COMMENT ON TABLE integration_service.integration_definitions IS
    'Catalog of integration types: what an Integration of each type must configure. Built-in types are seeded by migrations, so adding one is a new migration.';
COMMENT ON COLUMN integration_service.integration_definitions.settings_schema IS
    'JSON Schema (draft 2020-12) of the non-secret settings an Integration of this type carries.';
COMMENT ON COLUMN integration_service.integration_definitions.secret_keys IS
    'Keys the referenced Kubernetes Secret must contain; values stay in the Secret.';

INSERT INTO integration_service.integration_definitions
    (type, display_name, description, settings_schema, secret_keys, builtin)
VALUES
    ('http', 'HTTP', 'Calls an HTTP endpoint.',
     '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["baseUrl"], "additionalProperties": false, "properties": {"baseUrl": {"type": "string", "format": "uri"}, "headers": {"type": "object", "additionalProperties": {"type": "string"}}, "timeoutSeconds": {"type": "integer", "minimum": 1}}}',
     '{}', true),
    ('slack', 'Slack', 'Posts messages to a Slack workspace.',
     '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": false, "properties": {"defaultChannel": {"type": "string"}}}',
     '{token}', true),
    ('github', 'GitHub', 'Uses the GitHub REST API (issues, statuses, dispatches).',
     '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": false, "properties": {"apiUrl": {"type": "string", "format": "uri", "default": "https://api.github.com"}, "owner": {"type": "string"}}}',
     '{token}', true),
    ('postgres', 'PostgreSQL', 'Runs SQL against a PostgreSQL database.',
     '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["host", "database"], "additionalProperties": false, "properties": {"host": {"type": "string"}, "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 5432}, "database": {"type": "string"}, "user": {"type": "string"}, "sslmode": {"enum": ["disable", "prefer", "require", "verify-ca", "verify-full"]}}}',
     '{password}', true),
    ('s3', 'S3', 'Reads and writes objects in an S3-compatible bucket.',
     '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["bucket"], "additionalProperties": false, "properties": {"bucket": {"type": "string"}, "region": {"type": "string"}, "endpoint": {"type": "string", "format": "uri"}, "prefix": {"type": "string"}}}',
     '{accessKeyId,secretAccessKey}', true);

CREATE TABLE integration_service.integration_instances (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace         text        NOT NULL
        CONSTRAINT integration_instances_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    name              text        NOT NULL
        CONSTRAINT integration_instances_name_dns_subdomain
        CHECK (name ~ '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' AND length(name) <= 253),
    version           integer     NOT NULL CONSTRAINT integration_instances_version_positive CHECK (version >= 1),
    integration_type  text        NOT NULL
        REFERENCES integration_service.integration_definitions (type),
    settings          jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT integration_instances_settings_object CHECK (jsonb_typeof(settings) = 'object'),
    secret_name       text
        CONSTRAINT integration_instances_secret_name_dns_subdomain
        CHECK (secret_name ~ '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' AND length(secret_name) <= 253),
    spec              jsonb       NOT NULL CONSTRAINT integration_instances_spec_object CHECK (jsonb_typeof(spec) = 'object'),
    spec_hash         text        NOT NULL CONSTRAINT integration_instances_spec_hash_sha256 CHECK (spec_hash ~ '^[0-9a-f]{64}$'),
    k8s_uid           uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz CONSTRAINT integration_instances_deleted_after_created CHECK (deleted_at >= created_at),
    CONSTRAINT integration_instances_one_row_per_version UNIQUE (namespace, name, version),
    CONSTRAINT integration_instances_no_secret_values
        CHECK (NOT (settings ?| ARRAY['password', 'token', 'secret', 'apiKey', 'accessKey',
                                       'secretAccessKey', 'privateKey', 'clientSecret']))
);
COMMENT ON TABLE integration_service.integration_instances IS
    'Every accepted spec of an Integration, one immutable row per version: non-secret settings and the name of the Kubernetes Secret holding credentials. Secret values are never stored here.';
COMMENT ON COLUMN integration_service.integration_instances.settings IS
    'Non-secret settings, validated against integration_definitions.settings_schema; a CHECK refuses the usual secret key names as a last line of defence.';
COMMENT ON COLUMN integration_service.integration_instances.secret_name IS
    'Name of a Secret in the same namespace; its keys are listed by integration_definitions.secret_keys.';
COMMENT ON COLUMN integration_service.integration_instances.spec_hash IS
    'sha256 (hex) of the spec as canonical JSON: detects "nothing changed" on re-apply.';
CREATE INDEX integration_instances_type ON integration_service.integration_instances (integration_type);
COMMENT ON INDEX integration_service.integration_instances_type IS
    'Serves the foreign key to the catalog and "which integrations use type X".';
CREATE TRIGGER integration_instances_immutable
    BEFORE UPDATE ON integration_service.integration_instances
    FOR EACH ROW EXECUTE FUNCTION integration_service.forbid_version_change();
