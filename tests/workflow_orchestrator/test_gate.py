"""The test gate's state in PostgreSQL: which version runs that name none get."""

from __future__ import annotations

import psycopg
import pytest

from plait.workflow_orchestrator import gate
from plait.workflow_orchestrator import repository as repo
from plait.workflow_orchestrator.gate import GateState
from tests.fixtures.database import ConnectAs


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("workflow_orchestrator")


def _spec(n: int) -> dict[str, object]:
    return {"testGate": True, "tasks": [{"name": f"t{n}", "template": {"image": "alpine"}}]}


async def _current(conn: psycopg.AsyncConnection) -> int | None:
    found = await gate.current_definition(conn, "ci", "build")
    return found.version if found is not None else None


async def test_a_gated_version_is_current_only_once_decided_usable(
    conn: psycopg.AsyncConnection,
) -> None:
    v1, _ = await repo.upsert_workflow_definition(conn, "ci", "build", {"tasks": []})
    assert await _current(conn) == 1  # stored without the gate: current at once
    v2, _ = await repo.upsert_workflow_definition(conn, "ci", "build", _spec(2))
    await gate.open_gate(conn, v2)
    assert await _current(conn) == 1
    assert [(u.version, u.state) for u in await gate.undecided_versions(conn)] == [
        (2, GateState.TESTING)
    ]
    tested, current = await gate.condition(conn, "ci", "build", generation=3)
    assert tested is not None
    assert current == 1
    assert (tested.status, tested.reason) == ("Unknown", "Testing")
    assert tested.message == "version 2 is being tested; version 1 stays current until it passes"

    assert await gate.decide(conn, v2.id, GateState.FAILED, "version 2 failed its tests: x")
    assert await _current(conn) == 1
    tested, _ = await gate.condition(conn, "ci", "build", generation=3)
    assert tested is not None
    assert (tested.status, tested.reason, tested.message) == (
        "False",
        "Failed",
        "version 2 failed its tests: x; version 1 stays current",
    )
    # still the newest, so still looked at (its tests may change)
    assert [u.version for u in await gate.undecided_versions(conn)] == [2]

    v3, _ = await repo.upsert_workflow_definition(conn, "ci", "build", _spec(3))
    await gate.open_gate(conn, v3)
    assert [u.version for u in await gate.undecided_versions(conn)] == [3]
    assert await gate.decide(conn, v3.id, GateState.PASSED, "version 3 passed its tests")
    assert not await gate.decide(conn, v3.id, GateState.FAILED, "late")  # decided already
    assert await _current(conn) == 3
    assert await gate.undecided_versions(conn) == []
    assert (await gate.gate_of(conn, v2.id)).state is GateState.FAILED  # type: ignore[union-attr]
    assert await gate.gate_of(conn, v1.id) is None


async def test_a_newer_version_supersedes_an_undecided_one_and_ungated_is_current(
    conn: psycopg.AsyncConnection,
) -> None:
    v1, _ = await repo.upsert_workflow_definition(conn, "ci", "build", _spec(1))
    await gate.open_gate(conn, v1)
    assert await _current(conn) is None  # no version may be used yet
    reason = await gate.unusable_reason(conn, "ci", "build")
    assert reason == ("version 1 is being tested (spec.testGate) and no earlier version passed")
    v2, _ = await repo.upsert_workflow_definition(conn, "ci", "build", _spec(2))
    await gate.open_gate(conn, v2)
    superseded = await gate.gate_of(conn, v1.id)
    assert superseded is not None
    assert superseded.state is GateState.SUPERSEDED
    assert superseded.message == "version 1 was not decided before version 2 was stored"
    assert not await gate.decide(conn, v1.id, GateState.PASSED, "too late")
    await repo.upsert_workflow_definition(conn, "ci", "build", {"tasks": []})  # gate off
    assert await _current(conn) == 3
    tested, current = await gate.condition(conn, "ci", "build", generation=1)
    assert tested is not None
    assert current == 3
    assert (tested.status, tested.reason) == ("True", "NotGated")
    await repo.delete_workflow_definition(conn, "ci", "build")
    assert await _current(conn) is None
