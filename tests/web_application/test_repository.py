"""Web application repository against the real schema, connected as its own role."""

from __future__ import annotations

import psycopg
import pytest

from plait.web_application import repository as repo
from plait.web_application.states import UiComponentKind
from tests.fixtures.database import ConnectAs


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("web_application")


async def test_components_are_versioned_and_listed_at_their_latest(
    conn: psycopg.AsyncConnection,
) -> None:
    v1, _ = await repo.upsert_ui_component(conn, "runs", UiComponentKind.TABLE, {"columns": ["a"]})
    v2, created = await repo.upsert_ui_component(
        conn, "runs", UiComponentKind.TABLE, {"columns": ["a", "b"]}
    )
    assert (v1.version, v2.version, created) == (1, 2, True)
    await repo.upsert_ui_component(conn, "home", UiComponentKind.PAGE, {"panels": ["runs"]})
    # Beside the built-in components the migration seeds (all at version 1).
    listed = [(c.name, c.version) for c in await repo.list_ui_components(conn)]
    assert [c for c in listed if c[0] in ("home", "runs")] == [("home", 1), ("runs", 2)]
    assert {v for name, v in listed if name not in ("home", "runs")} == {1}
    old = await repo.get_ui_component_version(conn, "runs", 1)
    assert old is not None
    assert old.spec == {"columns": ["a"]}
    assert await repo.delete_ui_component(conn, "home") == 1
    assert await repo.latest_ui_component(conn, "home") is None


async def test_unknown_kind_is_rejected(conn: psycopg.AsyncConnection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="kind_known"):
        await conn.execute(
            "INSERT INTO web_application_service.ui_components (name, version, kind, spec, "
            "spec_hash) VALUES ('x', 1, 'hologram', '{}', repeat('0', 64))"
        )
