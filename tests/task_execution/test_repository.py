"""Task execution repository against the real schema, connected as its own role."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from plait.task_execution import repository as repo
from plait.task_execution.states import STATES, TaskState
from tests.fixtures.database import ConnectAs


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("task_execution")


async def attempt(
    conn: psycopg.AsyncConnection, wf: uuid.UUID, n: int = 1, task: str = "build"
) -> tuple[repo.TaskInstance, bool]:
    return await repo.insert_task_attempt(
        conn,
        namespace="ci",
        workflow_instance_id=wf,
        task_name=task,
        attempt=n,
        job_name=f"wf-{wf.hex[:8]}-{task}-{n}",
        inputs={"x": 1},
    )


async def test_insert_attempt_is_idempotent(conn: psycopg.AsyncConnection) -> None:
    wf = uuid.uuid4()
    first, created = await attempt(conn, wf)
    assert created
    assert first.state is TaskState.PENDING
    again, created = await attempt(conn, wf)
    assert (again, created) == (first, False)
    second, created = await attempt(conn, wf, 2)
    assert created
    assert second.attempt == 2
    assert [t.attempt for t in await repo.tasks_of_instance(conn, wf)] == [1, 2]


async def test_a_second_row_for_the_same_attempt_is_rejected(conn: psycopg.AsyncConnection) -> None:
    wf = uuid.uuid4()
    insert = (
        "INSERT INTO task_execution_service.task_instances "
        "(namespace, workflow_instance_id, task_name, attempt, job_name) "
        "VALUES ('ci', %s, 'build', 1, %s)"
    )
    await conn.execute(insert, (wf, "job-a"))
    with pytest.raises(psycopg.errors.UniqueViolation, match="one_row_per_attempt"):
        await conn.execute(insert, (wf, "job-b"))
    with pytest.raises(psycopg.errors.CheckViolation, match="attempt_positive"):
        await conn.execute(insert.replace("'build', 1", "'build', 0"), (wf, "job-c"))


async def test_impossible_task_states_are_rejected(conn: psycopg.AsyncConnection) -> None:
    task, _ = await attempt(conn, uuid.uuid4())
    table = "task_execution_service.task_instances"
    with pytest.raises(psycopg.errors.CheckViolation, match="state_known"):
        await conn.execute(f"UPDATE {table} SET state = 'Zombie' WHERE id = %s", (task.id,))
    with pytest.raises(psycopg.errors.CheckViolation, match="finished_iff_final"):
        await conn.execute(f"UPDATE {table} SET state = 'Failed' WHERE id = %s", (task.id,))
    with pytest.raises(psycopg.errors.CheckViolation, match="success_exits_zero"):
        await conn.execute(
            f"UPDATE {table} SET state = 'Succeeded', exit_code = 1, started_at = now(), "
            "finished_at = now() WHERE id = %s",
            (task.id,),
        )


async def test_state_changes_and_final_states_stick(conn: psycopg.AsyncConnection) -> None:
    task, _ = await attempt(conn, uuid.uuid4())
    running = await repo.set_task_state(conn, task.job_name, TaskState.RUNNING)
    assert running is not None
    assert running.started_at is not None
    done = await repo.set_task_state(
        conn, task.job_name, TaskState.SUCCEEDED, exit_code=0, outputs={"digest": "x"}
    )
    assert done is not None
    assert done.finished_at is not None
    assert done.outputs == {"digest": "x"}
    assert await repo.set_task_state(conn, task.job_name, TaskState.FAILED) is None


async def test_attempt_of_an_unknown_definition_version_is_refused(
    conn: psycopg.AsyncConnection,
) -> None:
    await repo.upsert_task_definition(conn, "ci", "compile", {"image": "gcc"})
    latest = await repo.latest_task_definition(conn, "ci", "compile")
    assert latest is not None
    assert latest.version == 1
    ok, _ = await repo.insert_task_attempt(
        conn,
        namespace="ci",
        workflow_instance_id=uuid.uuid4(),
        task_name="c",
        attempt=1,
        job_name="job-ok",
        definition=("compile", 1),
    )
    assert ok.definition_version == 1
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        await repo.insert_task_attempt(
            conn,
            namespace="ci",
            workflow_instance_id=uuid.uuid4(),
            task_name="c",
            attempt=1,
            job_name="job-bad",
            definition=("compile", 2),
        )


async def test_list_and_purge(conn: psycopg.AsyncConnection) -> None:
    wf = uuid.uuid4()
    for n in range(1, 5):
        await attempt(conn, wf, n)
    page = await repo.list_task_attempts(conn, "ci", limit=3)
    rest = await repo.list_task_attempts(conn, "ci", limit=3, cursor=page.next_cursor)
    assert sorted(t.attempt for t in page.items + rest.items) == [1, 2, 3, 4]
    for n in (1, 2, 3):
        await repo.set_task_state(conn, f"wf-{wf.hex[:8]}-build-{n}", TaskState.CANCELLED)
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    assert await repo.purge_task_attempts(conn, cutoff, batch_size=2) == 3
    assert [t.attempt for t in await repo.tasks_of_instance(conn, wf)] == [4]


async def test_task_definition_soft_delete(conn: psycopg.AsyncConnection) -> None:
    await repo.upsert_task_definition(conn, "ci", "compile", {"image": "gcc"})
    assert await repo.delete_task_definition(conn, "ci", "compile") == 1
    assert await repo.latest_task_definition(conn, "ci", "compile") is None


async def test_a_move_the_state_machine_forbids_changes_nothing(
    conn: psycopg.AsyncConnection,
) -> None:
    """Every move set_task_state is asked for and STATES forbids is a no-op (a lost race)."""
    wf = uuid.uuid4()
    for old in TaskState:
        for n, new in enumerate(TaskState, start=1):
            if new in STATES.transitions[old]:
                continue
            row, _ = await attempt(conn, wf, n, task=f"from-{old.value.lower()}")
            for step in _path_to(old):
                assert await repo.set_task_state(conn, row.job_name, step) is not None
            before = await repo.attempt_by_job(conn, row.job_name)
            assert await repo.set_task_state(conn, row.job_name, new) is None, (old, new)
            assert await repo.attempt_by_job(conn, row.job_name) == before


def _path_to(state: TaskState) -> list[TaskState]:
    """Moves from Pending that reach ``state`` (shortest, through the table)."""
    paths: dict[TaskState, list[TaskState]] = {TaskState.PENDING: []}
    frontier = [TaskState.PENDING]
    while frontier:
        current = frontier.pop(0)
        for nxt in sorted(STATES.transitions[current]):
            if nxt not in paths:
                paths[nxt] = [*paths[current], nxt]
                frontier.append(nxt)
    return paths[state]


async def test_an_attempt_that_never_started_is_recorded_skipped_in_one_insert(
    conn: psycopg.AsyncConnection,
) -> None:
    wf = uuid.uuid4()
    skipped, created = await repo.insert_task_attempt(
        conn,
        namespace="ci",
        workflow_instance_id=wf,
        task_name="late",
        attempt=1,
        job_name="wf-late-1",
        state=TaskState.SKIPPED,
        message="not started: the workflow was cancelled",
    )
    assert created
    assert (skipped.state, skipped.message) == (
        TaskState.SKIPPED,
        "not started: the workflow was cancelled",
    )
    assert skipped.finished_at is not None
    assert skipped.started_at is None
    launched, _ = await attempt(conn, wf, task="raced")
    kept, created = await repo.insert_task_attempt(
        conn,
        namespace="ci",
        workflow_instance_id=wf,
        task_name="raced",
        attempt=1,
        job_name=launched.job_name,
        state=TaskState.SKIPPED,
    )
    assert (kept, created) == (launched, False), "a launched attempt is never marked skipped"
    with pytest.raises(ValueError, match="cannot start Running"):
        await repo.insert_task_attempt(
            conn,
            namespace="ci",
            workflow_instance_id=wf,
            task_name="x",
            attempt=1,
            job_name="wf-x-1",
            state=TaskState.RUNNING,
        )
