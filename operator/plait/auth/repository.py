"""SQL of the auth component: users, roles, grants, API tokens and sessions.

Passwords are hashed by the caller (PHC strings such as ``$argon2id$...``) and tokens are
HMACs made by :mod:`plait.auth.secrets`; this module never sees a password or a token.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row

from plait.errors import NotFoundError, ValidationError

__all__ = [
    "Authority",
    "Grant",
    "Role",
    "Session",
    "Token",
    "User",
    "add_grant",
    "admin_exists",
    "authority_of",
    "create_role",
    "create_user",
    "delete_role",
    "find_session",
    "find_token",
    "get_role",
    "get_token",
    "get_user",
    "grants_of",
    "insert_session",
    "insert_token",
    "known_permissions",
    "list_roles",
    "list_tokens",
    "list_users",
    "permissions_of",
    "refresh_session",
    "revoke_session",
    "revoke_token",
    "role_permissions",
    "set_disabled",
    "touch_token",
    "upsert_sso_user",
]


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    username: str
    email: str | None
    display_name: str
    password_hash: str | None
    oidc_issuer: str | None
    oidc_subject: str | None
    roles: list[str]
    disabled_at: datetime | None
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Role:
    id: uuid.UUID
    name: str
    description: str
    permissions: list[str]
    builtin: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Grant:
    role: str
    namespace: str


@dataclass(frozen=True, slots=True)
class Token:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    kind: str
    display_prefix: str
    scopes: list[str] | None
    expires_at: datetime | None
    last_used_at: datetime | None
    last_used_from: str | None
    revoked_at: datetime | None
    created_by: str
    created_at: datetime
    username: str


@dataclass(frozen=True, slots=True)
class Session:
    id: uuid.UUID
    user_id: uuid.UUID
    method: str
    created_at: datetime
    refreshed_at: datetime
    idle_expires_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Authority:
    """A user's standing at the time of a request: enabled or not, and what it holds."""

    user_id: uuid.UUID
    username: str
    disabled: bool
    everywhere: frozenset[str]
    by_namespace: Mapping[str, frozenset[str]]


# --- users ---------------------------------------------------------------------------------


async def create_user(
    conn: AsyncConnection[Any],
    username: str,
    *,
    email: str | None = None,
    display_name: str = "",
    password_hash: str | None = None,
    roles: Sequence[str] = (),
) -> User:
    """Create a user; roles must name existing roles (checked here, there is no join table)."""
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(
            "INSERT INTO auth_service.users (username, email, display_name, password_hash, roles) "
            "SELECT %(username)s, %(email)s, %(display_name)s, %(password_hash)s, %(roles)s "
            "WHERE (SELECT count(*) FROM auth_service.roles WHERE name = ANY(%(roles)s)) "
            "= cardinality(%(roles)s) RETURNING *",
            {
                "username": username,
                "email": email,
                "display_name": display_name,
                "password_hash": password_hash,
                "roles": list(dict.fromkeys(roles)),
            },
        )
        user = await cur.fetchone()
    if user is None:
        raise ValidationError(f"user {username!r}: unknown role among {list(roles)}")
    return user


async def get_user(conn: AsyncConnection[Any], username: str) -> User | None:
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute("SELECT * FROM auth_service.users WHERE username = %s", (username,))
        return await cur.fetchone()


async def list_users(conn: AsyncConnection[Any]) -> list[User]:
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute("SELECT * FROM auth_service.users ORDER BY username")
        return await cur.fetchall()


async def set_disabled(conn: AsyncConnection[Any], username: str, disabled: bool) -> User:
    """Disable (or enable again) a user; a disabled user's sessions end at once."""
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(
            "UPDATE auth_service.users SET disabled_at = CASE WHEN %(d)s "
            "THEN coalesce(disabled_at, now()) END, updated_at = now() "
            "WHERE username = %(u)s RETURNING *",
            {"d": disabled, "u": username},
        )
        user = await cur.fetchone()
    if user is None:
        raise NotFoundError(f"no user {username!r}")
    if disabled:
        await conn.execute(
            "UPDATE auth_service.sessions SET revoked_at = now() "
            "WHERE user_id = %s AND revoked_at IS NULL",
            (user.id,),
        )
    return user


