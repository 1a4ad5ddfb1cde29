"""Integration repository against the real schema, connected as its own role."""

from __future__ import annotations

import psycopg
import pytest

from plait.integration import repository as repo
from tests.fixtures.database import ConnectAs


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("integration")


async def test_catalog_is_seeded_with_builtin_types(conn: psycopg.AsyncConnection) -> None:
    types = await repo.list_integration_types(conn)
    assert [t.type for t in types] == ["github", "http", "postgres", "s3", "slack", "webhook"]
    s3 = await repo.get_integration_type(conn, "s3")
    assert s3 is not None
    assert s3.builtin
    assert s3.secret_keys == ["accessKeyId", "secretAccessKey"]
    assert s3.settings_schema["required"] == ["bucket"]


async def test_integration_versions_reference_a_secret_by_name(
    conn: psycopg.AsyncConnection,
) -> None:
    spec = {"type": "slack", "settings": {"defaultChannel": "#ci"}, "secretRef": {"name": "slack"}}
    v1, created = await repo.upsert_integration(
        conn,
        "ci",
        "chat",
        integration_type="slack",
        settings=spec["settings"],
        secret_name="slack",
        spec=spec,
    )
    assert (v1.version, v1.secret_name, created) == (1, "slack", True)
    _, created = await repo.upsert_integration(
        conn,
        "ci",
        "chat",
        integration_type="slack",
        settings=spec["settings"],
        secret_name="slack",
        spec=spec,
    )
    assert not created
    assert await repo.delete_integration(conn, "ci", "chat") == 1
    assert await repo.latest_integration(conn, "ci", "chat") is None


async def test_unknown_type_and_secret_values_are_refused(conn: psycopg.AsyncConnection) -> None:
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await repo.upsert_integration(
            conn,
            "ci",
            "x",
            integration_type="carrier-pigeon",
            settings={},
            secret_name=None,
            spec={"type": "carrier-pigeon"},
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="no_secret_values"):
        await repo.upsert_integration(
            conn,
            "ci",
            "y",
            integration_type="http",
            settings={"token": "hunter2"},
            secret_name=None,
            spec={"type": "http"},
        )
