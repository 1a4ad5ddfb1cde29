"""Auth repository against the real schema, connected as its own role."""

from __future__ import annotations

import psycopg
import pytest

from plait.auth import repository as repo
from plait.errors import ValidationError
from tests.fixtures.database import ConnectAs

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("auth")


async def test_users_get_the_permissions_of_their_roles(conn: psycopg.AsyncConnection) -> None:
    assert [r.name for r in await repo.list_roles(conn)] == [
        "admin",
        "editor",
        "publisher",
        "viewer",
    ]
    user = await repo.create_user(
        conn, "ada", email="Ada@example.org", password_hash=HASH, roles=["viewer"]
    )
    assert await repo.get_user(conn, "ada") == user
    assert await repo.permissions_of(conn, user.id) == {
        "workflows:read",
        "instances:read",
        "events:read",
        "integrations:read",
        "tokens:own",
    }


async def test_unknown_roles_duplicates_and_plain_passwords_are_refused(
    conn: psycopg.AsyncConnection,
) -> None:
    with pytest.raises(ValidationError, match="unknown role"):
        await repo.create_user(conn, "bob", roles=["viewer", "wizard"])
    await repo.create_user(conn, "carol", email="carol@example.org")
    with pytest.raises(psycopg.errors.UniqueViolation, match="users_one_per_email"):
        await repo.create_user(conn, "carol2", email="CAROL@example.org")
    with pytest.raises(psycopg.errors.CheckViolation, match="password_hash_phc"):
        await repo.create_user(conn, "dave", password_hash="hunter2")
    with pytest.raises(psycopg.errors.CheckViolation, match="username_format"):
        await repo.create_user(conn, "Eve")
