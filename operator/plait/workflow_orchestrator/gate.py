"""The test gate of a WorkflowDefinition (``spec.testGate``): which version new runs get.

A version stored with the gate on is a candidate (``Testing``) until the WorkflowTests of
its workflow have run on it; the testing framework decides it (``Passed``, ``Failed``, or
``Untested`` when no test names the workflow) through :func:`decide`. A run that names no
version runs :func:`current_definition`: the newest version that is ungated, passed or
untested, so a version whose tests fail never reaches new runs and the one before it
stays current. A run pinned to a version runs that version, whatever its gate says.

The state is a row per gated version (``workflow_definition_gates``), written in the
transaction that stores the version (:func:`open_gate`), so it survives restarts and no
gated version is usable before it is decided.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

from plait.kernel.conditions import Condition
from plait.workflow_orchestrator.repository import WorkflowDefinition

__all__ = [
    "CONDITION",
    "Gate",
    "GateState",
    "GatedVersion",
    "condition",
    "current_definition",
    "decide",
    "gate_of",
    "open_gate",
    "undecided_versions",
    "unusable_reason",
]

#: The condition on the WorkflowDefinition that tells how its newest gated version fared.
CONDITION = "TestsPassed"


class GateState(StrEnum):
    """``workflow_definition_gates.state``."""

    TESTING = "Testing"
    PASSED = "Passed"
    FAILED = "Failed"
    UNTESTED = "Untested"
    SUPERSEDED = "Superseded"


#: The states of a gated version that unpinned runs may use.
USABLE = (GateState.PASSED, GateState.UNTESTED)


@dataclass(frozen=True, slots=True)
class Gate:
    definition_id: uuid.UUID
    state: GateState
    message: str | None
    created_at: datetime
    decided_at: datetime | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", GateState(self.state))


@dataclass(frozen=True, slots=True)
class GatedVersion:
    """A gated version the testing framework has to (re)decide: the newest version of its
    definition, Testing or Failed."""

    definition_id: uuid.UUID
    namespace: str
    name: str
    version: int
    state: GateState
    message: str | None
    created_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", GateState(self.state))


_GATES = "workflow_orchestrator_service.workflow_definition_gates"
_DEFINITIONS = "workflow_orchestrator_service.workflow_definitions"


async def open_gate(conn: AsyncConnection[Any], definition: WorkflowDefinition) -> None:
    """Make a newly stored gated version a candidate, and the candidates before it
    Superseded (only the newest version is tested). Call it in the transaction that
    stored the version."""
    await conn.execute(
        f"UPDATE {_GATES} g SET state = 'Superseded', decided_at = now(), "
        "message = 'version ' || d.version || ' was not decided before version ' "
        "|| %s::text || ' was stored' "
        f"FROM {_DEFINITIONS} d WHERE d.id = g.definition_id AND g.state = 'Testing' "
        "AND d.namespace = %s AND d.name = %s AND d.version < %s",
        (definition.version, definition.namespace, definition.name, definition.version),
    )
    await conn.execute(
        f"INSERT INTO {_GATES} (definition_id) VALUES (%s) ON CONFLICT DO NOTHING",
        (definition.id,),
    )


async def gate_of(conn: AsyncConnection[Any], definition_id: uuid.UUID) -> Gate | None:
    """The gate of one version; None for a version stored without the gate."""
    async with conn.cursor(row_factory=class_row(Gate)) as cur:
        await cur.execute(f"SELECT * FROM {_GATES} WHERE definition_id = %s", (definition_id,))
        return await cur.fetchone()


async def current_definition(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> WorkflowDefinition | None:
    """The version a run that names no version runs: the newest live version stored
    without the gate, or whose tests passed, or that has no tests. None when there is
    none (the definition is not stored, or every version is a candidate or failed)."""
    async with conn.cursor(row_factory=class_row(WorkflowDefinition)) as cur:
        await cur.execute(
            f"SELECT d.* FROM {_DEFINITIONS} d LEFT JOIN {_GATES} g ON g.definition_id = d.id "
            "WHERE d.namespace = %s AND d.name = %s AND d.deleted_at IS NULL "
            "AND (g.state IS NULL OR g.state = ANY(%s)) ORDER BY d.version DESC LIMIT 1",
            (namespace, name, [s.value for s in USABLE]),
        )
        return await cur.fetchone()


async def undecided_versions(
    conn: AsyncConnection[Any], namespaces: Sequence[str] | None = None
) -> list[GatedVersion]:
    """Gated versions (of these namespaces; None: all) that are the newest of their
    definition, live, and Testing or Failed (a failed version is tested again when one of
    its tests changes), oldest first."""
    async with conn.cursor(row_factory=class_row(GatedVersion)) as cur:
        await cur.execute(
            "SELECT g.definition_id, d.namespace, d.name, d.version, g.state, g.message, "
            f"d.created_at FROM {_GATES} g JOIN {_DEFINITIONS} d ON d.id = g.definition_id "
            "WHERE g.state IN ('Testing', 'Failed') AND d.deleted_at IS NULL "
            "AND (%(all)s OR d.namespace = ANY(%(namespaces)s)) "
            f"AND NOT EXISTS (SELECT FROM {_DEFINITIONS} n WHERE n.namespace = d.namespace "
            "AND n.name = d.name AND n.version > d.version) ORDER BY g.created_at",
            {"all": namespaces is None, "namespaces": list(namespaces or [])},
        )
        return await cur.fetchall()


async def decide(
    conn: AsyncConnection[Any],
    definition_id: uuid.UUID,
    state: GateState,
    message: str,
    *,
    was: Sequence[GateState] = (GateState.TESTING, GateState.FAILED),
) -> bool:
    """Set the gate of a version (Testing again, or a verdict) when it is in one of
    ``was``; False when it is not (decided meanwhile, or superseded)."""
    cur = await conn.execute(
        f"UPDATE {_GATES} SET state = %s, message = %s, "
        "decided_at = CASE WHEN %s = 'Testing' THEN NULL ELSE now() END "
        "WHERE definition_id = %s AND state = ANY(%s)",
        (state.value, message[:4096], state.value, definition_id, [s.value for s in was]),
    )
    return cur.rowcount == 1


async def newest_gate(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> tuple[int, Gate] | None:
    """The newest gated version of a live definition and its gate; None when no version
    of it was stored with the gate."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT d.version, g.definition_id, g.state, g.message, g.created_at, g.decided_at "
            f"FROM {_GATES} g JOIN {_DEFINITIONS} d ON d.id = g.definition_id "
            "WHERE d.namespace = %s AND d.name = %s AND d.deleted_at IS NULL "
            "ORDER BY d.version DESC LIMIT 1",
            (namespace, name),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return int(row[0]), Gate(*row[1:])


