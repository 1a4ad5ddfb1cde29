-- Auth: namespace-limited role grants, API tokens and dashboard sessions; the permissions
-- the API's routes declare, and the built-in publisher role.
--
-- Tokens and sessions are stored only as an HMAC-SHA-256 of the secret under a server key
-- (never the secret), so a copy of the database lets nobody sign in.

INSERT INTO auth_service.permissions (name, description) VALUES
    ('deadletters:write', 'Replay, purge and delete dead letters.'),
    ('tokens:own', 'Create, list and revoke one''s own API tokens.'),
    ('auth:read', 'List and read users, roles and everyone''s tokens.'),
    ('auth:write', 'Create and disable users, define roles and grants, issue and revoke tokens.');

UPDATE auth_service.roles
   SET permissions = permissions || '{tokens:own}', updated_at = now()
 WHERE name = 'viewer';
UPDATE auth_service.roles
   SET permissions = permissions || '{deadletters:write,tokens:own}', updated_at = now()
 WHERE name = 'editor';
INSERT INTO auth_service.roles (name, description, permissions, builtin) VALUES
    ('publisher', 'Publish events (for senders: services, task pods, webhooks).',
     '{events:publish,tokens:own}', true);

CREATE TABLE auth_service.role_grants (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid        NOT NULL REFERENCES auth_service.users (id) ON DELETE CASCADE,
    role        text        NOT NULL REFERENCES auth_service.roles (name)
                            ON UPDATE CASCADE ON DELETE RESTRICT,
    namespace   text        NOT NULL CONSTRAINT role_grants_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT role_grants_one_per_user_role_namespace UNIQUE (user_id, role, namespace)
);
COMMENT ON TABLE auth_service.role_grants IS
    'A role held in one namespace only (users.roles are held everywhere): editor in shop, say.';

CREATE TABLE auth_service.api_tokens (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid        NOT NULL REFERENCES auth_service.users (id) ON DELETE CASCADE,
    name            text        NOT NULL CONSTRAINT api_tokens_name_length
        CHECK (length(name) BETWEEN 1 AND 100),
    kind            text        NOT NULL CONSTRAINT api_tokens_kind
        CHECK (kind IN ('personal', 'service')),
    token_hash      bytea       NOT NULL CONSTRAINT api_tokens_hash_sha256
        CHECK (octet_length(token_hash) = 32),
    display_prefix  text        NOT NULL,
    scopes          text[],
    expires_at      timestamptz,
    last_used_at    timestamptz,
    last_used_from  text,
    revoked_at      timestamptz,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_tokens_one_per_hash UNIQUE (token_hash),
    CONSTRAINT api_tokens_scopes_no_nulls CHECK (array_position(scopes, NULL) IS NULL)
);
COMMENT ON TABLE auth_service.api_tokens IS
    'Personal access tokens and service tokens. Only an HMAC-SHA-256 of the token under the server key is kept; the token itself is shown once, when created.';
COMMENT ON COLUMN auth_service.api_tokens.display_prefix IS
    'The first characters of the token (plait_pat_AbCd...), enough to recognise it in a list, too few to use it.';
COMMENT ON COLUMN auth_service.api_tokens.scopes IS
    'Permissions the token may use, each within its owner''s; NULL: whatever the owner holds at the time of each request.';
CREATE INDEX api_tokens_by_user ON auth_service.api_tokens (user_id, created_at DESC, id DESC);

CREATE TABLE auth_service.sessions (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid        NOT NULL REFERENCES auth_service.users (id) ON DELETE CASCADE,
    secret_hash      bytea       NOT NULL CONSTRAINT sessions_hash_sha256
        CHECK (octet_length(secret_hash) = 32),
    method           text        NOT NULL CONSTRAINT sessions_method
        CHECK (method IN ('password', 'oidc')),
    client_address   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    refreshed_at     timestamptz NOT NULL DEFAULT now(),
    idle_expires_at  timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    revoked_at       timestamptz,
    CONSTRAINT sessions_one_per_hash UNIQUE (secret_hash),
    CONSTRAINT sessions_idle_within_absolute CHECK (idle_expires_at <= expires_at)
);
COMMENT ON TABLE auth_service.sessions IS
    'Dashboard sign-ins: each request refreshes idle_expires_at, never past expires_at (the absolute limit). Only an HMAC of the cookie is kept.';
CREATE INDEX sessions_by_user ON auth_service.sessions (user_id);
CREATE INDEX sessions_expired ON auth_service.sessions (expires_at);
COMMENT ON INDEX auth_service.sessions_expired IS 'Deleting ended sessions in expiry order.';
