"""The migration runner against the real PostgreSQL: both deployment modes, every refusal."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from plait.cli import cli
from plait.errors import ChecksumMismatchError, DatabaseAheadError, MigrationError
from plait.kernel.components import COMPONENTS, component_by_name
from plait.kernel.config import Settings
from plait.kernel.migrations import (
    LEDGER_TABLE,
    applied_migrations,
    load_migrations,
    migrate,
    migrate_database,
    sql_dir,
)
from plait.testing import PostgresServer

# The seed's 23 tables, by schema (docs: /shared/seeds, "Master Table - All System Tables").
SEED_TABLES = {
    "auth_service": {"permissions", "roles", "users"},
    "event_processing_service": {
        "dead_letter_queue",
        "event_definitions",
        "event_instances",
        "event_queue_state",
        "event_sequences",
    },
    "integration_service": {"integration_definitions", "integration_instances"},
    "observability_service": {
        "observability_logs",
        "observability_metrics",
        "observability_traces",
    },
    "task_execution_service": {"task_definitions", "task_instances"},
    "testing_framework_service": {"test_case_results", "test_definitions", "test_runs"},
    "web_application_service": {"ui_components"},
    "workflow_orchestrator_service": {
        "workflow_definitions",
        "workflow_event_subscriptions",
        "workflow_event_triggers",
        "workflow_instances",
    },
}


def user_tables(dsn: str) -> set[tuple[str, str]]:
    """What ``\\dt *.*`` lists outside the system schemas, partitions excluded."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%'"
        ).fetchall()
    return {(s, t) for s, t in rows}


#: Tables added to the seed's, each by a migration that says why.
ADDED_TABLES = {
    "task_execution_service": {"task_artifacts"},  # 0004: task artifacts (docs/artifacts.md)
    # 0004: locks across runs (docs/workflows.md, "Locks across runs")
    # 0006: the operator replicas sharing the runs (docs/operator.md)
    # and 0010: the test gate of each gated version (docs/testing.md, "The test gate")
    "workflow_orchestrator_service": {
        "lock_requests",
        "operator_members",
        "workflow_definition_gates",
    },
    # 0002: namespace grants, API tokens and sessions (docs/auth.md)
    "auth_service": {"role_grants", "api_tokens", "sessions"},
}


def seed_tables(schemas: set[str] | None = None) -> set[tuple[str, str]]:
    """The seed's tables and the added ones (of ``schemas``, or all)."""
    tables = [*SEED_TABLES.items(), *ADDED_TABLES.items()]
    return {(s, t) for s, ts in tables for t in ts if schemas is None or s in schemas}


def test_every_component_has_a_migrations_folder_starting_at_0001() -> None:
    assert {c.schema for c in COMPONENTS} == set(SEED_TABLES)
    for component in COMPONENTS:
        assert load_migrations(component)[0].version == 1
    assert sql_dir().resolve() == (Path(__file__).parents[2] / "sql").resolve()


#: Every migration file of every component: (component, version).
ALL_MIGRATIONS = {(c.name, m.version) for c in COMPONENTS for m in load_migrations(c)}


def test_apply_from_empty_then_rerun_is_a_no_op(postgres: str, role_passwords: dict) -> None:
    applied = migrate_database(postgres, COMPONENTS)
    assert {(m.component, m.version) for m in applied} == ALL_MIGRATIONS
    assert [m.component for m in applied if m.version == 1] == [c.name for c in COMPONENTS]
    assert user_tables(postgres) == seed_tables() | {("public", LEDGER_TABLE)}
    assert sum(len(t) for t in SEED_TABLES.values()) == 23
    assert migrate_database(postgres, COMPONENTS) == []
    with psycopg.connect(postgres) as conn:
        ledger = applied_migrations(conn)
    assert {(a.component, a.version) for a in ledger} == ALL_MIGRATIONS


def test_database_per_component_mode(postgres_server: PostgresServer, role_passwords: dict) -> None:
    environ = {
        f"PLAIT_DATABASE_URL_{c.env_suffix}": postgres_server.create_database(f"per_{c.name}")
        for c in COMPONENTS
    }
    settings = Settings(database_url=None)
    first = migrate(settings, environ=environ)
    assert len(first) == len(COMPONENTS)
    assert sorted(len(applied) for applied in first.values()) == sorted(
        len(load_migrations(c)) for c in COMPONENTS
    )
    for component in COMPONENTS:
        dsn = environ[f"PLAIT_DATABASE_URL_{component.env_suffix}"]
        assert user_tables(dsn) == seed_tables({component.schema}) | {("public", LEDGER_TABLE)}
    again = migrate(settings, environ=environ)
    assert all(applied == [] for applied in again.values())