async def upsert_sso_user(
    conn: AsyncConnection[Any],
    *,
    issuer: str,
    subject: str,
    username: str,
    email: str | None,
    display_name: str,
    roles: Sequence[str],
    grants: Sequence[Grant],
) -> User:
    """The single sign-on user of (issuer, subject), created on first sign-in; its roles and
    grants are those the identity provider's groups map to now."""
    async with conn.cursor(row_factory=class_row(User)) as cur:
        await cur.execute(
            "SELECT * FROM auth_service.users WHERE oidc_issuer = %s AND oidc_subject = %s",
            (issuer, subject),
        )
        user = await cur.fetchone()
        if user is None:
            if await get_user(conn, username) is not None:
                raise ValidationError(
                    f"the username {username!r} belongs to a Plait user that does not sign in "
                    "with this identity provider"
                )
            taken = await conn.execute(
                "SELECT 1 FROM auth_service.users WHERE lower(email) = lower(%s)", (email,)
            )
            await cur.execute(
                "INSERT INTO auth_service.users (username, email, display_name, oidc_issuer, "
                "oidc_subject, roles) VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
                (
                    username,
                    None if await taken.fetchone() else email,
                    display_name,
                    issuer,
                    subject,
                    list(roles),
                ),
            )
        else:
            await cur.execute(
                "UPDATE auth_service.users SET roles = %s, display_name = %s, updated_at = now() "
                "WHERE id = %s RETURNING *",
                (list(roles), display_name, user.id),
            )
        user = await cur.fetchone()
    assert user is not None
    await conn.execute("DELETE FROM auth_service.role_grants WHERE user_id = %s", (user.id,))
    for grant in grants:
        await add_grant(conn, user.id, grant.role, grant.namespace)
    return user


async def record_login(conn: AsyncConnection[Any], user_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE auth_service.users SET last_login_at = now() WHERE id = %s", (user_id,)
    )


async def admin_exists(conn: AsyncConnection[Any]) -> bool:
    """True when an enabled user holds admin everywhere (bootstrap is then refused)."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM auth_service.users u "
        "JOIN auth_service.roles r ON r.name = ANY(u.roles) "
        "WHERE 'admin:*' = ANY(r.permissions) AND u.disabled_at IS NULL)"
    )
    row = await cur.fetchone()
    return bool(row and row[0])


# --- grants and permissions ----------------------------------------------------------------


async def add_grant(
    conn: AsyncConnection[Any], user_id: uuid.UUID, role: str, namespace: str
) -> None:
    """Give ``role`` in ``namespace`` only; an unknown role is a ValidationError."""
    try:
        await conn.execute(
            "INSERT INTO auth_service.role_grants (user_id, role, namespace) "
            "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (user_id, role, namespace),
        )
    except psycopg.errors.ForeignKeyViolation:
        raise ValidationError(f"unknown role {role!r}") from None
    except psycopg.errors.CheckViolation:
        raise ValidationError(f"{namespace!r} is not a namespace name") from None


async def grants_of(conn: AsyncConnection[Any], user_id: uuid.UUID) -> list[Grant]:
    async with conn.cursor(row_factory=class_row(Grant)) as cur:
        await cur.execute(
            "SELECT role, namespace FROM auth_service.role_grants WHERE user_id = %s "
            "ORDER BY namespace, role",
            (user_id,),
        )
        return await cur.fetchall()


_AUTHORITY = (
    "u.id AS user_id, u.username, u.disabled_at IS NOT NULL AS disabled, "
    "coalesce((SELECT array_agg(DISTINCT p) FROM auth_service.roles r "
    "  CROSS JOIN LATERAL unnest(r.permissions) AS p WHERE r.name = ANY(u.roles)), '{}') "
    "  AS everywhere, "
    "coalesce((SELECT jsonb_object_agg(ns, perms) FROM ("
    "  SELECT g.namespace AS ns, array_agg(DISTINCT p) AS perms "
    "  FROM auth_service.role_grants g JOIN auth_service.roles r ON r.name = g.role "
    "  CROSS JOIN LATERAL unnest(r.permissions) AS p WHERE g.user_id = u.id "
    "  GROUP BY g.namespace) AS x), '{}'::jsonb) AS by_namespace"
)


def _authority(row: Mapping[str, Any]) -> Authority:
    return Authority(
        user_id=row["user_id"],
        username=row["username"],
        disabled=row["disabled"],
        everywhere=frozenset(row["everywhere"]),
        by_namespace={ns: frozenset(p) for ns, p in row["by_namespace"].items()},
    )


async def authority_of(conn: AsyncConnection[Any], user_id: uuid.UUID) -> Authority | None:
    """The user's standing now (None when there is no such user)."""
    async with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        await cur.execute(
            f"SELECT {_AUTHORITY} FROM auth_service.users u WHERE u.id = %s", (user_id,)
        )
        row = await cur.fetchone()
    return _authority(row) if row is not None else None


async def permissions_of(conn: AsyncConnection[Any], user_id: uuid.UUID) -> set[str]:
    """Every permission an enabled user holds everywhere through its roles (empty when
    disabled)."""
    authority = await authority_of(conn, user_id)
    if authority is None or authority.disabled:
        return set()
    return set(authority.everywhere)


