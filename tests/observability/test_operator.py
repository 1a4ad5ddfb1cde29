"""The operator's telemetry end to end: a real run, its logs, spans and metrics in the
tables (linked by trace id), a real Prometheus scraping the operator, and PostgreSQL
stopped under a running operator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from plait.kernel.components import COMPONENTS
from plait.kernel.migrations import migrate_database
from plait.testing import PostgresServer
from plait.testing._process import free_port, wait_until
from plait.testing.prometheus import PrometheusServer
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import OperatorProcess, StartOperator

pytestmark = pytest.mark.e2e

FAST = {
    "PLAIT_METRICS_SNAPSHOT_SECONDS": "1",
    "PLAIT_DATABASE_GAUGES_SECONDS": "1",
    "PLAIT_LOG_FLUSH_INTERVAL_MS": "100",
    "PLAIT_SPAN_FLUSH_INTERVAL_MS": "100",
}


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def run_two_tasks(kube: Kube, name: str) -> None:
    sim = {"sim.plait.dev/exit-code": "0", "sim.plait.dev/message": '{"n": 1}'}
    template = {"image": "busybox", "podMetadata": {"annotations": sim}}
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "pair"},
        "spec": {
            "tasks": [
                {"name": "first", "template": template},
                {"name": "second", "template": template, "dependencies": ["first"]},
            ]
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(definition))
    instance = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": "pair"}},
    }
    kube.kubectl("create", "-f", "-", input=json.dumps(instance))


def phase(kube: Kube, name: str) -> str:
    return kube.kubectl("get", "wfi", name, "-o", "jsonpath={.status.phase}")


def job_env(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env") or ()}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def sample(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_a_run_leaves_linked_logs_spans_and_metrics_and_prometheus_scrapes_them(
    cluster: Kube,
    start_operator: StartOperator,
    migrated_database: str,
    monkeypatch: pytest.MonkeyPatch,
    prometheus_available: None,
) -> None:
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    operator = start_operator()
    with PrometheusServer([f"127.0.0.1:{operator.health_port}"]) as prometheus:
        prometheus.wait_for('up{job="plait"}', lambda v: v == 1.0)
        before = prometheus.value('sum(plait_task_attempts_total{outcome="succeeded"})') or 0.0
        run_two_tasks(cluster, "traced")
        wait_until(lambda: phase(cluster, "traced") == "Succeeded", timeout=90, what="the run")
        prometheus.wait_for(
            'sum(plait_task_attempts_total{outcome="succeeded"})',
            lambda v: v is not None and v >= before + 2,
        )
        prometheus.wait_for(
            'sum(plait_workflow_instances_finished_total{phase="Succeeded"})',
            lambda v: v is not None and v >= 1,
        )
        prometheus.wait_for(
            'sum(plait_reconciliations_total{kind="WorkflowInstance"})',
            lambda v: v is not None and v >= 1,
        )

    exposition = scrape(operator.health_port)
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition.encode(), capture_output=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    uid = cluster.kubectl("get", "wfi", "traced", "-o", "jsonpath={.metadata.uid}")
    trace_id = uuid.UUID(uid).hex
    # Each task's Job carries the run's trace, so task code can join it.
    jobs = json.loads(cluster.kubectl("get", "jobs", "-o", "json"))["items"]
    assert len(jobs) == 2
    for job in jobs:
        assert job_env(job)["TRACEPARENT"].startswith(f"00-{trace_id}-")

    def spans() -> list[tuple[Any, ...]]:
        with psycopg.connect(migrated_database) as conn:
            return conn.execute(
                "SELECT name, span_id, parent_span_id, attributes->>'plait.task.name', "
                "status_code, (attributes->>'plait.task.overhead_seconds')::float8, "
                "extract(epoch FROM end_time - start_time)::float8, "
                "(attributes->>'plait.task.queue_wait_seconds')::float8, "
                "(attributes->>'plait.task.run_seconds')::float8 "
                "FROM observability_service.observability_traces "
                "WHERE trace_id = %s ORDER BY start_time",
                (trace_id,),
            ).fetchall()

    wait_until(
        lambda: {"plait.workflow", "plait.task", "plait.reconcile"} <= {s[0] for s in spans()},
        timeout=30,
        what="the run's spans in observability_traces",
    )
    found = spans()
    (root,) = [s for s in found if s[0] == "plait.workflow"]
    tasks = [s for s in found if s[0] == "plait.task"]
    assert sorted(t[3] for t in tasks) == ["first", "second"]
    assert all(t[2] == root[1] for t in tasks), "attempt spans hang under the run's root"
    assert root[4] == "OK"
    # The Jobs' TRACEPARENT names the attempt spans that were recorded.
    assert {job_env(job)["TRACEPARENT"].split("-")[2] for job in jobs} == {t[1] for t in tasks}
    # Plait's overhead, measured by the runtime: every attempt's span carries its launch +
    # advance stages, a part of a second against the attempt's own span of seconds.
    for task in tasks:
        assert task[5] is not None, f"{task[3]} has no plait.task.overhead_seconds"
        assert 0 < task[5] < task[6], task
    for stage in ("launch", "advance"):
        assert sample(exposition, "plait_task_overhead_seconds_count", stage=stage) >= 2, stage
    with psycopg.connect(migrated_database) as conn:
        view = conn.execute(
            "SELECT attempts, overhead_seconds, overhead_share "
            "FROM observability_service.task_overhead "
            "WHERE namespace = %s AND workflow = 'pair'",
            (cluster.namespace,),
        ).fetchone()
    assert view is not None
    assert view[0] == 2
    assert view[1] is not None
    overhead = sum(t[5] for t in tasks)
    assert view[1] == pytest.approx(overhead)
    total = sum(t[7] + t[8] + t[5] for t in tasks)
    assert float(view[2]) == pytest.approx(overhead / total, abs=1e-4)

    def logs() -> int:
        with psycopg.connect(migrated_database) as conn:
            row = conn.execute(
                "SELECT count(*) FROM observability_service.observability_logs "
                "WHERE trace_id = %s AND component = 'operator'",
                (trace_id,),
            ).fetchone()
        return int(row[0]) if row else 0

    wait_until(lambda: logs() > 0, timeout=30, what="the run's log records, by trace id")

    def snapshots() -> int:
        with psycopg.connect(migrated_database) as conn:
            row = conn.execute(
                "SELECT count(*) FROM observability_service.observability_metrics "
                "WHERE name = 'plait_task_attempts_total'"
            ).fetchone()
        return int(row[0]) if row else 0

    wait_until(lambda: snapshots() > 0, timeout=30, what="metric snapshots")


@pytest.fixture
def own_postgres() -> Iterator[tuple[PostgresServer, str]]:
    """A server of this test's own, which it stops and starts (the session's must stay up)."""
    base = Path(tempfile.mkdtemp(prefix="plait-pg-outage-"))
    server = PostgresServer(base_dir=base)
    try:
        server.start()
        dsn = server.create_database("plait")
        migrate_database(dsn, COMPONENTS, owner_role=None)
        yield server, dsn
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_the_operator_rides_out_a_database_outage(
    cluster: Kube, own_postgres: tuple[PostgresServer, str], tmp_path: Path
) -> None:
    server, dsn = own_postgres
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_DATABASE")}
    env.update(
        FAST,
        KUBECONFIG=str(cluster.kubeconfig),
        PLAIT_DATABASE_URL=dsn,
        PLAIT_LOG_LEVEL="DEBUG",
        PLAIT_LOG_BUFFER_SIZE="20",
    )
    port = free_port()
    args = [sys.executable, "-m", "plait", "operator", "--namespace", cluster.namespace,
            "--health-port", str(port)]  # fmt: skip
    operator = OperatorProcess(args=args, env=env, log=tmp_path / "operator.log", health_port=port)
    operator.start()
    try:
        run_two_tasks(cluster, "before")
        wait_until(lambda: phase(cluster, "before") == "Succeeded", timeout=90, what="a run")

        server.pause()
        # Work goes on without PostgreSQL: a run is accepted (and waits), health and
        # metrics answer, and the log records that could not be shipped are counted.
        run_two_tasks(cluster, "during")
        wait_until(
            lambda: sample(scrape(port), "plait_log_records_dropped_total") > 0,
            timeout=60,
            what="dropped log records to be reported",
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        assert operator.proc is not None
        assert operator.proc.poll() is None

        server.resume()
        wait_until(lambda: phase(cluster, "during") == "Succeeded", timeout=120, what="the run")

        def shipped_again() -> bool:
            with psycopg.connect(dsn) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM observability_service.observability_logs "
                    "WHERE message LIKE %s",
                    ("%dropped%",),
                ).fetchone()
            return bool(row and row[0] > 0)

        wait_until(shipped_again, timeout=60, what="shipping to resume and report its drops")
    finally:
        operator.stop()


def test_an_event_and_the_run_it_starts_share_one_trace(
    cluster: Kube,
    start_operator: StartOperator,
    migrated_database: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Sender -> ingestion (plait api) -> dispatch (operator) -> the run and its tasks."""
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    start_operator()
    sim = {"sim.plait.dev/exit-code": "0"}
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "single"},
        "spec": {
            "tasks": [
                {
                    "name": "only",
                    "template": {"image": "busybox", "podMetadata": {"annotations": sim}},
                }
            ]
        },
    }
    trigger = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "EventTrigger",
        "metadata": {"name": "on-ping"},
        "spec": {"eventType": "dev.plait.test.ping", "workflowRef": {"name": "single"}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(definition))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(trigger))
    wait_until(
        lambda: (
            cluster.kubectl(
                "get",
                "etr",
                "on-ping",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            )
            == "True"
        ),
        timeout=60,
        what="the trigger",
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_DATABASE")}
    env.update(PLAIT_DATABASE_URL=migrated_database, PLAIT_API_TOKEN="s3cret-token")
    with (tmp_path / "api.log").open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "plait", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
            ),
            timeout=30,
            what="plait api",
        )
        sender_trace, sender_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        event = {
            "specversion": "1.0",
            "id": "ping-1",
            "source": "/tests",
            "type": "dev.plait.test.ping",
            "traceparent": f"00-{sender_trace}-{sender_span}-01",
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/namespaces/{cluster.namespace}/events",
            data=json.dumps(event).encode(),
            headers={
                "Content-Type": "application/cloudevents+json",
                "Authorization": "Bearer s3cret-token",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202

        def spans() -> dict[str, tuple[Any, ...]]:
            with psycopg.connect(migrated_database) as conn:
                rows = conn.execute(
                    "SELECT name, span_id, parent_span_id, component "
                    "FROM observability_service.observability_traces WHERE trace_id = %s",
                    (sender_trace,),
                ).fetchall()
            return {row[0]: row for row in rows}

        wanted = {"plait.event", "plait.event.dispatch", "plait.workflow", "plait.task"}
        wait_until(lambda: wanted <= spans().keys(), timeout=90, what=f"spans {wanted}")
        found = spans()
        assert found["plait.event"][2] == sender_span
        assert found["plait.event"][3] == "api"
        assert found["plait.event.dispatch"][2] == found["plait.event"][1]
        assert found["plait.workflow"][2] == found["plait.event.dispatch"][1]
        assert found["plait.task"][2] == found["plait.workflow"][1]
        # The token never reaches a table.
        with psycopg.connect(migrated_database) as conn:
            leaked = conn.execute(
                "SELECT count(*) FROM observability_service.observability_logs "
                "WHERE message LIKE '%s3cret-token%' OR attributes::text LIKE '%s3cret-token%'"
            ).fetchone()
        assert leaked == (0,)
    finally:
        api.terminate()
        api.wait(timeout=30)
