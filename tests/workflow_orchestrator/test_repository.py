"""Workflow orchestrator repository against the real schema, connected as its own role."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from plait.errors import ValidationError
from plait.workflow_orchestrator import repository as repo
from plait.workflow_orchestrator.states import (
    FINAL_PHASES,
    PHASES,
    SubscriptionStatus,
    WorkflowPhase,
)
from tests.fixtures.database import ConnectAs

SPEC = {"tasks": [{"name": "build", "image": "alpine"}]}


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("workflow_orchestrator")


async def test_definition_versions_are_kept_and_reapply_is_a_no_op(
    conn: psycopg.AsyncConnection,
) -> None:
    v1, created = await repo.upsert_workflow_definition(conn, "ci", "build", SPEC)
    assert (v1.version, created) == (1, True)
    again, created = await repo.upsert_workflow_definition(conn, "ci", "build", dict(SPEC))
    assert (again.id, created) == (v1.id, False)
    v2, created = await repo.upsert_workflow_definition(conn, "ci", "build", {"tasks": []})
    assert (v2.version, created) == (2, True)
    latest = await repo.latest_workflow_definition(conn, "ci", "build")
    assert latest is not None
    assert latest.id == v2.id
    old = await repo.get_workflow_definition(conn, "ci", "build", 1)
    assert old is not None
    assert old.spec == SPEC


async def test_going_back_to_an_old_spec_is_a_new_version(conn: psycopg.AsyncConnection) -> None:
    await repo.upsert_workflow_definition(conn, "ci", "build", SPEC)
    await repo.upsert_workflow_definition(conn, "ci", "build", {"tasks": []})
    v3, created = await repo.upsert_workflow_definition(conn, "ci", "build", SPEC)
    assert (v3.version, created) == (3, True)


async def test_soft_delete_keeps_history_and_recreate_adds_a_version(
    conn: psycopg.AsyncConnection,
) -> None:
    await repo.upsert_workflow_definition(conn, "ci", "build", SPEC)
    assert await repo.delete_workflow_definition(conn, "ci", "build") == 1
    assert await repo.latest_workflow_definition(conn, "ci", "build") is None
    kept = await repo.get_workflow_definition(conn, "ci", "build", 1)
    assert kept is not None
    assert kept.deleted_at is not None
    again, created = await repo.upsert_workflow_definition(conn, "ci", "build", SPEC)
    assert (again.version, created) == (2, True)


async def test_versions_are_immutable(conn: psycopg.AsyncConnection) -> None:
    v1, _ = await repo.upsert_workflow_definition(conn, "ci", "build", SPEC)
    with pytest.raises(psycopg.errors.CheckViolation, match="immutable"):
        await conn.execute(
            "UPDATE workflow_orchestrator_service.workflow_definitions SET spec = '{}' "
            "WHERE id = %s",
            (v1.id,),
        )


async def _instance(conn: psycopg.AsyncConnection, name: str = "run-1") -> repo.WorkflowInstance:
    await repo.upsert_workflow_definition(conn, "ci", "build", SPEC)
    instance, _ = await repo.create_workflow_instance(
        conn,
        id=uuid.uuid4(),
        namespace="ci",
        name=name,
        workflow_name="build",
        workflow_version=1,
        inputs={"ref": "main"},
    )
    return instance


async def test_create_instance_is_idempotent_and_records_the_version(
    conn: psycopg.AsyncConnection,
) -> None:
    first = await _instance(conn)
    assert (first.phase, first.workflow_version) == (WorkflowPhase.PENDING, 1)
    again, created = await repo.create_workflow_instance(
        conn,
        id=first.id,
        namespace="ci",
        name="run-1",
        workflow_name="build",
        workflow_version=1,
    )
    assert (again, created) == (first, False)


async def test_instance_of_an_unknown_version_is_refused(conn: psycopg.AsyncConnection) -> None:
    await repo.upsert_workflow_definition(conn, "ci", "build", SPEC)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await repo.create_workflow_instance(
            conn,
            id=uuid.uuid4(),
            namespace="ci",
            name="x",
            workflow_name="build",
            workflow_version=7,
        )


async def test_phase_changes_set_times_and_final_phases_stick(
    conn: psycopg.AsyncConnection,
) -> None:
    instance = await _instance(conn)
    running = await repo.set_workflow_phase(conn, instance.id, WorkflowPhase.RUNNING)
    assert running is not None
    assert running.started_at is not None
    assert running.finished_at is None
    done = await repo.set_workflow_phase(
        conn, instance.id, WorkflowPhase.SUCCEEDED, outputs={"digest": "sha256:1"}
    )
    assert done is not None
    assert done.finished_at is not None
    assert done.outputs == {"digest": "sha256:1"}
    assert await repo.set_workflow_phase(conn, instance.id, WorkflowPhase.RUNNING) is None


async def test_unknown_phase_and_impossible_states_are_rejected(
    conn: psycopg.AsyncConnection,
) -> None:
    instance = await _instance(conn)
    table = "workflow_orchestrator_service.workflow_instances"
    with pytest.raises(psycopg.errors.CheckViolation, match="phase_known"):
        await conn.execute(f"UPDATE {table} SET phase = 'Exploded' WHERE id = %s", (instance.id,))
    with pytest.raises(psycopg.errors.CheckViolation, match="finished_iff_final"):
        await conn.execute(f"UPDATE {table} SET phase = 'Failed' WHERE id = %s", (instance.id,))
    with pytest.raises(psycopg.errors.CheckViolation, match="started_unless_pending"):
        await conn.execute(f"UPDATE {table} SET phase = 'Running' WHERE id = %s", (instance.id,))


async def test_keyset_pagination_walks_every_instance_once(conn: psycopg.AsyncConnection) -> None:
    for i in range(7):
        await _instance(conn, f"run-{i}")
    seen: list[str] = []
    cursor = None
    while True:
        page = await repo.list_workflow_instances(conn, "ci", limit=3, cursor=cursor)
        seen += [i.name for i in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == [f"run-{i}" for i in range(7)]
    assert len(seen) == 7
    only = await repo.list_workflow_instances(conn, "ci", workflow_name="other")
    assert only.items == []
    with pytest.raises(ValidationError):
        await repo.list_workflow_instances(conn, "ci", cursor="not-a-cursor")


async def test_triggers_upsert_match_and_delete(conn: psycopg.AsyncConnection) -> None:
    spec = {
        "eventType": "com.github.push",
        "filter": "event.subject == 'main'",
        "workflowRef": {"name": "build"},
        "arguments": {"ref": "event.data.ref"},
    }
    first, changed = await repo.upsert_event_trigger(
        conn, namespace="ci", name="on-push", spec=spec
    )
    assert changed
    assert (first.event_type, first.schedule, first.filter) == (
        "com.github.push",
        None,
        "event.subject == 'main'",
    )
    assert first.arguments == {"ref": "event.data.ref"}
    again, changed = await repo.upsert_event_trigger(
        conn, namespace="ci", name="on-push", spec=spec
    )
    assert not changed
    assert again.updated_at == first.updated_at
    suspended = {**spec, "suspend": True, "concurrencyPolicy": "Forbid"}
    updated, changed = await repo.upsert_event_trigger(
        conn, namespace="ci", name="on-push", spec=suspended
    )
    assert changed
    assert (updated.id, updated.enabled, updated.concurrency_policy) == (first.id, False, "Forbid")
    assert await repo.matching_triggers(conn, namespace="ci", event_type="com.github.push") == []
    await repo.upsert_event_trigger(conn, namespace="ci", name="on-push", spec=spec)
    match = await repo.matching_triggers(conn, namespace="ci", event_type="com.github.push")
    assert [t.id for t in match] == [first.id]
    assert await repo.matching_triggers(conn, namespace="ci", event_type="other") == []
    assert await repo.delete_event_trigger(conn, "ci", "on-push")
    assert await repo.matching_triggers(conn, namespace="ci", event_type="com.github.push") == []


async def test_trigger_needs_exactly_one_of_event_type_and_schedule(
    conn: psycopg.AsyncConnection,
) -> None:
    both = {"eventType": "x", "schedule": {"cron": "* * * * *"}, "workflowRef": {"name": "w"}}
    with pytest.raises(psycopg.errors.CheckViolation, match="event_xor_schedule"):
        await repo.upsert_event_trigger(conn, namespace="ci", name="both", spec=both)
    cron = {"schedule": {"cron": "*/5 * * * *"}, "workflowRef": {"name": "w", "version": 2}}
    row, _ = await repo.upsert_event_trigger(conn, namespace="ci", name="cron", spec=cron)
    assert (row.event_type, row.schedule, row.workflow_version) == (None, "*/5 * * * *", 2)


async def test_subscriptions_are_idempotent_and_matched_once(conn: psycopg.AsyncConnection) -> None:
    instance = await _instance(conn)
    sub, created = await repo.subscribe(
        conn,
        workflow_instance_id=instance.id,
        task_name="approve",
        attempt=1,
        event_type="approval",
        filter={"correlation": "true"},
        timeout_seconds=60,
    )
    assert created
    assert sub.status is SubscriptionStatus.WAITING
    assert sub.expires_at is not None
    assert 59 <= (sub.expires_at - sub.created_at).total_seconds() <= 61
    again, created = await repo.subscribe(
        conn,
        workflow_instance_id=instance.id,
        task_name="approve",
        attempt=1,
        event_type="other",
        timeout_seconds=1,
    )
    assert (again.id, again.event_type, created) == (sub.id, "approval", False)
    assert (
        await repo.waiting_subscriptions(
            conn, namespace="elsewhere", event_type="approval", subject=None
        )
        == []
    )
    assert (
        await repo.waiting_subscriptions(conn, namespace="ci", event_type="other", subject=None)
        == []
    )
    found = await repo.waiting_subscriptions(
        conn, namespace="ci", event_type="approval", subject="x"
    )
    assert [f.id for f in found] == [sub.id]
    first, second = uuid.uuid4(), uuid.uuid4()
    matched = await repo.mark_matched(conn, sub.id, event_id=first, outputs={"ok": True})
    assert matched is not None
    assert (matched.status, matched.matched_event_id, matched.outputs) == (
        SubscriptionStatus.MATCHED,
        first,
        {"ok": True},
    )
    assert await repo.mark_matched(conn, sub.id, event_id=second, outputs={}) is None
    assert [s.id for s in await repo.matched_by(conn, first)] == [sub.id]
    assert await repo.matched_by(conn, second) == []
    assert (
        await repo.waiting_subscriptions(conn, namespace="ci", event_type="approval", subject=None)
        == []
    )


async def test_subscriptions_expire_once_and_are_cancelled_with_their_run(
    conn: psycopg.AsyncConnection,
) -> None:
    instance = await _instance(conn)
    assert await repo.next_deadline(conn) is None
    for task, timeout in (("now", 0), ("later", 3600), ("never", None)):
        await repo.subscribe(
            conn,
            workflow_instance_id=instance.id,
            task_name=task,
            attempt=1,
            event_type="approval",
            timeout_seconds=timeout,
        )
    assert await repo.next_deadline(conn) == 0
    expired = await repo.expire_due(conn)
    assert [(s.task_name, s.status) for s in expired] == [("now", SubscriptionStatus.EXPIRED)]
    assert await repo.expire_due(conn) == []
    due_in = await repo.next_deadline(conn)
    assert due_in is not None
    assert 3590 < due_in <= 3600
    # An expired wait can no longer be matched.
    assert await repo.mark_matched(conn, expired[0].id, event_id=uuid.uuid4(), outputs={}) is None
    assert await repo.cancel_subscriptions(conn, instance.id) == 2
    states = {
        s.task_name: s.status for s in await repo.subscriptions_of_instance(conn, instance.id)
    }
    assert states == {
        "later": SubscriptionStatus.CANCELLED,
        "never": SubscriptionStatus.CANCELLED,
        "now": SubscriptionStatus.EXPIRED,
    }
    assert await repo.next_deadline(conn) is None


async def test_a_phase_move_the_state_machine_forbids_changes_nothing(
    conn: psycopg.AsyncConnection,
) -> None:
    """set_workflow_phase is a no-op (a lost race) for every move PHASES forbids, and for
    the retry's reopening (Failed -> Running), which only reopen_for_retry may do."""
    paths = {
        WorkflowPhase.PENDING: [],
        WorkflowPhase.RUNNING: [WorkflowPhase.RUNNING],
        WorkflowPhase.SUSPENDED: [WorkflowPhase.RUNNING, WorkflowPhase.SUSPENDED],
        WorkflowPhase.SUCCEEDED: [WorkflowPhase.RUNNING, WorkflowPhase.SUCCEEDED],
        WorkflowPhase.FAILED: [WorkflowPhase.RUNNING, WorkflowPhase.FAILED],
        WorkflowPhase.CANCELLED: [WorkflowPhase.CANCELLED],
        WorkflowPhase.ERROR: [WorkflowPhase.ERROR],
    }
    n = 0
    for old, path in paths.items():
        for new in WorkflowPhase:
            if new in PHASES.transitions[old] and old not in FINAL_PHASES:
                continue
            n += 1
            instance = await _instance(conn, f"run-{n}")
            for step in path:
                assert await repo.set_workflow_phase(conn, instance.id, step) is not None
            before = await repo.get_workflow_instance(conn, instance.id)
            assert before is not None
            assert before.phase is old
            assert await repo.set_workflow_phase(conn, instance.id, new) is None, (old, new)
            assert await repo.get_workflow_instance(conn, instance.id) == before
    failed = await _instance(conn, "retried")
    await repo.set_workflow_phase(conn, failed.id, WorkflowPhase.FAILED)
    reopened = await repo.reopen_for_retry(conn, failed.id, 1)
    assert reopened is not None
    assert (reopened.phase, reopened.retries) == (WorkflowPhase.RUNNING, 1)
    assert reopened.started_at is not None, "failed before anything started: starts now"
    assert await repo.reopen_for_retry(conn, failed.id, 2) is None, "only a failed run reopens"
    timed_out = await repo.set_workflow_phase(conn, reopened.id, WorkflowPhase.FAILED)
    assert timed_out is not None
    again = await repo.reopen_for_retry(conn, failed.id, 2)
    assert again is not None
    assert again.started_at is not None
    assert again.started_at > reopened.started_at, "a retry starts the clock (and timeout) afresh"


