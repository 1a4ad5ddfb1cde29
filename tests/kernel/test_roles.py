"""Each component's role is confined to its own schema; the owner role is separate."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from plait.kernel.components import COMPONENTS, Component, component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.migrations import LEDGER_TABLE
from plait.kernel.roles import DEFAULT_OWNER_ROLE, ensure_roles, scram_sha256_verifier
from plait.testing import PostgresServer

A_TABLE = {
    "workflow_orchestrator_service": "workflow_definitions",
    "event_processing_service": "event_instances",
    "task_execution_service": "task_instances",
    "integration_service": "integration_definitions",
    "auth_service": "users",
    "testing_framework_service": "test_runs",
    "web_application_service": "ui_components",
    "observability_service": "observability_logs",
}


def test_event_processing_cannot_read_auth_users(component_dsns: dict[str, str]) -> None:
    with (
        psycopg.connect(component_dsns["event_processing"]) as conn,
        pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="permission denied for schema auth_service"
        ),
    ):
        conn.execute("SELECT * FROM auth_service.users")


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_role_reads_its_schema_and_nothing_else(
    component_dsns: dict[str, str], component: Component
) -> None:
    with psycopg.connect(component_dsns[component.name], autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (component.role,)
        own = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(component.schema), sql.Identifier(A_TABLE[component.schema])
        )
        conn.execute(own)
        for schema, table in A_TABLE.items():
            if schema == component.schema:
                continue
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    sql.SQL("SELECT 1 FROM {}.{} LIMIT 1").format(
                        sql.Identifier(schema), sql.Identifier(table)
                    )
                )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT * FROM public.{}").format(sql.Identifier(LEDGER_TABLE)))
        for schema in (component.schema, "public"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    sql.SQL("CREATE TABLE {}.sneaky (id int)").format(sql.Identifier(schema))
                )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                sql.SQL("DROP TABLE {}.{}").format(
                    sql.Identifier(component.schema), sql.Identifier(A_TABLE[component.schema])
                )
            )


def test_component_roles_are_not_the_owner(migrated_database: str) -> None:
    with psycopg.connect(migrated_database) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
            "WHERE c.relnamespace::regnamespace::text LIKE '%\\_service'"
        ).fetchall()
        assert owners == [(DEFAULT_OWNER_ROLE,)]
        members = conn.execute(
            "SELECT r.rolname FROM pg_roles r WHERE r.rolname LIKE 'plait\\_%%' "
            "AND pg_has_role(r.oid, %s, 'MEMBER') ORDER BY 1",
            (DEFAULT_OWNER_ROLE,),
        ).fetchall()
        assert members == [(DEFAULT_OWNER_ROLE,)]
        login = conn.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (DEFAULT_OWNER_ROLE,)
        ).fetchone()
        assert login == (False,)


def test_ensure_roles_is_idempotent_and_sets_passwords_as_verifiers(
    postgres_server: PostgresServer, role_passwords: dict[str, str]
) -> None:
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        assert ensure_roles(conn, COMPONENTS, passwords=role_passwords) == []
        stored = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'plait_auth'"
        ).fetchone()
    assert stored is not None
    assert stored[0].startswith("SCRAM-SHA-256$4096:")
    assert role_passwords["auth"] not in stored[0]


def test_scram_verifier_is_deterministic_for_a_salt() -> None:
    a = scram_sha256_verifier("pw", salt=b"0123456789abcdef")
    assert a == scram_sha256_verifier("pw", salt=b"0123456789abcdef")
    assert a != scram_sha256_verifier("pw2", salt=b"0123456789abcdef")


async def test_pools_can_run_as_component_roles(migrated_database: str) -> None:
    settings = Settings(
        database_url=SecretStr(migrated_database), database_pool_min=1, database_pool_max=2
    )
    async with await Database.open(settings, as_component_roles=True) as db:
        async with db.connection("event_processing") as conn:
            row = await (await conn.execute("SELECT current_user")).fetchone()
            assert row == ("plait_event_processing",)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT * FROM auth_service.users")
        async with db.connection("auth") as conn:
            row = await (await conn.execute("SELECT count(*) FROM auth_service.roles")).fetchone()
            assert row == (4,)  # admin, editor, viewer and publisher (auth 0002)


def test_running_ensure_roles_again_rotates_a_password() -> None:
    """How the chart rotates a component's password: a new one in the Secret, and the
    migration Job (``plait migrate --create-roles``) runs again on the upgrade."""
    auth = component_by_name("auth")
    with PostgresServer() as server:  # private: roles are global to a server
        server.create_database("rotation")
        for password in ("first-password", "second-password"):
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                ensure_roles(conn, [auth], passwords={"auth": password})
            with psycopg.connect(server.dsn("rotation", user=auth.role, password=password)) as c:
                assert c.execute("SELECT current_user").fetchone() == (auth.role,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(server.dsn("rotation", user=auth.role, password="first-password"))
