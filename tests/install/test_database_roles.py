"""The installed database: each component logs in as its own role, confined to its schema.

The chart is rendered with its defaults (the bundled PostgreSQL) and with the production
values (the user's Secret, as docs/install.md describes it). A private PostgreSQL stands in
for the database: for the bundled one its superuser gets the rendered Secret's password, as
the postgres image's entrypoint does from POSTGRES_PASSWORD_FILE. The migration Job's command
then runs with the Job's own environment (Secret references resolved from the rendered
Secret), and every DSN the operator's and the API's Deployments get is tried: it logs in
as its component's role, reaches that component's schema, and is refused every other one.
The API is also started with its Deployment's environment, and serves.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from plait.kernel.components import COMPONENTS, component_by_name
from plait.kernel.roles import reader_role
from plait.testing import PostgresServer
from plait.testing._process import free_port, stop_process, wait_until
from tests.install.conftest import PRODUCTION_VALUES, Helm, find

NAMESPACE = "plait"
#: What the API's dashboard only reads: it logs in to these as their read-only roles
#: (testing_framework's may also request a test run).
READ_ONLY = ("workflow_orchestrator", "task_execution", "testing_framework")
BUNDLED_HOST = f"plait-postgresql.{NAMESPACE}.svc:5432"


@dataclass(frozen=True)
class Installed:
    """The rendered workloads, by name, and the stand-in server they are pointed at."""

    workloads: dict[str, dict[str, Any]]
    secrets: dict[str, dict[str, str]]
    server: PostgresServer

    def env(self, workload: str) -> dict[str, str]:
        """The container's environment as the kubelet would set it, aimed at ``server``."""
        container = self.workloads[workload]["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                if ref.get("optional") and ref["key"] not in self.secrets[ref["name"]]:
                    continue  # as the kubelet: an optional key that is missing sets nothing
                env[var["name"]] = self.secrets[ref["name"]][ref["key"]]
            else:  # fieldRef: the pod's own name and namespace
                env[var["name"]] = "test"
        local = f"127.0.0.1:{self.server.port}"
        return {k: v.replace(BUNDLED_HOST, local) for k, v in env.items()}

    def args(self, workload: str) -> list[str]:
        container = self.workloads[workload]["spec"]["template"]["spec"]["containers"][0]
        return list(container["args"])


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_")}


def run_plait(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plait", *args],
        env={**clean_environ(), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def documented_secret(server: PostgresServer, migrator: str) -> dict[str, str]:
    """The Secret docs/install.md has a production user create, aimed at ``server``."""
    db = f"127.0.0.1:{server.port}/plait"
    data = {"migration-url": f"postgresql://{migrator}@{db}"}
    for c in COMPONENTS:
        dashed, password = c.name.replace("_", "-"), secrets.token_hex(24)
        data[f"password-{dashed}"] = password
        data[f"url-{dashed}"] = f"postgresql://{c.role}:{password}@{db}"
    for c in map(component_by_name, READ_ONLY):
        dashed, password = c.name.replace("_", "-"), secrets.token_hex(24)
        data[f"password-{dashed}-reader"] = password
        data[f"url-{dashed}-reader"] = f"postgresql://{reader_role(c)}:{password}@{db}"
    return data


@pytest.fixture(scope="module", params=["bundled", "production"])
def installed(request: pytest.FixtureRequest, helm_bin: Any) -> Iterator[Installed]:
    """A render migrated by its own Job's command on a private PostgreSQL.

    bundled: the defaults, the migration as the bundled database's superuser. production:
    ci/production-values.yaml with the Secret docs/install.md describes, the migration as a
    role holding only what the docs ask for (CREATEROLE, and owning the database).
    Private servers, because roles are global to a server: the session's has its own.
    """
    values = [PRODUCTION_VALUES] if request.param == "production" else []
    docs = Helm(helm_bin).render(namespace=NAMESPACE, values=values)
    workloads = {
        d["metadata"]["name"]: d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "Job"}
    }
    with PostgresServer() as server:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            if request.param == "bundled":
                conn.execute("CREATE DATABASE plait")
                secrets_ = {
                    d["metadata"]["name"]: {
                        k: base64.b64decode(v).decode() for k, v in d["data"].items()
                    }
                    for d in docs
                    if d["kind"] == "Secret"
                }
                password = secrets_[find(docs, "StatefulSet", "-postgresql")["metadata"]["name"]]
                conn.execute(
                    sql.SQL("ALTER ROLE postgres PASSWORD {}").format(
                        sql.Literal(password["password"])
                    )
                )
            else:
                conn.execute("CREATE ROLE plait_migrator LOGIN CREATEROLE PASSWORD 'migrate'")
                conn.execute("CREATE DATABASE plait OWNER plait_migrator")
                secrets_ = {"plait-database": documented_secret(server, "plait_migrator:migrate")}
        result = Installed(workloads, secrets_, server)
        done = run_plait(result.args("plait-migrate"), result.env("plait-migrate"))
        assert done.returncode == 0, done.stdout + done.stderr
        yield result


def test_the_migration_job_runs_again_on_upgrade(installed: Installed) -> None:
    """The hook runs before every upgrade: creating the roles and grants again is a no-op."""
    done = run_plait(installed.args("plait-migrate"), installed.env("plait-migrate"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout
    dsn = installed.env("plait-operator")["PLAIT_DATABASE_URL_AUTH"]
    with psycopg.connect(dsn) as conn:
        # admin, editor, viewer (the seed's) and publisher (auth 0002)
        assert conn.execute("SELECT count(*) FROM auth_service.roles").fetchone() == (4,)


def tables_by_schema(installed: Installed) -> dict[str, str]:
    """One table of each component's schema (from the catalog, readable by anyone)."""
    dsn = installed.env("plait-migrate")["PLAIT_DATABASE_URL"]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT schemaname, min(tablename) FROM pg_tables "
            "WHERE schemaname LIKE '%\\_service' GROUP BY 1"
        ).fetchall()
    return dict(rows)


@pytest.mark.parametrize("workload", ["plait-operator", "plait-api"])
def test_each_dsn_reaches_its_own_schema_and_no_other(installed: Installed, workload: str) -> None:
    tables = tables_by_schema(installed)
    assert len(tables) == len(COMPONENTS)
    env = installed.env(workload)
    dsns = {k.removeprefix("PLAIT_DATABASE_URL_"): v for k, v in env.items() if "_URL_" in k}
    assert dsns
    if workload == "plait-api":
        assert sorted(dsns) == sorted(
            ["EVENT_PROCESSING", "OBSERVABILITY", "AUTH", "INTEGRATION", "WEB_APPLICATION"]
            + [c.upper() for c in READ_ONLY]
        )
    for suffix, dsn in dsns.items():
        component = component_by_name(suffix.lower())
        reads_only = workload == "plait-api" and component.name in READ_ONLY
        role = reader_role(component) if reads_only else component.role
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            own = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(component.schema), sql.Identifier(tables[component.schema])
            )
            conn.execute(own)
            if reads_only:  # reads its component's tables, and changes nothing
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(
                        sql.SQL("DELETE FROM {}.{}").format(
                            sql.Identifier(component.schema),
                            sql.Identifier(tables[component.schema]),
                        )
                    )
            for schema, table in tables.items():
                if schema == component.schema:
                    continue
                query = sql.SQL("SELECT * FROM {}.{} LIMIT 1").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
                with pytest.raises(
                    psycopg.errors.InsufficientPrivilege,
                    match=f"permission denied for schema {schema}",
                ):
                    conn.execute(query)


def test_the_apis_testing_framework_login_requests_runs_and_changes_nothing_else(
    installed: Installed,
) -> None:
    """The API starts a WorkflowTest run with the statement ``plait test run NAME`` uses;
    its role may INSERT only a run request (no status: Pending), and nothing else."""
    import asyncio

    from plait.testing_framework import repository

    admin = installed.env("plait-migrate")["PLAIT_DATABASE_URL"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO testing_framework_service.test_definitions (namespace, name, version, "
            "workflow_name, spec, spec_hash) VALUES ('shop', 'smoke', 1, 'shop', '{}', %s)",
            ("0" * 64,),
        )
    dsn = installed.env("plait-api")["PLAIT_DATABASE_URL_TESTING_FRAMEWORK"]

    async def request() -> repository.TestRun | None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await repository.request_test_run(conn, "shop", "smoke", requested_by="api")

    run = asyncio.run(request())
    assert run is not None
    assert (run.status.value, run.requested_by) == ("Pending", "api")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in (
            "UPDATE testing_framework_service.test_runs SET status = 'Passed'",
            "DELETE FROM testing_framework_service.test_runs",
            "INSERT INTO testing_framework_service.test_runs (namespace, test_name, "
            "test_version, status) VALUES ('shop', 'smoke', 1, 'Running')",
            "INSERT INTO testing_framework_service.test_definitions (namespace, name, version, "
            "workflow_name, spec, spec_hash) VALUES ('shop', 'x', 1, 'shop', '{}', "
            "repeat('0', 64))",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_api_serves_with_its_deployment_environment(installed: Installed) -> None:
    port = free_port()
    env = {**clean_environ(), **installed.env("plait-api"), "PLAIT_API_TOKEN": "t" * 32}
    # The Deployment mounts the token key from its Secret; here it is a variable instead.
    env.pop("PLAIT_AUTH_TOKEN_KEY_FILE", None)
    env["PLAIT_AUTH_TOKEN_KEY"] = "k" * 48
    args = [*installed.args("plait-api"), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "plait", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            url = f"http://127.0.0.1:{port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        wait_until(ready, timeout=60, what="plait api /readyz")
    finally:
        stop_process(proc)
    output = proc.stdout.read().decode() if proc.stdout else ""
    # Every database the dashboard reads is configured (none of its pages answers 503).
    assert "the dashboard has no database" not in output, output
