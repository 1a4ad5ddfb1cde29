"""Database roles: one owner role for the schemas, one role per component confined to its schema.

Roles are cluster-global, so creating them is an explicit, idempotent step
(``plait db roles`` or ``plait migrate --create-roles``) run by a user with CREATEROLE.
Grants are per database and are (re)applied after every migration run, so new tables are
covered even where default privileges were never set.

A component may also have a read-only role, ``plait_<component>_reader`` (SELECT on its
schema), for a process that only reads that schema (``plait api``'s dashboard reads the runs
and task attempts): created with LOGIN when its password is given
(``PLAIT_DATABASE_PASSWORD_<COMPONENT>_READER``), granted with its component. Besides
reading, such a role may only request work of its component where :data:`READER_REQUESTS`
says so: INSERT of the listed columns of one table, so the rows it can make are requests
whose other columns take their defaults (testing_framework: a Pending ``test_runs`` row,
what ``plait api`` writes to start a WorkflowTest; the operator carries it out).

Passwords come from ``PLAIT_DATABASE_PASSWORD_<COMPONENT>``; they are sent to the server only
as SCRAM-SHA-256 verifiers computed here, so not even a server statement log sees them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from plait.errors import DatabaseError
from plait.kernel.components import COMPONENTS, Component

__all__ = [
    "DEFAULT_OWNER_ROLE",
    "READER_REQUESTS",
    "ensure_roles",
    "grant_component",
    "password_env",
    "passwords_from_env",
    "reader_passwords_from_env",
    "reader_role",
    "scram_sha256_verifier",
]

log = logging.getLogger(__name__)

DEFAULT_OWNER_ROLE = "plait_owner"
#: Component -> (table, columns) its read-only role may INSERT besides reading: a request
#: for work the component's own role carries out. Without ``status`` among the columns a
#: test run is requested Pending (the column's default) and can be nothing else.
READER_REQUESTS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "testing_framework": (
        "test_runs",
        ("namespace", "test_name", "test_version", "requested_by", "workflow_version"),
    ),
}


def password_env(component: Component) -> str:
    """Name of the variable holding a component role's LOGIN password."""
    return f"PLAIT_DATABASE_PASSWORD_{component.env_suffix}"


def reader_role(component: Component) -> str:
    """The component's read-only role (SELECT on its schema only)."""
    return f"{component.role}_reader"


def reader_password_env(component: Component) -> str:
    """Name of the variable holding the LOGIN password of the component's read-only role."""
    return f"{password_env(component)}_READER"


def reader_passwords_from_env(
    components: Iterable[Component] = COMPONENTS, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Component name -> its read-only role's password, where that variable is set."""
    env = os.environ if environ is None else environ
    return {
        c.name: env[reader_password_env(c)] for c in components if env.get(reader_password_env(c))
    }


def passwords_from_env(
    components: Iterable[Component] = COMPONENTS, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Component name -> password, for the components whose variable is set and non-empty."""
    env = os.environ if environ is None else environ
    return {c.name: env[password_env(c)] for c in components if env.get(password_env(c))}


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = 4096
) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def _role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _create_role(conn: psycopg.Connection[Any], role: str) -> bool:
    """CREATE ROLE ... NOLOGIN unless it exists; True when this call created it."""
    if _role_exists(conn, role):
        return False
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    except psycopg.errors.DuplicateObject:  # another starter created it meanwhile
        return False
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"cannot create database role {role!r}: the connecting user needs CREATEROLE "
            f"(or create the roles once as an administrator with `plait db roles`): {exc}"
        ) from exc
    return True


def _make_member(conn: psycopg.Connection[Any], role: str) -> None:
    """Let the connecting (administrative) user SET ROLE to ``role``."""
    row = conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (role,)).fetchone()
    if row is None or not row[0]:
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))


def ensure_roles(
    conn: psycopg.Connection[Any],
    components: Iterable[Component] = COMPONENTS,
    *,
    owner_role: str = DEFAULT_OWNER_ROLE,
    passwords: Mapping[str, str] | None = None,
    reader_passwords: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the owner role and each component's role if missing; return the ones created.

    Roles are NOLOGIN unless a password is given for them, in which case they become LOGIN
    with that password (set again on every call, so rotating it is re-running this). The
    connecting user is made a member of every role so that it can migrate as the owner and
    so a shared-login deployment can ``SET ROLE`` per component. A component named in
    ``reader_passwords`` also gets its read-only role, LOGIN with that password.
    """
    passwords = passwords or {}
    created: list[str] = []
    roles = ([owner_role] if owner_role else []) + [c.role for c in components]
    for role in roles:
        if _create_role(conn, role):
            created.append(role)
            log.info("created database role %s", role)
        _make_member(conn, role)
    for component in components:
        password = passwords.get(component.name)
        if password:
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(component.role), sql.Literal(scram_sha256_verifier(password))
                )
            )
            log.info("set LOGIN password of role %s", component.role)
    for component in components:
        password = (reader_passwords or {}).get(component.name)
        if not password:
            continue
        role = reader_role(component)
        if _create_role(conn, role):
            created.append(role)
            log.info("created database role %s", role)
        conn.execute(
            sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(scram_sha256_verifier(password))
            )
        )
        log.info("set LOGIN password of role %s", role)
    return created


def grant_component(
    conn: psycopg.Connection[Any], component: Component, *, owner_role: str | None
) -> bool:
    """Grant ``component.role`` DML on its own schema, and nothing else; False if no role.
    Its read-only role, where it exists, gets SELECT on the schema's tables (now and later),
    and the INSERT of its :data:`READER_REQUESTS` entry.

    Runs as the owner role so default privileges apply to the tables the owner creates later.
    ``conn`` must be in autocommit mode; the grants happen in one transaction.
    """
    if not _role_exists(conn, component.role):
        log.info(
            "role %s does not exist; its grants are skipped (run `plait db roles`)", component.role
        )
        return False
    schema, role = sql.Identifier(component.schema), sql.Identifier(component.role)
    statements = [
        "REVOKE ALL ON SCHEMA {schema} FROM PUBLIC",
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        "GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT EXECUTE ON FUNCTIONS TO {role}",
    ]
    readers = []
    if _role_exists(conn, reader_role(component)):
        readers = [
            "GRANT USAGE ON SCHEMA {schema} TO {reader}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {reader}",
        ]
    requests: list[sql.Composed] = []
    if readers and component.name in READER_REQUESTS:
        table, columns = READER_REQUESTS[component.name]
        requests.append(
            sql.SQL("GRANT INSERT ({columns}) ON {schema}.{table} TO {reader}").format(
                columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
                schema=schema,
                table=sql.Identifier(table),
                reader=sql.Identifier(reader_role(component)),
            )
        )
    reader = sql.Identifier(reader_role(component))
    with conn.transaction():
        if owner_role:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner_role)))
        for statement in statements:
            conn.execute(sql.SQL(statement).format(schema=schema, role=role))
        for statement in readers:
            conn.execute(sql.SQL(statement).format(schema=schema, reader=reader))
        for request in requests:
            conn.execute(request)
    return True