async def condition(
    conn: AsyncConnection[Any], namespace: str, name: str, *, generation: int | None
) -> tuple[Condition | None, int | None]:
    """The ``TestsPassed`` condition of a definition (None when no version of it was ever
    gated) and its current version (None when there is none)."""
    current = await current_definition(conn, namespace, name)
    current_version = current.version if current is not None else None
    latest = await newest_gate(conn, namespace, name)
    if latest is None:
        return None, current_version
    version, gate = latest
    stays = (
        f"version {current_version} stays current"
        if current_version is not None
        else "no version is current: runs that name no version wait"
    )
    newer_ungated = current_version is not None and current_version > version
    if newer_ungated:
        return Condition(
            CONDITION,
            "True",
            "NotGated",
            f"version {current_version} is stored without testGate: it is current untested",
            generation,
        ), current_version
    if gate.state is GateState.TESTING:
        found = Condition(
            CONDITION,
            "Unknown",
            "Testing",
            f"version {version} is being tested; {stays} until it passes",
            generation,
        )
    elif gate.state is GateState.FAILED:
        found = Condition(
            CONDITION, "False", "Failed", f"{gate.message or 'its tests failed'}; {stays}",
            generation,
        )  # fmt: skip
    elif gate.state is GateState.UNTESTED:
        found = Condition(CONDITION, "True", "NoTests", gate.message or "", generation)
    elif gate.state is GateState.SUPERSEDED:  # a newer gated version is stored: not newest
        found = Condition(CONDITION, "Unknown", "Superseded", gate.message or "", generation)
    else:
        found = Condition(CONDITION, "True", "Passed", gate.message or "", generation)
    return found, current_version


async def unusable_reason(conn: AsyncConnection[Any], namespace: str, name: str) -> str | None:
    """Why a definition stored with the gate has no version a run naming none may run
    (None when that is not why)."""
    latest = await newest_gate(conn, namespace, name)
    if latest is None:
        return None
    version, gate = latest
    if gate.state is GateState.TESTING:
        return f"version {version} is being tested (spec.testGate) and no earlier version passed"
    if gate.state is GateState.FAILED:
        return (
            f"version {version} failed its tests (spec.testGate) and no earlier version "
            f"passed: {gate.message or ''}"
        )
    return None
