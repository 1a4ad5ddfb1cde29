-- An HTTP integration may carry a bearer token: the one secret key of type http, mounted
-- into the tasks that list the integration (an http Integration without secretRef needs none).

UPDATE integration_service.integration_definitions
SET secret_keys = '{token}', updated_at = now()
WHERE type = 'http' AND builtin;