async def test_due_runs_are_claimed_once_with_a_lease(connect_as: ConnectAs) -> None:
    conn = await connect_as("workflow_orchestrator")
    other = await connect_as("workflow_orchestrator")
    due = await _instance(conn, "due")
    later = await _instance(conn, "later")
    await _instance(conn, "never")
    now = (await (await conn.execute("SELECT now()")).fetchone())[0]  # type: ignore[index]
    for run, wake in ((due, now - dt.timedelta(seconds=1)), (later, now + dt.timedelta(hours=1))):
        await repo.set_workflow_phase(conn, run.id, WorkflowPhase.RUNNING)
        assert await repo.set_wake_at(conn, run.id, wake, seen=None) == wake
    assert await repo.next_deadline(conn) == 0
    assert await repo.next_deadline(conn, ["elsewhere"]) is None
    assert await repo.claim_due_runs(conn, lease_seconds=30, namespaces=["elsewhere"]) == []
    # Two replicas at once: the row lock of one makes the other skip the run.
    async with conn.transaction():
        claimed = await repo.claim_due_runs(conn, lease_seconds=30)
        assert await repo.claim_due_runs(other, lease_seconds=30) == []
    assert claimed == [repo.DueRun(due.id, "ci", "due")]
    assert await repo.claim_due_runs(other, lease_seconds=30) == [], "leased for 30 s"
    leased = await repo.get_workflow_instance(conn, due.id)
    assert leased is not None
    assert leased.wake_at is not None
    assert 29 < (leased.wake_at - now).total_seconds() < 31
    due_in = await repo.next_deadline(conn)
    assert due_in is not None
    assert 28 < due_in <= 30


