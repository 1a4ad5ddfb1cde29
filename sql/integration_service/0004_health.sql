-- Health checks (docs/integrations.md#health-checks): the last check of an Integration's
-- current version, the only columns of its row that may change after it is written; and
-- Slack's API URL as a setting (the health check's auth.test goes there).

ALTER TABLE integration_service.integration_instances
    ADD COLUMN health_checked_at timestamptz,
    ADD COLUMN healthy boolean,
    ADD COLUMN health_latency_seconds double precision
        CONSTRAINT integration_instances_health_latency_not_negative
        CHECK (health_latency_seconds >= 0),
    ADD COLUMN health_error text
        CONSTRAINT integration_instances_health_error_bounded CHECK (length(health_error) <= 512);
COMMENT ON COLUMN integration_service.integration_instances.health_checked_at IS
    'When the operator last checked the connection (spec.healthCheck); NULL: never.';
COMMENT ON COLUMN integration_service.integration_instances.healthy IS
    'Outcome of the last health check.';
COMMENT ON COLUMN integration_service.integration_instances.health_latency_seconds IS
    'How long the last health check took.';
COMMENT ON COLUMN integration_service.integration_instances.health_error IS
    'Why the last health check failed, with every secret value masked; NULL when it succeeded.';

CREATE OR REPLACE FUNCTION integration_service.forbid_version_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF (to_jsonb(NEW) - ARRAY['deleted_at', 'health_checked_at', 'healthy',
                              'health_latency_seconds', 'health_error'])
       IS DISTINCT FROM
       (to_jsonb(OLD) - ARRAY['deleted_at', 'health_checked_at', 'healthy',
                              'health_latency_seconds', 'health_error']) THEN
        RAISE EXCEPTION '%.% rows are immutable versions; only deleted_at and the health columns may change',
            TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'check_violation',
                  HINT = 'store a changed spec as a new version';
    END IF;
    RETURN NEW;
END
$$;

UPDATE integration_service.integration_definitions
SET settings_schema = '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": false, "properties": {"apiUrl": {"type": "string", "format": "uri", "default": "https://slack.com/api"}, "defaultChannel": {"type": "string"}}}',
    updated_at = now()
WHERE type = 'slack' AND builtin;