async def known_permissions(conn: AsyncConnection[Any]) -> set[str]:
    cur = await conn.execute("SELECT name FROM auth_service.permissions")
    return {row[0] for row in await cur.fetchall()}


async def role_permissions(conn: AsyncConnection[Any], names: Sequence[str]) -> dict[str, set[str]]:
    """Role name -> its permissions, for the roles of ``names`` that exist."""
    cur = await conn.execute(
        "SELECT name, permissions FROM auth_service.roles WHERE name = ANY(%s)", (list(names),)
    )
    return {name: set(perms) for name, perms in await cur.fetchall()}


# --- roles ---------------------------------------------------------------------------------


async def list_roles(conn: AsyncConnection[Any]) -> list[Role]:
    async with conn.cursor(row_factory=class_row(Role)) as cur:
        await cur.execute("SELECT * FROM auth_service.roles ORDER BY name")
        return await cur.fetchall()


async def get_role(conn: AsyncConnection[Any], name: str) -> Role | None:
    async with conn.cursor(row_factory=class_row(Role)) as cur:
        await cur.execute("SELECT * FROM auth_service.roles WHERE name = %s", (name,))
        return await cur.fetchone()


async def create_role(
    conn: AsyncConnection[Any], name: str, description: str, permissions: Sequence[str]
) -> Role:
    """A new (not built-in) role; every permission must exist."""
    unknown = sorted(set(permissions) - await known_permissions(conn))
    if unknown:
        raise ValidationError(f"role {name!r}: unknown permission(s) {', '.join(unknown)}")
    async with conn.cursor(row_factory=class_row(Role)) as cur:
        try:
            await cur.execute(
                "INSERT INTO auth_service.roles (name, description, permissions) "
                "VALUES (%s, %s, %s) RETURNING *",
                (name, description, sorted(set(permissions))),
            )
        except psycopg.errors.UniqueViolation:
            raise ValidationError(f"a role named {name!r} exists already") from None
        except psycopg.errors.CheckViolation:
            raise ValidationError(
                f"{name!r} is not a role name: lower-case letter first, then up to 62 "
                "lower-case letters, digits, '_' or '-'"
            ) from None
        role = await cur.fetchone()
    assert role is not None
    return role


async def delete_role(conn: AsyncConnection[Any], name: str) -> None:
    """Delete a role no one holds; built-in roles stay."""
    role = await get_role(conn, name)
    if role is None:
        raise NotFoundError(f"no role {name!r}")
    if role.builtin:
        raise ValidationError(f"role {name!r} is built in and cannot be deleted")
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM auth_service.users WHERE %(n)s = ANY(roles)) + "
        "(SELECT count(*) FROM auth_service.role_grants WHERE role = %(n)s)",
        {"n": name},
    )
    row = await cur.fetchone()
    if row is not None and row[0]:
        raise ValidationError(
            f"role {name!r} is still held ({row[0]} grant(s)); remove those first"
        )
    await conn.execute("DELETE FROM auth_service.roles WHERE name = %s", (name,))


# --- tokens --------------------------------------------------------------------------------

_TOKEN_COLUMNS = (
    "t.id, t.user_id, t.name, t.kind, t.display_prefix, t.scopes, t.expires_at, "
    "t.last_used_at, t.last_used_from, t.revoked_at, t.created_by, t.created_at, u.username"
)


async def insert_token(
    conn: AsyncConnection[Any],
    *,
    user_id: uuid.UUID,
    name: str,
    kind: str,
    token_hash: bytes,
    display_prefix: str,
    scopes: Sequence[str] | None,
    expires_at: datetime | None,
    created_by: str,
) -> Token:
    async with conn.cursor(row_factory=class_row(Token)) as cur:
        await cur.execute(
            "WITH t AS (INSERT INTO auth_service.api_tokens (user_id, name, kind, token_hash, "
            "display_prefix, scopes, expires_at, created_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING *) "
            f"SELECT {_TOKEN_COLUMNS} FROM t JOIN auth_service.users u ON u.id = t.user_id",
            (
                user_id,
                name,
                kind,
                token_hash,
                display_prefix,
                list(scopes) if scopes is not None else None,
                expires_at,
                created_by,
            ),
        )
        token = await cur.fetchone()
    assert token is not None
    return token


