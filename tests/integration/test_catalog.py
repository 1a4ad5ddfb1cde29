"""The built-in catalog in code (what admission checks) is the one the migration seeds."""

from __future__ import annotations

import psycopg
import pytest

from plait.integration import repository as repo
from plait.integration.catalog import BUILTIN_TYPES, settings_problems
from tests.fixtures.database import ConnectAs


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("integration")


async def test_code_catalog_equals_the_seeded_catalog(conn: psycopg.AsyncConnection) -> None:
    seeded = {
        t.type: (t.settings_schema, tuple(t.secret_keys))
        for t in await repo.list_integration_types(conn)
        if t.builtin
    }
    assert {k: (dict(t.settings_schema), t.secret_keys) for k, t in BUILTIN_TYPES.items()} == (
        seeded
    )


def test_settings_are_checked_with_paths() -> None:
    problems = settings_problems(BUILTIN_TYPES["postgres"], {"host": "db", "port": 0, "x": 1})
    assert problems == [
        ("spec.settings", "'database' is a required property"),
        ("spec.settings", "Additional properties are not allowed ('x' was unexpected)"),
        ("spec.settings.port", "0 is less than the minimum of 1"),
    ]
