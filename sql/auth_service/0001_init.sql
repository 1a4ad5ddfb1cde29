-- Auth: users, roles and permissions. The seed gives no join tables, so a user's roles and
-- a role's permissions are arrays of names (checked by the auth component, indexed by GIN).

CREATE SCHEMA auth_service;
COMMENT ON SCHEMA auth_service IS
    'Owned by the auth component; no other component reads or writes it.';
REVOKE ALL ON SCHEMA auth_service FROM PUBLIC;

CREATE TABLE auth_service.permissions (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text        NOT NULL
        CONSTRAINT permissions_name_resource_action CHECK (name ~ '^[a-z][a-z_]*:([a-z][a-z_]*|\*)$'),
    description  text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT permissions_one_per_name UNIQUE (name)
);
COMMENT ON TABLE auth_service.permissions IS
    'The actions Plait can authorise, named resource:action (e.g. workflows:write); seeded by migrations because code checks for them by name.';

INSERT INTO auth_service.permissions (name, description) VALUES
    ('workflows:read', 'List and read workflow definitions.'),
    ('workflows:write', 'Create, change and delete workflow definitions.'),
    ('instances:read', 'List and read workflow and task instances.'),
    ('instances:write', 'Start, suspend, resume and cancel workflow instances.'),
    ('events:publish', 'Send events to the ingestion endpoint.'),
    ('events:read', 'List and read events and dead letters.'),
    ('integrations:read', 'List and read integrations.'),
    ('integrations:write', 'Create, change and delete integrations.'),
    ('tests:run', 'Run workflow tests.'),
    ('admin:*', 'Everything, including users and roles.');

CREATE TABLE auth_service.roles (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text        NOT NULL CONSTRAINT roles_name_identifier CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    description  text        NOT NULL DEFAULT '',
    permissions  text[]      NOT NULL DEFAULT '{}',
    builtin      boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT roles_one_per_name UNIQUE (name),
    CONSTRAINT roles_permissions_no_nulls CHECK (array_position(permissions, NULL) IS NULL)
);
COMMENT ON TABLE auth_service.roles IS
    'Named sets of permissions; built-in roles are seeded and may not be renamed by users.';
COMMENT ON COLUMN auth_service.roles.permissions IS
    'Names of auth_service.permissions rows (an array because the seed has no role_permissions table).';

INSERT INTO auth_service.roles (name, description, permissions, builtin) VALUES
    ('viewer', 'Read everything.', '{workflows:read,instances:read,events:read,integrations:read}', true),
    ('editor', 'Read and change workflows, instances, integrations; publish events; run tests.',
     '{workflows:read,workflows:write,instances:read,instances:write,events:publish,events:read,integrations:read,integrations:write,tests:run}', true),
    ('admin', 'Everything.', '{admin:*}', true);

CREATE TABLE auth_service.users (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    username       text        NOT NULL CONSTRAINT users_username_format CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{0,127}$'),
    email          text        CONSTRAINT users_email_format CHECK (email ~ '^[^@\s]+@[^@\s]+$'),
    display_name   text        NOT NULL DEFAULT '',
    password_hash  text        CONSTRAINT users_password_hash_phc CHECK (password_hash ~ '^\$[a-z0-9-]+\$'),
    oidc_issuer    text,
    oidc_subject   text,
    roles          text[]      NOT NULL DEFAULT '{}',
    disabled_at    timestamptz,
    last_login_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_oidc_issuer_and_subject CHECK ((oidc_issuer IS NULL) = (oidc_subject IS NULL)),
    CONSTRAINT users_roles_no_nulls CHECK (array_position(roles, NULL) IS NULL)
);
COMMENT ON TABLE auth_service.users IS
    'People and service accounts that use the API and dashboard. Passwords are stored only as PHC-format hashes (argon2id/bcrypt); single sign-on users have an OIDC issuer and subject instead.';
COMMENT ON COLUMN auth_service.users.username IS
    'Stored lower-case (the CHECK refuses capitals), so uniqueness is case-insensitive without citext.';
COMMENT ON COLUMN auth_service.users.password_hash IS
    'PHC string ($argon2id$...); a CHECK refuses anything that does not look like one, so a plain password cannot be stored by mistake.';
COMMENT ON COLUMN auth_service.users.roles IS
    'Names of auth_service.roles rows.';
CREATE UNIQUE INDEX users_one_per_username ON auth_service.users (username);
CREATE UNIQUE INDEX users_one_per_email ON auth_service.users (lower(email)) WHERE email IS NOT NULL;
COMMENT ON INDEX auth_service.users_one_per_email IS 'Emails are unique ignoring case.';
CREATE UNIQUE INDEX users_one_per_oidc_identity
    ON auth_service.users (oidc_issuer, oidc_subject) WHERE oidc_subject IS NOT NULL;
CREATE INDEX users_roles ON auth_service.users USING gin (roles);
COMMENT ON INDEX auth_service.users_roles IS '"Who has role X" without a join table.';