async def find_token(
    conn: AsyncConnection[Any], token_hash: bytes
) -> tuple[Token, Authority] | None:
    """The token with this hash and its owner's standing, in one round trip."""
    async with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        await cur.execute(
            f"SELECT {_TOKEN_COLUMNS}, {_AUTHORITY} FROM auth_service.api_tokens t "
            "JOIN auth_service.users u ON u.id = t.user_id WHERE t.token_hash = %s",
            (token_hash,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    token = Token(**{f: row[f] for f in Token.__dataclass_fields__})
    return token, _authority(row)


async def touch_token(conn: AsyncConnection[Any], token_id: uuid.UUID, address: str | None) -> None:
    """Record a use (at most one write a minute per token)."""
    await conn.execute(
        "UPDATE auth_service.api_tokens SET last_used_at = now(), last_used_from = %s "
        "WHERE id = %s AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (address, token_id),
    )


async def list_tokens(conn: AsyncConnection[Any], user_id: uuid.UUID) -> list[Token]:
    async with conn.cursor(row_factory=class_row(Token)) as cur:
        await cur.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM auth_service.api_tokens t "
            "JOIN auth_service.users u ON u.id = t.user_id WHERE t.user_id = %s "
            "ORDER BY t.created_at DESC, t.id DESC",
            (user_id,),
        )
        return await cur.fetchall()


async def get_token(
    conn: AsyncConnection[Any], token_id: uuid.UUID, user_id: uuid.UUID
) -> Token | None:
    async with conn.cursor(row_factory=class_row(Token)) as cur:
        await cur.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM auth_service.api_tokens t "
            "JOIN auth_service.users u ON u.id = t.user_id WHERE t.id = %s AND t.user_id = %s",
            (token_id, user_id),
        )
        return await cur.fetchone()


async def revoke_token(
    conn: AsyncConnection[Any], token_id: uuid.UUID, user_id: uuid.UUID
) -> Token:
    """Revoke (idempotently) one of ``user_id``'s tokens; NotFoundError if it has none such."""
    await conn.execute(
        "UPDATE auth_service.api_tokens SET revoked_at = coalesce(revoked_at, now()) "
        "WHERE id = %s AND user_id = %s",
        (token_id, user_id),
    )
    token = await get_token(conn, token_id, user_id)
    if token is None:
        raise NotFoundError(f"no token {token_id}")
    return token


# --- sessions ------------------------------------------------------------------------------


async def insert_session(
    conn: AsyncConnection[Any],
    *,
    user_id: uuid.UUID,
    secret_hash: bytes,
    method: str,
    client_address: str | None,
    idle_seconds: float,
    absolute_seconds: float,
) -> Session:
    # Each sign-in also deletes a few sessions past their absolute limit (oldest first), so
    # ended sessions do not pile up.
    await conn.execute(
        "DELETE FROM auth_service.sessions WHERE id IN (SELECT id FROM auth_service.sessions "
        "WHERE expires_at < now() ORDER BY expires_at LIMIT 100)"
    )
    async with conn.cursor(row_factory=class_row(Session)) as cur:
        await cur.execute(
            "INSERT INTO auth_service.sessions (user_id, secret_hash, method, client_address, "
            "idle_expires_at, expires_at) VALUES (%(u)s, %(h)s, %(m)s, %(a)s, "
            "now() + least(%(i)s, %(x)s) * interval '1 second', "
            "now() + %(x)s * interval '1 second') "
            "RETURNING id, user_id, method, created_at, refreshed_at, idle_expires_at, "
            "expires_at, revoked_at",
            {
                "u": user_id,
                "h": secret_hash,
                "m": method,
                "a": client_address,
                "i": idle_seconds,
                "x": absolute_seconds,
            },
        )
        session = await cur.fetchone()
    assert session is not None
    return session


async def find_session(
    conn: AsyncConnection[Any], secret_hash: bytes
) -> tuple[Session, Authority] | None:
    async with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        await cur.execute(
            "SELECT s.id, s.user_id, s.method, s.created_at, s.refreshed_at, "
            f"s.idle_expires_at, s.expires_at, s.revoked_at, {_AUTHORITY} "
            "FROM auth_service.sessions s JOIN auth_service.users u ON u.id = s.user_id "
            "WHERE s.secret_hash = %s",
            (secret_hash,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    session = Session(**{f: row[f] for f in Session.__dataclass_fields__})
    return session, _authority(row)


async def refresh_session(
    conn: AsyncConnection[Any], session_id: uuid.UUID, idle_seconds: float
) -> None:
    """Push the idle expiry forward, never past the absolute one."""
    await conn.execute(
        "UPDATE auth_service.sessions SET refreshed_at = now(), "
        "idle_expires_at = least(expires_at, now() + %s * interval '1 second') "
        "WHERE id = %s AND revoked_at IS NULL",
        (idle_seconds, session_id),
    )


async def revoke_session(conn: AsyncConnection[Any], session_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE auth_service.sessions SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s",
        (session_id,),
    )
