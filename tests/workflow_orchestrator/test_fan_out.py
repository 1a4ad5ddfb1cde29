"""Fan-outs (``forEach``) run by the real operator on the local control plane, tasks
simulated by kwok: a list known only at run time, one Job per item, the status and
``plait instances show`` counting items, and cancel reaching every item.

What an item computes from its own value (and its failure under each policy) needs real
containers: see tests/task_execution/test_real_tasks.py.
"""

from __future__ import annotations

import json
import re

import psycopg
import pytest

from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import (
    attempts,
    jobs,
    plait_cli,
    status,
    submit,
    task,
    wait_phase,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def test_a_dynamic_fan_out_runs_one_job_per_item_and_counts_items(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    files = [f"part-{i:03}" for i in range(40)]
    each = task("each", deps=["list"], outputs={"ok": True})
    each["forEach"] = {"expression": "tasks.list.outputs.files", "parallelism": 8}
    each["inputs"] = {"file": "item", "n": "index"}
    total = task("total", deps=["each"], outputs={})
    total["inputs"] = {"count": "size(tasks.each.outputs)"}
    submit(cluster, "fan", [task("list", outputs={"files": files}), each, total])
    final = wait_phase(cluster, "fan-run", timeout=180)
    assert final["phase"] == "Succeeded", final
    assert final["progress"] == "42/42"
    assert final["counts"]["succeeded"] == 42
    assert len(json.dumps(final)) < 2048, "the status does not grow with the items"
    rows = attempts(migrated_database, "fan-run")
    items = {r[0]: r for r in rows if r[0].startswith("each[")}
    assert sorted(items) == sorted(f"each[{i}]" for i in range(40))
    assert all(r[1] == 1 and r[2] == "Succeeded" for r in items.values())
    made = jobs(cluster)
    assert {r[6] for r in items.values()} <= set(made), "one Job per item"
    env = {
        e["name"]: e.get("value")
        for e in made[items["each[17]"][6]]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert (env["PLAIT_INPUT_FILE"], env["PLAIT_INPUT_N"], env["PLAIT_TASK"]) == (
        "part-017",
        "17",
        "each[17]",
    )
    with psycopg.connect(migrated_database) as conn:
        inputs = conn.execute(
            "SELECT inputs FROM task_execution_service.task_instances WHERE task_name = 'total'"
        ).fetchone()
    assert inputs == ({"count": 40},)
    listing = cluster.kubectl("get", "workflowinstances")
    assert re.search(r"fan-run\s+fan\s+Succeeded\s+42/42", listing), listing
    shown = plait_cli(cluster, migrated_database, "instances", "show", "fan-run")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^  └ each\[0\.\.39\]\s+40 Succeeded\s*$", shown.stdout, re.M), shown.stdout


def test_cancel_stops_the_running_items_and_skips_the_rest(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    each = task("each", duration="120s")
    each["forEach"] = {"items": list(range(12)), "parallelism": 3}
    submit(cluster, "wide", [each])

    seen: list[tuple[str, int, str]] = []

    def three_running() -> bool:
        seen[:] = [(r[0], r[1], r[2]) for r in attempts(migrated_database, "wide-run")]
        return sum(state == "Running" for _, _, state in seen) == 3

    try:
        wait_until(three_running, timeout=60, what="three items running")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; attempts: {seen}") from None
    wait_until(  # the status is published shortly after the attempts change
        lambda: status(cluster, "wide-run").get("progress") == "0/12",
        timeout=30,
        what="the status to count the twelve items",
    )
    cluster.kubectl("patch", "wfi", "wide-run", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    final = wait_phase(cluster, "wide-run")
    assert final["phase"] == "Cancelled"
    assert final["progress"] == "12/12"
    assert (final["counts"]["cancelled"], final["counts"]["skipped"]) == (3, 9)
    rows = attempts(migrated_database, "wide-run")
    assert len(rows) == 12
    assert {r[5] for r in rows if r[2] == "Skipped"} == {"not started: the workflow was cancelled"}
