"""Tasks that wait for an event, end to end: a real operator runs the workflow.

Events are stored (and enqueued) with the event-processing repository. In the first test
the operator's own dispatcher delivers them; the others run the operator with
``--no-dispatch`` and call ``Orchestrator.deliver_event`` from this process, as a
dispatcher does, to control exactly when and how often an event is delivered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from kubernetes import config

from plait.event_processing.repository import (
    EventInstance,
    NewEvent,
    insert_event,
    notify_new_events,
)
from plait.kernel.components import COMPONENTS
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.kube import Kube as KubeCalls
from plait.task_execution.service import TaskExecution
from plait.testing._process import wait_until
from plait.workflow_orchestrator import repository as repo
from plait.workflow_orchestrator.runtime import Orchestrator
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import attempts, jobs, submit, task, wait_phase

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


@pytest.fixture
async def database(component_dsns: dict[str, str]) -> AsyncIterator[Database]:
    """The test's database as the operator sees it (each component as its own role)."""
    environ = {f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS}
    db = await Database.open(Settings(database_url=None), environ=environ)
    async with db:
        yield db


@pytest.fixture
async def orchestrator(cluster: Kube, database: Database) -> AsyncIterator[Orchestrator]:
    """An Orchestrator in this process, like the one the event dispatcher calls."""
    config.load_kube_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    calls = KubeCalls(pool_size=4)
    orch = Orchestrator(database, calls, TaskExecution(database, calls))
    yield orch
    await orch.quiesce()
    calls.close()


async def send(
    db: Database, namespace: str, subject: str | None, data: Any, *, type: str = "order.paid"
) -> EventInstance:
    async with db.connection("event_processing") as conn:
        event, _ = await insert_event(
            conn,
            NewEvent(
                namespace=namespace,
                source="/shop",
                id=str(uuid.uuid4()),
                type=type,
                subject=subject,
                time=dt.datetime.now(dt.UTC),
                data=data,
            ),
        )
        await notify_new_events(conn)
    return event


def dispatched(dsn: str, event: EventInstance) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT state FROM event_processing_service.event_queue_state "
            "WHERE event_instance_id = %s",
            (event.id,),
        ).fetchone()
    return row == ("Done",)


def wait_dispatched(dsn: str, *events: EventInstance) -> None:
    wait_until(
        lambda: all(dispatched(dsn, e) for e in events),
        timeout=30,
        what="the operator to dispatch the events",
    )


def subscriptions(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT task_name, attempt, status, matched_event_id, outputs "
            "FROM workflow_orchestrator_service.workflow_event_subscriptions "
            "ORDER BY task_name, attempt"
        ).fetchall()


def state_of(dsn: str, instance: str, task_name: str) -> str | None:
    rows = [r for r in attempts(dsn, instance) if r[0] == task_name]
    return rows[-1][2] if rows else None


def wait_state(dsn: str, instance: str, task_name: str, state: str) -> None:
    wait_until(
        lambda: state_of(dsn, instance, task_name) == state,
        timeout=60,
        what=f"task {task_name} of {instance} to be {state}",
    )


def waiter(**wait: Any) -> dict[str, Any]:
    return {"name": "wait", "waitForEvent": {"eventType": "order.paid", **wait}}


ORDER = [{"name": "orderId", "type": "string"}]