async def test_a_wake_is_never_dropped_by_a_writer_that_read_an_older_one(
    conn: psycopg.AsyncConnection,
) -> None:
    run = await _instance(conn)
    await repo.set_workflow_phase(conn, run.id, WorkflowPhase.RUNNING)
    t0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    retry = t0 + dt.timedelta(minutes=1)
    timeout = t0 + dt.timedelta(minutes=5)
    # An advance that read no wake records the run's timeout...
    assert await repo.set_wake_at(conn, run.id, timeout, seen=None) == timeout
    # ...one that read it records an earlier retry: it saw the latest, so it decides.
    assert await repo.set_wake_at(conn, run.id, retry, seen=timeout) == retry
    # A slower advance that read the timeout only (before the retry was due) and found
    # nothing to wake for keeps the retry: the earlier of the two wins.
    assert await repo.set_wake_at(conn, run.id, None, seen=timeout) == retry
    assert await repo.set_wake_at(conn, run.id, timeout, seen=timeout) == retry
    # Once the retry started, the advance that read it moves the wake to the timeout.
    assert await repo.set_wake_at(conn, run.id, timeout, seen=retry) == timeout
    ended = await repo.set_workflow_phase(conn, run.id, WorkflowPhase.FAILED)
    assert ended is not None
    assert ended.wake_at is None, "a finished run has no deadline"
    assert await repo.set_wake_at(conn, run.id, retry, seen=None) is None
