"""Events start workflows for real: the operator's dispatcher and scheduler, end to end.

Events are stored as the API stores them (``insert_event`` plus a NOTIFY, as the event
processing role); the operator's dispatcher does the rest against the real control plane.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
from typing import Any

import psycopg
import pytest

from plait.event_processing import repository as repo
from plait.event_processing.states import DeadLetterStatus
from plait.testing._process import wait_until
from tests.fixtures.database import ConnectAs
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def apply(kube: Kube, kind: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "plait.dev/v1alpha1", "kind": kind, "metadata": {"name": name}}
    kube.kubectl("apply", "-f", "-", input=json.dumps({**body, "spec": spec}))


def workflow(kube: Kube, name: str = "greet", *, duration: str = "0s") -> None:
    annotations = {"sim.plait.dev/exit-code": "0", "sim.plait.dev/duration": duration}
    apply(
        kube,
        "WorkflowDefinition",
        name,
        {
            "parameters": [{"name": "who", "default": "nobody"}],
            "tasks": [
                {
                    "name": "hello",
                    "template": {"image": "busybox", "podMetadata": {"annotations": annotations}},
                }
            ],
        },
    )


def trigger(kube: Kube, name: str, **spec: Any) -> None:
    apply(kube, "EventTrigger", name, {"workflowRef": {"name": "greet"}, **spec})


def instances(kube: Kube, trigger_name: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "wfi", "-l", f"plait.dev/trigger={trigger_name}", "-o", "json")
    return list(json.loads(out)["items"])


def wait_ready(kube: Kube, kind: str, name: str) -> None:
    def ready() -> bool:
        out = kube.kubectl(
            "get", kind, name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        )
        return out == "True"

    wait_until(ready, timeout=60, what=f"{kind} {name} to be Ready")


def order(id: str, amount: float, *, namespace: str, key: str | None = None) -> repo.NewEvent:
    return repo.NewEvent(
        namespace=namespace,
        source="/shop",
        id=id,
        type="order.created",
        subject=key,
        data={"orderId": id, "amount": amount},
        partition_key=key,
    )


async def send(connect_as: ConnectAs, *events: repo.NewEvent, max_attempts: int = 5) -> None:
    conn = await connect_as("event_processing")
    async with conn.transaction():
        for event in events:
            await repo.insert_event(conn, event, max_attempts=max_attempts)
        await repo.notify_new_events(conn)


def queue_states(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT state, count(*) FROM event_processing_service.event_queue_state GROUP BY 1"
        ).fetchall()
    return dict(rows)


async def test_each_matching_event_starts_one_run_with_its_arguments(
    cluster: Kube,
    start_operator: StartOperator,
    connect_as: ConnectAs,
    component_dsns: dict[str, str],
) -> None:
    workflow(cluster)
    trigger(
        cluster,
        "big-orders",
        eventType="order.created",
        filter="event.data.amount > 100.0",
        arguments={"who": "'order ' + event.data.orderId"},
    )
    start_operator()
    wait_ready(cluster, "etr", "big-orders")
    ns = cluster.namespace
    await send(
        connect_as,
        order("o-1", 250, namespace=ns),
        order("o-2", 5, namespace=ns),  # filtered out
        order("o-1", 999, namespace=ns),  # a redelivery of o-1: stored once
        order("o-3", 101, namespace=ns),
    )
    await send(connect_as, order("o-1", 250, namespace=ns))  # and again, later

    wait_until(lambda: len(instances(cluster, "big-orders")) == 2, timeout=60, what="2 runs")
    wait_until(
        lambda: queue_states(component_dsns["event_processing"]) == {"Done": 3},
        timeout=30,
        what="every event dispatched",
    )
    runs = instances(cluster, "big-orders")
    assert sorted(r["spec"]["arguments"]["who"] for r in runs) == ["order o-1", "order o-3"]

    def stored() -> list[tuple[Any, ...]]:
        with psycopg.connect(component_dsns["workflow_orchestrator"]) as conn:
            return conn.execute(
                "SELECT w.name, w.trigger_id IS NOT NULL, w.event_id "
                "FROM workflow_orchestrator_service.workflow_instances w ORDER BY w.name"
            ).fetchall()

    wait_until(lambda: len(stored()) == 2, timeout=60, what="runs stored")
    with psycopg.connect(component_dsns["event_processing"]) as conn:
        event_ids = {
            row[0]
            for row in conn.execute(
                "SELECT id FROM event_processing_service.event_instances "
                "WHERE event_id IN ('o-1', 'o-3')"
            )
        }
    assert {row[2] for row in stored()} == event_ids
    assert all(row[1] for row in stored())
    names = {r["metadata"]["name"] for r in runs}
    wait_until(  # the status is written once a burst is over
        lambda: (
            cluster.kubectl("get", "etr", "big-orders", "-o", "jsonpath={.status.lastInstance}")
            in names
        ),
        timeout=30,
        what="status.lastInstance",
    )


async def test_forbid_and_rate_limits_drop_extra_starts(
    cluster: Kube,
    start_operator: StartOperator,
    connect_as: ConnectAs,
    component_dsns: dict[str, str],
) -> None:
    workflow(cluster, duration="30s")
    trigger(cluster, "one-at-a-time", eventType="order.created", concurrencyPolicy="Forbid")
    trigger(
        cluster,
        "two-per-hour",
        eventType="order.created",
        rateLimit={"runs": 2, "periodSeconds": 3600},
    )
    start_operator()
    wait_ready(cluster, "etr", "one-at-a-time")
    wait_ready(cluster, "etr", "two-per-hour")
    ns = cluster.namespace
    # One key: dispatched one after the other, so the policies see each start.
    await send(connect_as, *(order(f"o-{i}", 1, namespace=ns, key="k") for i in range(4)))

    wait_until(lambda: len(instances(cluster, "two-per-hour")) == 2, timeout=60, what="two runs")
    wait_until(lambda: len(instances(cluster, "one-at-a-time")) == 1, timeout=60, what="one run")
    wait_until(
        lambda: queue_states(component_dsns["event_processing"]) == {"Done": 4},
        timeout=30,
        what="every event handled",
    )
    # Nothing more shows up once every event is handled.
    assert len(instances(cluster, "two-per-hour")) == 2
    assert len(instances(cluster, "one-at-a-time")) == 1


async def test_replace_cancels_the_running_run_and_starts_the_new_one(
    cluster: Kube,
    start_operator: StartOperator,
    connect_as: ConnectAs,
) -> None:
    workflow(cluster, duration="60s")
    trigger(cluster, "latest-only", eventType="order.created", concurrencyPolicy="Replace")
    start_operator()
    wait_ready(cluster, "etr", "latest-only")
    ns = cluster.namespace
    await send(connect_as, order("o-1", 1, namespace=ns, key="k"))
    wait_until(lambda: len(instances(cluster, "latest-only")) == 1, timeout=60, what="run 1")
    (first,) = instances(cluster, "latest-only")
    await send(connect_as, order("o-2", 1, namespace=ns, key="k"))
    wait_until(lambda: len(instances(cluster, "latest-only")) == 2, timeout=60, what="run 2")

    def phases() -> dict[str, str | None]:
        return {
            r["metadata"]["name"]: (r.get("status") or {}).get("phase")
            for r in instances(cluster, "latest-only")
        }

    wait_until(
        lambda: phases()[first["metadata"]["name"]] == "Cancelled",
        timeout=60,
        what="the first run to be cancelled",
    )
    (second,) = [n for n in phases() if n != first["metadata"]["name"]]
    assert phases()[second] in {"Pending", "Running"}


async def test_poison_events_are_dead_lettered_and_replay_once_fixed(
    cluster: Kube,
    start_operator: StartOperator,
    connect_as: ConnectAs,
) -> None:
    workflow(cluster)
    trigger(
        cluster, "by-customer", eventType="order.created", arguments={"who": "event.data.customer"}
    )
    start_operator()
    wait_ready(cluster, "etr", "by-customer")
    ns = cluster.namespace
    conn = await connect_as("event_processing")

    async def open_letters(count: int) -> list[repo.DeadLetter]:
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
        while True:
            page = await repo.list_dead_letters(conn, ns, status=DeadLetterStatus.OPEN)
            if len(page.items) >= count:
                return sorted(page.items, key=lambda d: d.event_id)
            assert dt.datetime.now(dt.UTC) < deadline, f"{count} dead letters never came"
            await conn.execute("SELECT pg_sleep(0.2)")

    # 1. A mapping that fails on this event: no retry can help, dead-lettered at once.
    await send(connect_as, order("o-1", 1, namespace=ns), max_attempts=3)
    (first,) = await open_letters(1)
    assert first.attempts == 1
    assert "argument 'who'" in first.reason
    assert "customer" in first.reason

    # 2. The workflow is gone: retried with backoff, then dead-lettered.
    cluster.kubectl("delete", "wfd", "greet")
    event = order("o-2", 1, namespace=ns)
    event = dataclasses.replace(event, data={"customer": "ada"})
    await send(connect_as, event, max_attempts=2)
    _, second = await open_letters(2)
    assert second.attempts == 2
    assert "WorkflowDefinition 'greet' does not exist" in second.reason
    assert instances(cluster, "by-customer") == []

    # Fixed: replay starts the run; the still-broken one comes back to the queue.
    workflow(cluster)
    wait_ready(cluster, "wfd", "greet")
    assert await repo.replay_dead_letter(conn, ns, second.id) is not None
    wait_until(lambda: len(instances(cluster, "by-customer")) == 1, timeout=60, what="a run")
    assert instances(cluster, "by-customer")[0]["spec"]["arguments"] == {"who": "ada"}
    assert await repo.replay_dead_letter(conn, ns, first.id) is not None
    (again,) = await open_letters(1)
    assert again.event_id == "o-1"
    assert again.id != first.id


async def test_a_dispatcher_killed_mid_batch_loses_nothing_and_starts_nothing_twice(
    cluster: Kube,
    start_operator: StartOperator,
    connect_as: ConnectAs,
    component_dsns: dict[str, str],
) -> None:
    workflow(cluster)
    trigger(cluster, "every-order", eventType="order.created")
    options = ("--event-visibility-timeout", "2", "--event-batch-size", "4")
    operator = start_operator(*options)
    wait_ready(cluster, "etr", "every-order")
    ns = cluster.namespace
    await send(connect_as, *(order(f"o-{i}", i, namespace=ns) for i in range(40)))
    for _ in range(3):  # killed as soon as it is busy, three times over
        wait_until(
            lambda: (
                queue_states(component_dsns["event_processing"]).get("Leased", 0) > 0
                or queue_states(component_dsns["event_processing"]).get("Pending", 0) == 0
            ),
            timeout=60,
            what="dispatching under way",
        )
        operator.kill()
        operator = start_operator(*options)
    wait_until(
        lambda: queue_states(component_dsns["event_processing"]) == {"Done": 40},
        timeout=120,
        what="every event dispatched",
    )
    runs = instances(cluster, "every-order")
    assert len(runs) == 40
    assert len({r["metadata"]["annotations"]["plait.dev/event-id"] for r in runs}) == 40


async def test_cron_ticks_start_once_each_with_two_schedulers(
    cluster: Kube, start_operator: StartOperator, component_dsns: dict[str, str]
) -> None:
    """Two operators race over twelve missed ticks (catchUp: All): one run per tick."""
    workflow(cluster)
    schedule = {"cron": "*/10 * * * *", "catchUp": "All"}
    spec = {"schedule": schedule, "arguments": {"who": "string(schedule.time)"}}
    trigger(cluster, "every-ten-minutes", suspend=True, **spec)
    start_operator()
    wait_ready(cluster, "etr", "every-ten-minutes")
    with psycopg.connect(component_dsns["workflow_orchestrator"]) as conn:
        conn.execute(
            "UPDATE workflow_orchestrator_service.workflow_event_triggers "
            "SET last_scheduled_time = date_trunc('hour', now()) - interval '2 hours' "
            "WHERE name = 'every-ten-minutes'"
        )
        expected = conn.execute(
            "SELECT count(*) FROM generate_series(date_trunc('hour', now()) - interval '110 min',"
            " now(), interval '10 min')"
        ).fetchone()
    assert expected is not None
    start_operator()
    trigger(cluster, "every-ten-minutes", suspend=False, **spec)

    wait_until(
        lambda: len(instances(cluster, "every-ten-minutes")) >= expected[0],
        timeout=60,
        what=f"{expected[0]} runs",
    )
    runs = instances(cluster, "every-ten-minutes")
    times = sorted(r["metadata"]["annotations"]["plait.dev/scheduled-time"] for r in runs)
    # A ten-minute boundary may pass during the test and add its own tick: every tick is
    # still started exactly once, with none skipped between the first and the last.
    ticks = [dt.datetime.fromisoformat(t) for t in times]
    assert len(times) == len(set(times)) >= expected[0]
    assert all(b - a == dt.timedelta(minutes=10) for a, b in itertools.pairwise(ticks)), times
    for run in runs:  # schedule.time is the tick's timestamp
        tick = run["metadata"]["annotations"]["plait.dev/scheduled-time"]
        who = run["spec"]["arguments"]["who"]
        assert dt.datetime.fromisoformat(who) == dt.datetime.fromisoformat(tick), (who, tick)
    status = json.loads(cluster.kubectl("get", "etr", "every-ten-minutes", "-o", "json"))
    assert status["status"]["nextScheduleTime"] > times[-1]