async def test_a_waiting_run_resumes_on_its_correlated_event(
    cluster: Kube, start_operator: StartOperator, migrated_database: str, database: Database
) -> None:
    start_operator()
    submit(
        cluster,
        "checkout",
        [
            task("a", outputs={"ready": True}),
            {
                **waiter(correlation="event.subject == params.orderId && tasks.a.outputs.ready"),
                "dependencies": ["a"],
            },
            task(
                "b",
                deps=["wait"],
                inputs={"amount": "tasks.wait.outputs.amount"},
                outputs={"done": True},
            ),
        ],
        parameters=ORDER,
        arguments={"orderId": "o-17"},
        outputs={"paid": "tasks.wait.outputs.amount"},
    )
    wait_state(migrated_database, "checkout-run", "wait", "Waiting")
    running = wait_phase(cluster, "checkout-run", {"Running"})
    wait_until(
        lambda: wait_phase(cluster, "checkout-run", {"Running"})["counts"]["running"] == 1,
        timeout=30,
        what="the waiting task to count as running",
    )
    assert running["phase"] == "Running"
    assert [(s[0], s[2]) for s in subscriptions(migrated_database)] == [("wait", "Waiting")]

    # Not this order, another type: dispatched by the operator, and nothing happens.
    other_order = await send(database, cluster.namespace, "o-99", {"amount": 1})
    other_type = await send(database, cluster.namespace, "o-17", {}, type="order.shipped")
    wait_dispatched(migrated_database, other_order, other_type)
    assert state_of(migrated_database, "checkout-run", "wait") == "Waiting"
    assert [(s[0], s[2]) for s in subscriptions(migrated_database)] == [("wait", "Waiting")]
    assert "b" not in {r[0] for r in attempts(migrated_database, "checkout-run")}

    paid = await send(database, cluster.namespace, "o-17", {"amount": 42, "currency": "EUR"})
    final = wait_phase(cluster, "checkout-run")
    assert final["phase"] == "Succeeded", final
    rows = {r[0]: r for r in attempts(migrated_database, "checkout-run")}
    assert rows["wait"][2] == "Succeeded"
    assert rows["wait"][4] == {"amount": 42, "currency": "EUR"}
    assert rows["wait"][6] not in jobs(cluster), "a wait runs no Job"
    env = {
        e["name"]: e.get("value")
        for e in jobs(cluster)[rows["b"][6]]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert json.loads(env["PLAIT_INPUTS"]) == {"amount": 42}
    assert subscriptions(migrated_database) == [
        ("wait", 1, "Matched", paid.id, {"amount": 42, "currency": "EUR"})
    ]
    with psycopg.connect(migrated_database) as conn:
        outputs = conn.execute(
            "SELECT outputs FROM workflow_orchestrator_service.workflow_instances"
        ).fetchone()
    assert outputs == ({"paid": 42},)


async def test_a_wait_without_its_event_times_out_and_fails_the_run(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(
        cluster,
        "late",
        [waiter(correlation="event.subject == params.orderId", timeoutSeconds=2)],
        parameters=ORDER,
        arguments={"orderId": "o-1"},
    )
    final = wait_phase(cluster, "late-run", timeout=60)
    assert final["phase"] == "Failed", final
    assert final["failure"]["task"] == "wait"
    assert final["failure"]["message"] == (
        "task wait attempt 1 timed out: no matching event of type order.paid within 2s"
    )
    assert [(r[0], r[2]) for r in attempts(migrated_database, "late-run")] == [("wait", "TimedOut")]
    assert [s[2] for s in subscriptions(migrated_database)] == ["Expired"]


async def test_an_event_delivered_twice_completes_a_wait_once(
    cluster: Kube,
    start_operator: StartOperator,
    migrated_database: str,
    database: Database,
    orchestrator: Orchestrator,
    component_dsns: dict[str, str],
) -> None:
    start_operator("--no-dispatch")
    submit(
        cluster,
        "twice",
        [waiter(correlation="event.subject == params.orderId"), task("b", deps=["wait"])],
        parameters=ORDER,
        arguments={"orderId": "o-2"},
    )
    wait_state(migrated_database, "twice-run", "wait", "Waiting")
    # Events are namespaced: the same order in another namespace is not this run's.
    assert await orchestrator.deliver_event(await send(database, "elsewhere", "o-2", {})) == 0
    event = await send(database, cluster.namespace, "o-2", [1, 2])
    # Two dispatchers racing on the same event, then a redelivery, then a later match.
    environ = {f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS}
    async with await Database.open(Settings(database_url=None), environ=environ) as other_db:
        calls = KubeCalls(pool_size=2)
        other = Orchestrator(other_db, calls, TaskExecution(other_db, calls))
        counts = await asyncio.gather(orchestrator.deliver_event(event), other.deliver_event(event))
        await other.quiesce()
        calls.close()
    assert sorted(counts) == [0, 1]
    assert await orchestrator.deliver_event(event) == 0
    later = await send(database, cluster.namespace, "o-2", {"again": True})
    assert await orchestrator.deliver_event(later) == 0
    await orchestrator.quiesce()
    final = wait_phase(cluster, "twice-run")
    assert final["phase"] == "Succeeded", final
    rows = [(r[0], r[1], r[2], r[4]) for r in attempts(migrated_database, "twice-run")]
    assert rows == [("b", 1, "Succeeded", None), ("wait", 1, "Succeeded", {"data": [1, 2]})]
    assert [(s[2], s[3]) for s in subscriptions(migrated_database)] == [("Matched", event.id)]


async def test_cancelling_a_waiting_run_cancels_its_wait(
    cluster: Kube,
    start_operator: StartOperator,
    migrated_database: str,
    database: Database,
    orchestrator: Orchestrator,
) -> None:
    start_operator("--no-dispatch")
    submit(cluster, "stop", [waiter(correlation="true")])
    wait_state(migrated_database, "stop-run", "wait", "Waiting")
    cluster.kubectl("patch", "wfi", "stop-run", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    final = wait_phase(cluster, "stop-run")
    assert final["phase"] == "Cancelled", final
    assert [s[2] for s in subscriptions(migrated_database)] == ["Cancelled"]
    assert state_of(migrated_database, "stop-run", "wait") == "Cancelled"
    assert await orchestrator.deliver_event(await send(database, cluster.namespace, None, {})) == 0


async def test_a_match_whose_attempt_was_not_recorded_is_finished_after_a_crash(
    cluster: Kube, start_operator: StartOperator, migrated_database: str, database: Database
) -> None:
    first = start_operator("--no-dispatch")
    submit(
        cluster,
        "heal",
        [waiter(correlation="true"), task("b", deps=["wait"])],
        outputs={"paid": "tasks.wait.outputs.amount"},
    )
    wait_state(migrated_database, "heal-run", "wait", "Waiting")
    first.kill()
    # What a dispatcher that died right after matching leaves behind: the subscription
    # Matched, with the event's data, and the attempt still Waiting.
    async with database.connection("workflow_orchestrator") as conn:
        [sub] = await repo.waiting_subscriptions(
            conn, namespace=cluster.namespace, event_type="order.paid", subject=None
        )
        assert await repo.mark_matched(conn, sub.id, event_id=uuid.uuid4(), outputs={"amount": 7})
    assert state_of(migrated_database, "heal-run", "wait") == "Waiting"
    start_operator("--no-dispatch")
    final = wait_phase(cluster, "heal-run")
    assert final["phase"] == "Succeeded", final
    rows = [(r[0], r[2], r[4]) for r in attempts(migrated_database, "heal-run")]
    assert rows == [("b", "Succeeded", None), ("wait", "Succeeded", {"amount": 7})]
