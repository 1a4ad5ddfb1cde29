"""SQL of the auth component: users and the permissions their roles grant.

Passwords are hashed by the caller (PHC strings such as ``$argon2id$...``); this module
never sees a plain password.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

from plait.errors import ValidationError

__all__ = ["Role", "User", "create_user", "get_user", "list_roles", "permissions_of"]


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
                "roles": list(roles),
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


async def list_roles(conn: AsyncConnection[Any]) -> list[Role]:
    async with conn.cursor(row_factory=class_row(Role)) as cur:
        await cur.execute("SELECT * FROM auth_service.roles ORDER BY name")
        return await cur.fetchall()


async def permissions_of(conn: AsyncConnection[Any], user_id: uuid.UUID) -> set[str]:
    """Every permission an enabled user holds through its roles (empty when disabled)."""
    cur = await conn.execute(
        "SELECT DISTINCT p FROM auth_service.users u "
        "JOIN auth_service.roles r ON r.name = ANY(u.roles) "
        "CROSS JOIN LATERAL unnest(r.permissions) AS p "
        "WHERE u.id = %s AND u.disabled_at IS NULL",
        (user_id,),
    )
    return {row[0] for row in await cur.fetchall()}
