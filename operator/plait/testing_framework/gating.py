"""The testing framework's side of the test gate (WorkflowDefinition ``spec.testGate``).

A version stored with the gate on is a candidate (:mod:`plait.workflow_orchestrator.gate`).
:class:`TestGate` runs, on that exact version, every WorkflowTest whose ``workflowRef``
names the workflow and no version (a ``definition-change`` run of the test's newest
version: the run ``spec.runOnDefinitionChange`` would request, so a test that also follows
the workflow runs once), and once all have ended decides the version: Passed when every
run passed, else Failed with the first failing test and case. A workflow no test names
is decided Untested after :data:`NO_TESTS_GRACE_SECONDS` (tests applied together with the
definition are stored by then). A failed version that is still the newest is tested again
when one of its tests changes or a test is added. Each decision is shown on the
WorkflowDefinition: ``status.currentVersion`` and the ``TestsPassed`` condition.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

from plait.kernel.conditions import merge_conditions
from plait.kernel.database import Database
from plait.kernel.kube import Kube
from plait.testing_framework import repository
from plait.testing_framework.repository import TestDefinition, TestRun
from plait.testing_framework.states import CaseOutcome, TestRunStatus
from plait.workflow_orchestrator import gate
from plait.workflow_orchestrator.gate import GatedVersion, GateState

__all__ = ["NO_TESTS_GRACE_SECONDS", "TestGate", "gating_tests"]

logger = logging.getLogger(__name__)
COMPONENT = "testing_framework"
#: How long a gated version whose workflow no WorkflowTest names waits for one to be
#: stored before it is admitted untested.
NO_TESTS_GRACE_SECONDS = 10.0
_REQUESTED_BY = "definition-change"


async def gating_tests(
    conn: AsyncConnection[Any], namespace: str, workflow: str
) -> list[TestDefinition]:
    """The newest version of each live WorkflowTest of ``workflow`` that names no version
    of it (a test pinned to a version tests that version, not a new one), by name."""
    async with conn.cursor(row_factory=class_row(TestDefinition)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (name) * FROM testing_framework_service.test_definitions "
            "WHERE namespace = %s AND workflow_name = %s ORDER BY name, version DESC",
            (namespace, workflow),
        )
        rows = await cur.fetchall()
    return [
        r
        for r in rows
        if r.deleted_at is None and (r.spec.get("workflowRef") or {}).get("version") is None
    ]


async def _gate_run(
    conn: AsyncConnection[Any], test: TestDefinition, workflow_version: int
) -> TestRun | None:
    """The definition-change run of this test version on this workflow version."""
    async with conn.cursor(row_factory=class_row(TestRun)) as cur:
        await cur.execute(
            "SELECT * FROM testing_framework_service.test_runs WHERE namespace = %s "
            "AND test_name = %s AND test_version = %s AND workflow_version = %s "
            "AND requested_by = %s",
            (test.namespace, test.name, test.version, workflow_version, _REQUESTED_BY),
        )
        return await cur.fetchone()


class TestGate:
    """Decides the candidates of gated WorkflowDefinitions; part of the operator's loop of
    in-cluster test runs (:class:`plait.testing_framework.cluster.ClusterTests`)."""

    __test__ = False

    def __init__(
        self,
        db: Database,
        kube: Kube,
        *,
        owns: Callable[[uuid.UUID], bool] = lambda _: True,
        namespaces: Sequence[str] | None = None,
        no_tests_grace: float = NO_TESTS_GRACE_SECONDS,
    ) -> None:
        self._db = db
        self._kube = kube
        self._owns = owns
        self._namespaces = tuple(namespaces) if namespaces is not None else None
        self._no_tests_grace = no_tests_grace
        self._shown: dict[uuid.UUID, GateState] = {}
        """The state last shown on each definition by this process (a GET saved)."""

    async def step(self) -> None:
        """Request the runs each undecided version needs, decide those whose runs ended,
        and show the state on the definitions."""
        async with self._db.connection("workflow_orchestrator") as conn:
            undecided = await gate.undecided_versions(conn, self._namespaces)
        for version in undecided:
            if not self._owns(version.definition_id):
                continue
            try:
                state = await self.judge(version)
                if self._shown.get(version.definition_id) is not state:
                    await self.publish(version.namespace, version.name)
                    self._shown[version.definition_id] = state
            except Exception:
                logger.exception(
                    "test gate of %s/%s version %d failed; trying again", version.namespace,
                    version.name, version.version,
                )  # fmt: skip

    async def judge(self, version: GatedVersion) -> GateState:
        """Move one undecided version as far as it goes now; its state afterwards."""
        async with self._db.connection(COMPONENT) as conn:
            tests = await gating_tests(conn, version.namespace, version.name)
            requested = [
                test.name
                for test in tests
                if await repository.request_test_run(
                    conn,
                    version.namespace,
                    test.name,
                    requested_by=_REQUESTED_BY,
                    workflow_version=version.version,
                )
                is not None
            ]
            runs = {test.name: await _gate_run(conn, test, version.version) for test in tests}
        if version.state is GateState.FAILED:
            if not requested:
                return version.state  # no test changed: the verdict stands
            return await self._decide(
                version, GateState.TESTING,
                f"version {version.version} is tested again: WorkflowTest "
                f"{', '.join(requested)} changed or was added",
            )  # fmt: skip
        if not tests:
            age = (dt.datetime.now(dt.UTC) - version.created_at).total_seconds()
            if age < self._no_tests_grace:
                return version.state
            return await self._decide(
                version,
                GateState.UNTESTED,
                f"no WorkflowTest names WorkflowDefinition {version.name!r}: version "
                f"{version.version} is current untested",
            )
        if any(r is None or r.finished_at is None for r in runs.values()):
            return version.state
        ended = {name: r for name, r in runs.items() if r is not None}
        failing = {n: r for n, r in ended.items() if r.status is not TestRunStatus.PASSED}
        if not failing:
            passed = ", ".join(
                f"{n} ({r.passed_cases}/{r.total_cases} cases)" for n, r in ended.items()
            )
            return await self._decide(
                version,
                GateState.PASSED,
                f"version {version.version} passed its tests: WorkflowTest {passed}; it is current",
            )
        name, run = next(iter(failing.items()))
        why = await self._first_failure(run)
        more = (
            f" (and {len(failing) - 1} more WorkflowTests did not pass)" if len(failing) > 1 else ""
        )
        return await self._decide(
            version,
            GateState.FAILED,
            f"version {version.version} failed its tests: WorkflowTest {name!r} {why}{more}",
        )

    async def _first_failure(self, run: TestRun) -> str:
        """The first case of a run that did not pass, and why; else the run's message."""
        async with self._db.connection(COMPONENT) as conn:
            results = await repository.results_of(conn, run.id)
        bad = [r for r in results if r.outcome is not CaseOutcome.PASSED]
        if not bad:
            return f"{run.status.value.lower()}: {run.message or 'no case passed'}"
        first = bad[0]
        others = f" ({len(bad) - 1} more cases did not pass)" if len(bad) > 1 else ""
        reason = f": {first.message}" if first.message else ""
        return f"case {first.case_name!r} {first.outcome.value.lower()}{reason}{others}"

    async def _decide(self, version: GatedVersion, state: GateState, message: str) -> GateState:
        async with self._db.connection("workflow_orchestrator") as conn:
            changed = await gate.decide(conn, version.definition_id, state, message)
        if changed:
            logger.info("%s/%s version %d: test gate %s: %s", version.namespace, version.name,
                        version.version, state.value, message)  # fmt: skip
        return state if changed else version.state

    async def publish(self, namespace: str, name: str) -> None:
        """Show the gate on the WorkflowDefinition: ``status.currentVersion`` and the
        ``TestsPassed`` condition, as the reconciler computes them."""
        for _ in range(5):
            obj = await self._kube.get_definition(namespace, name)
            if obj is None:
                return
            async with self._db.connection("workflow_orchestrator") as conn:
                tested, current = await gate.condition(
                    conn, namespace, name, generation=obj["metadata"].get("generation")
                )
            status = obj.get("status") or {}
            desired: dict[str, Any] = {"currentVersion": current}
            if tested is not None:
                desired["conditions"] = merge_conditions(status.get("conditions"), [tested])
            if all(status.get(k) == v for k, v in desired.items()):
                return
            if await self._kube.patch_definition_status(
                namespace, name, desired, resource_version=obj["metadata"]["resourceVersion"]
            ):
                return
