-- Inbound webhooks (docs/integrations.md): the Secret key that holds a type's signing
-- secret, read by plait api to verify deliveries and never mounted into a task, and the
-- generic HMAC type `webhook`.

ALTER TABLE integration_service.integration_definitions
    ADD COLUMN webhook_secret_key text
        CONSTRAINT integration_definitions_webhook_secret_key_identifier
        CHECK (webhook_secret_key ~ '^[A-Za-z0-9._-]{1,253}$');
COMMENT ON COLUMN integration_service.integration_definitions.webhook_secret_key IS
    'Key of the referenced Secret holding the signing secret of inbound webhooks (POST /v1/namespaces/{ns}/webhooks/{integration}); NULL: the type receives none. Read only by plait api, never mounted into tasks.';

UPDATE integration_service.integration_definitions
SET webhook_secret_key = 'webhookSecret', updated_at = now()
WHERE type = 'github' AND builtin;

UPDATE integration_service.integration_definitions
SET webhook_secret_key = 'signingSecret', updated_at = now()
WHERE type = 'slack' AND builtin;

INSERT INTO integration_service.integration_definitions
    (type, display_name, description, settings_schema, secret_keys, webhook_secret_key, builtin)
VALUES
    ('webhook', 'Signed webhook', 'Receives HMAC-signed HTTP deliveries as CloudEvents.',
     '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": false, "properties": {"signatureHeader": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$", "default": "X-Signature"}, "algorithm": {"enum": ["sha1", "sha256", "sha512"], "default": "sha256"}, "signaturePrefix": {"type": "string", "maxLength": 32, "default": ""}, "idHeader": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"}, "eventType": {"type": "string", "minLength": 1, "maxLength": 255, "default": "dev.plait.webhook"}}}',
     '{}', 'secret', true);
