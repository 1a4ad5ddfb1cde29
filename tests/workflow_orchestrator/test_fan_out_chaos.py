"""A 500-item fan-out survives its operator being SIGKILLed over and over.

The items' list comes from an upstream task's output (known only at run time), tasks are
simulated by kwok, and the operator is killed at random moments while the items are
being launched and finished, then started again. Whatever the moment, every item must
run exactly once: one attempt row and one Job per (item, attempt), no attempt repeated,
no Job without its row, and the run Succeeded with every item's output downstream.
"""

from __future__ import annotations

import json
import random
import time

import psycopg
import pytest

from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import (
    FINAL,
    attempts,
    jobs,
    status,
    submit,
    task,
    wait_phase,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

ITEMS = 500
#: Kills of the operator during the run (then it is left to finish).
KILLS = 12


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def progress(dsn: str) -> tuple[int, int, int, int]:
    """Attempts recorded so far and how many have finished: of every task, then of the
    items alone (tasks named ``each[i]``)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(finished_at),"
            " count(*) FILTER (WHERE task_name LIKE 'each[%'),"
            " count(finished_at) FILTER (WHERE task_name LIKE 'each[%')"
            " FROM task_execution_service.task_instances"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def test_killing_the_operator_during_a_fan_out_runs_every_item_exactly_once(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    rng = random.Random(14)
    operator = start_operator()
    each = task("each", deps=["list"], outputs={"ok": True})
    each["forEach"] = {"expression": "tasks.list.outputs.ids", "parallelism": 100}
    each["inputs"] = {"id": "item", "position": "index"}
    join = task("join", deps=["each"])
    join["inputs"] = {
        "count": "size(tasks.each.outputs)",
        "all_ok": "tasks.each.outputs.all(o, o != null && o.ok)",
    }
    ids = list(range(ITEMS))
    submit(cluster, "chaos", [task("list", outputs={"ids": ids}), each, join])

    # Each operator lives until it has recorded something (a launch or an outcome), and a
    # random moment more: killed sooner, a restarting operator on a loaded machine would
    # never get anything done; this way every kill lands in the middle of work.
    kills = mid_fan_out = 0
    seen = progress(migrated_database)

    def moved_on() -> bool:
        return progress(migrated_database) != seen

    while kills < KILLS and status(cluster, "chaos-run").get("phase") not in FINAL:
        wait_until(moved_on, timeout=120, interval=0.2, what="the operator to record something")
        time.sleep(rng.uniform(0, 1.5))
        operator.kill()
        kills += 1
        seen = progress(migrated_database)
        if seen[2] > 0 and seen[3] < ITEMS:
            mid_fan_out += 1
        operator = start_operator()
    final = wait_phase(cluster, "chaos-run", timeout=300)

    assert mid_fan_out >= 3, f"only {mid_fan_out} of {kills} kills came during the fan-out"
    assert final["phase"] == "Succeeded", final
    assert final["progress"] == f"{ITEMS + 2}/{ITEMS + 2}"
    assert final["counts"]["succeeded"] == ITEMS + 2
    assert len(json.dumps(final)) < 2048, "the status does not grow with the items"

    rows = attempts(migrated_database, "chaos-run")
    items = [r for r in rows if r[0].startswith("each[")]
    keys = [(r[0], r[1]) for r in items]
    assert sorted(keys) == sorted((f"each[{i}]", 1) for i in range(ITEMS)), (
        "exactly one attempt per item, none repeated"
    )
    assert {r[2] for r in items} == {"Succeeded"}
    job_names = [r[6] for r in rows]
    assert len(set(job_names)) == len(rows) == ITEMS + 2, "one Job name per (item, attempt)"
    made = jobs(cluster)
    assert set(made) == set(job_names), "a Job without its attempt row, or the reverse"
    for name in (r[6] for r in items):
        owner = made[name]["metadata"]["ownerReferences"][0]["name"]
        assert owner == "chaos-run"

    with psycopg.connect(migrated_database) as conn:
        join_inputs = conn.execute(
            "SELECT inputs FROM task_execution_service.task_instances WHERE task_name = 'join'"
        ).fetchone()
    assert join_inputs == ({"count": ITEMS, "all_ok": True},)
