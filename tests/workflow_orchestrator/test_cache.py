"""Task caching run by the real operator on the local control plane (tasks simulated by
kwok): a second run reuses the first one's result without a Job, a run that bypasses the
cache runs the task again, and a different key misses."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import psycopg
import pytest

from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import (
    jobs,
    plait_cli,
    task,
    wait_phase,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def start_run(kube: Kube, name: str, size: str, **spec: Any) -> None:
    instance = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": "thumbs"}, "arguments": {"size": size}, **spec},
    }
    kube.kubectl("create", "-f", "-", input=json.dumps(instance))


def attempts_of(dsn: str, run: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT t.task_name, t.state, t.outputs, t.cached_from, t.cache_key, t.job_name, t.id "
            "FROM task_execution_service.task_instances t "
            "JOIN workflow_orchestrator_service.workflow_instances w "
            "ON w.id = t.workflow_instance_id WHERE w.name = %s",
            (run,),
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_a_second_run_reuses_the_result_and_a_bypass_runs_again(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    operator = start_operator()
    resize = task("resize", outputs={"path": "/thumbs/a.png"}, inputs={"size": "params.size"})
    resize["cache"] = {"key": "'resize-' + string(inputs.size)", "ttlSeconds": 3600}
    after = task("publish", deps=["resize"], inputs={"path": "tasks.resize.outputs.path"})
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "thumbs"},
        "spec": {
            "parameters": [{"name": "size", "type": "string"}],
            "tasks": [resize, after],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(definition))
    start_run(cluster, "first", "64")
    assert wait_phase(cluster, "first")["phase"] == "Succeeded"
    first = attempts_of(migrated_database, "first")
    assert first["resize"][2] is None  # it ran
    assert first["resize"][3] is not None  # and stored its key

    start_run(cluster, "second", "64")
    assert wait_phase(cluster, "second")["phase"] == "Succeeded"
    second = attempts_of(migrated_database, "second")
    state, outputs, cached_from, key, job, _ = second["resize"]
    assert (state, outputs, cached_from, key) == (
        "Succeeded",
        {"path": "/thumbs/a.png"},
        first["resize"][5],
        first["resize"][3],
    )
    assert job not in jobs(cluster), "a cache hit runs no Job"
    assert second["publish"][0] == "Succeeded"

    start_run(cluster, "other-size", "128")
    assert wait_phase(cluster, "other-size")["phase"] == "Succeeded"
    other = attempts_of(migrated_database, "other-size")
    assert other["resize"][2] is None, (other, first, second)  # a miss

    start_run(cluster, "bypass", "64", bypassCache=True)
    assert wait_phase(cluster, "bypass")["phase"] == "Succeeded"
    bypass = attempts_of(migrated_database, "bypass")
    assert bypass["resize"][2] is None
    assert bypass["resize"][4] in jobs(cluster), "bypassing the cache ran the task"
    url = f"http://127.0.0.1:{operator.health_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        exposed = response.read().decode()
    counted = {
        result: float(value)
        for result, value in re.findall(
            r'^plait_task_cache_lookups_total\{result="(\w+)"\} (\S+)$', exposed, re.M
        )
    }
    assert counted == {"hit": 1.0, "miss": 2.0, "bypassed": 1.0}

    found: list[tuple[object, ...]] = []

    def cached_span() -> bool:
        with psycopg.connect(migrated_database) as conn:
            found[:] = conn.execute(
                "SELECT attributes->>'plait.cache.source', attributes->>'plait.outcome' "
                "FROM observability_service.observability_traces "
                "WHERE attributes->>'plait.cache.hit' = 'true' "
                "AND attributes->>'plait.instance' = 'second'"
            ).fetchall()
        return bool(found)

    wait_until(cached_span, timeout=30, what="the cached attempt's span")
    assert found == [(str(first["resize"][5]), "succeeded")]
    shown = plait_cli(cluster, migrated_database, "instances", "show", "second")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^resize\s+Succeeded \(cached\)\s+1\s", shown.stdout, re.M), shown.stdout
