-- HTTP tasks (docs/integrations.md#http-tasks): allowInternal lets an Integration of the
-- types an http task can use (http, github, slack) reach loopback, link-local and other
-- internal addresses, which are refused by default.

UPDATE integration_service.integration_definitions
SET settings_schema = '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["baseUrl"], "additionalProperties": false, "properties": {"baseUrl": {"type": "string", "format": "uri"}, "headers": {"type": "object", "additionalProperties": {"type": "string"}}, "timeoutSeconds": {"type": "integer", "minimum": 1}, "allowInternal": {"type": "boolean", "default": false}}}',
    updated_at = now()
WHERE type = 'http' AND builtin;

UPDATE integration_service.integration_definitions
SET settings_schema = '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": false, "properties": {"apiUrl": {"type": "string", "format": "uri", "default": "https://api.github.com"}, "owner": {"type": "string"}, "allowInternal": {"type": "boolean", "default": false}}}',
    updated_at = now()
WHERE type = 'github' AND builtin;

UPDATE integration_service.integration_definitions
SET settings_schema = '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": false, "properties": {"apiUrl": {"type": "string", "format": "uri", "default": "https://slack.com/api"}, "defaultChannel": {"type": "string"}, "allowInternal": {"type": "boolean", "default": false}}}',
    updated_at = now()
WHERE type = 'slack' AND builtin;
