"""The built-in catalog in code (what admission checks) is the one the migration seeds."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner

from plait.cli import cli
from plait.integration import repository as repo
from plait.integration.catalog import BUILTIN_TYPES, settings_problems
from tests.fixtures.database import ConnectAs


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("integration")


async def test_code_catalog_equals_the_seeded_catalog(conn: psycopg.AsyncConnection) -> None:
    seeded = {
        t.type: (t.settings_schema, tuple(t.secret_keys), t.webhook_secret_key)
        for t in await repo.list_integration_types(conn)
        if t.builtin
    }
    in_code = {
        k: (dict(t.settings_schema), t.secret_keys, t.webhook_secret_key)
        for k, t in BUILTIN_TYPES.items()
    }
    assert in_code == seeded
    assert seeded["github"][2] == "webhookSecret"
    assert seeded["webhook"][1:] == ((), "secret")


def test_settings_are_checked_with_paths() -> None:
    problems = settings_problems(BUILTIN_TYPES["postgres"], {"host": "db", "port": 0, "x": 1})
    assert problems == [
        ("spec.settings", "'database' is a required property"),
        ("spec.settings", "Additional properties are not allowed ('x' was unexpected)"),
        ("spec.settings.port", "0 is less than the minimum of 1"),
    ]


def test_the_cli_lists_the_seeded_types_with_their_schemas(component_dsns: dict[str, str]) -> None:
    env = {"PLAIT_DATABASE_URL_INTEGRATION": component_dsns["integration"]}
    text = CliRunner().invoke(cli, ["integrations", "types"], env=env, catch_exceptions=False)
    assert text.exit_code == 0, text.output
    assert "postgres  PostgreSQL: Runs SQL against a PostgreSQL database." in text.output
    assert "    port: integer (default 5432)" in text.output
    assert "    host: string (required)" in text.output
    assert "  webhook signing key: webhookSecret" in text.output
    listed = CliRunner().invoke(cli, ["integrations", "types", "-o", "json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = {row["type"]: row for row in json.loads(listed.output)}
    assert sorted(rows) == ["github", "http", "postgres", "s3", "slack", "webhook"]
    assert rows["s3"]["settingsSchema"] == BUILTIN_TYPES["s3"].settings_schema
    assert rows["s3"]["secretKeys"] == ["accessKeyId", "secretAccessKey"]