def test_shared_url_with_one_component_overridden(
    postgres_server: PostgresServer, role_passwords: dict
) -> None:
    shared = postgres_server.create_database("shared_mode")
    own = postgres_server.create_database("own_auth")
    settings = Settings(database_url=shared)
    result = migrate(settings, environ={"PLAIT_DATABASE_URL_AUTH": own})
    assert sorted(len(v) for v in result.values()) == [
        len(load_migrations(component_by_name("auth"))),
        len(ALL_MIGRATIONS) - len(load_migrations(component_by_name("auth"))),
    ]
    assert user_tables(own) == seed_tables({"auth_service"}) | {("public", LEDGER_TABLE)}
    assert ("auth_service", "users") not in user_tables(shared)


def test_database_ahead_of_code_is_refused_with_a_clear_message(
    postgres: str, role_passwords: dict
) -> None:
    migrate_database(postgres, COMPONENTS)
    with psycopg.connect(postgres) as conn:
        conn.execute(
            f"INSERT INTO public.{LEDGER_TABLE} (component, version, name, checksum) "
            "VALUES ('event_processing', 99, 'from_the_future', repeat('a', 64))"
        )
    with pytest.raises(
        DatabaseAheadError,
        match=r"ahead of this code: component "
        r"'event_processing' has migration 0099_from_the_future applied",
    ):
        migrate_database(postgres, COMPONENTS)


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    root = tmp_path / "sql"
    shutil.copytree(sql_dir(), root)
    return root


def test_edited_applied_migration_is_reported(
    postgres: str, role_passwords: dict, sql_copy: Path
) -> None:
    migrate_database(postgres, COMPONENTS, root=sql_copy)
    path = sql_copy / "auth_service" / "0001_init.sql"
    path.write_text(path.read_text() + "\n-- harmless?\n")
    with pytest.raises(
        ChecksumMismatchError, match=r"0001_init\.sql was edited after it was applied"
    ):
        migrate_database(postgres, COMPONENTS, root=sql_copy)


def test_failed_migration_rolls_back_with_its_ledger_row(
    postgres: str, role_passwords: dict, sql_copy: Path
) -> None:
    auth = component_by_name("auth")
    existing = len(list((sql_copy / auth.schema).glob("*.sql")))
    broken = f"{existing + 1:04d}_broken.sql"
    (sql_copy / auth.schema / broken).write_text(
        "CREATE TABLE auth_service.half_done (id int);\nSELECT 1/0;\n"
    )
    with pytest.raises(
        MigrationError, match=rf"{broken[:4]}_broken\.sql failed .* division by zero"
    ):
        migrate_database(postgres, [auth], root=sql_copy)
    with psycopg.connect(postgres) as conn:
        assert [(a.component, a.version) for a in applied_migrations(conn)] == [
            ("auth", v) for v in range(1, existing + 1)
        ]
        assert conn.execute("SELECT to_regclass('auth_service.half_done')").fetchone() == (None,)


@pytest.mark.parametrize(
    ("name", "message"),
    [("0099_skipped.sql", "expected version 00"), ("2_bad.sql", "must be named")],
)
def test_malformed_migration_folders_are_refused(sql_copy: Path, name: str, message: str) -> None:
    (sql_copy / "auth_service" / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        load_migrations(component_by_name("auth"), sql_copy)


def test_concurrent_runners_apply_each_migration_once(postgres: str, role_passwords: dict) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(len(migrate_database(postgres, COMPONENTS)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [0, 0, 0, len(ALL_MIGRATIONS)]


def test_missing_owner_role_is_explained(postgres: str) -> None:
    with pytest.raises(MigrationError, match="owner role 'nobody_owns' does not exist"):
        migrate_database(postgres, COMPONENTS, owner_role="nobody_owns")


def test_without_an_owner_role_the_login_owns_the_schema(postgres: str) -> None:
    migrate_database(postgres, [component_by_name("auth")], owner_role=None)
    with psycopg.connect(postgres) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class "
            "WHERE oid = 'auth_service.users'::regclass"
        ).fetchone()
    assert owner == ("postgres",)


def test_plait_migrate_command(postgres: str, role_passwords: dict) -> None:
    runner = CliRunner()
    env = {"PLAIT_DATABASE_URL": postgres}
    first = runner.invoke(cli, ["migrate", "--create-roles"], env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "applied auth 0001_init" in first.output
    assert postgres.split("@")[0] not in first.output
    again = runner.invoke(cli, ["migrate", "--component", "auth"], env=env)
    assert again.exit_code == 0
    assert again.output.strip().endswith("up to date")
    status = runner.invoke(cli, ["db", "status"], env=env)
    assert status.exit_code == 0
    assert "auth: 2 applied, 0 pending" in status.output
    bad = runner.invoke(cli, ["migrate", "--component", "nope"], env=env)
    assert bad.exit_code != 0
    assert "unknown component 'nope'" in bad.output
