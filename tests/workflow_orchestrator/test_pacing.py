"""How soon a run is advanced again: after what its last advance's planning cost (the
in-process test runs the Orchestrator against the real API server and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from kubernetes import config

from plait.kernel.database import Database
from plait.kernel.kube import Kube as KubeCalls
from plait.task_execution.service import TaskExecution
from plait.workflow_orchestrator.pacing import Pacing
from plait.workflow_orchestrator.runtime import Control, Orchestrator, Summary
from tests.fixtures.kube import Kube, KubeCluster
from tests.workflow_orchestrator.test_execution import task
from tests.workflow_orchestrator.test_status_writes import database, define, record_run

__all__ = ["database"]  # the fixture, shared with the status-write tests


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def paced(clock: Clock) -> tuple[Pacing, uuid.UUID]:
    """A pacing of factor 3 and ceiling 1 s on ``clock``, and a run for it."""
    return Pacing(factor=3.0, ceiling=1.0, clock=clock), uuid.uuid4()


def plan_for(pacing: Pacing, clock: Clock, run: uuid.UUID, seconds: float) -> None:
    """Planning of ``run`` that takes ``seconds`` by ``clock``."""
    with pacing.planning(run):
        clock.now += seconds


def test_the_next_advance_waits_for_a_multiple_of_the_last_ones_planning() -> None:
    clock = Clock()
    pacing, run = paced(clock)
    assert pacing.delay(run) == 0.0, "never advanced: at once"
    plan_for(pacing, clock, run, 0.02)
    clock.now += 5.0  # waiting for the database and the API server does not count
    plan_for(pacing, clock, run, 0.03)
    pacing.advanced(run)
    assert pacing.delay(run) == pytest.approx(0.15), "3 x (0.02 + 0.03)"
    clock.now += 0.1
    assert pacing.delay(run) == pytest.approx(0.05)
    clock.now += 0.05
    assert pacing.delay(run) == 0.0
    assert pacing.delay(uuid.uuid4()) == 0.0, "another run is not held back"


def test_the_wait_is_bounded_and_a_cheap_advance_holds_nothing_back() -> None:
    clock = Clock()
    pacing, run = paced(clock)
    plan_for(pacing, clock, run, 2.0)
    pacing.advanced(run)
    assert pacing.delay(run) == 1.0, "at most the ceiling"
    pacing.advanced(run)  # an advance that planned nothing
    assert pacing.delay(run) == 0.0


def test_a_run_forgotten_keeps_neither_its_wait_nor_its_planning() -> None:
    clock = Clock()
    pacing, run = paced(clock)
    plan_for(pacing, clock, run, 0.1)
    pacing.advanced(run)
    plan_for(pacing, clock, run, 0.1)
    pacing.forget(run)
    assert pacing.delay(run) == 0.0
    pacing.advanced(run)
    assert pacing.delay(run) == 0.0, "the planning before forget is not counted"


class Timed(Orchestrator):
    """The real orchestrator; notes when each advance began and ended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.advances: list[tuple[float, float]] = []
        self.advanced = asyncio.Event()

    async def advance(self, uid: uuid.UUID, *args: Any, **kwargs: Any) -> Summary | None:
        began = time.monotonic()
        try:
            return await super().advance(uid, *args, **kwargs)
        finally:
            self.advances.append((began, time.monotonic()))
            self.advanced.set()


@pytest.mark.e2e
async def test_kicks_while_a_run_is_paced_make_one_advance_when_the_pace_allows(
    plait_crds: KubeCluster, kube: Kube, database: Database
) -> None:
    """A run's changes within its pace (here 0.5 s, whatever its planning cost) are
    advanced once, at the end of it; without the pace each would be advanced on its own."""
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    api = KubeCalls(pool_size=4)
    pace = 0.5
    orchestrator = Timed(
        database, api, TaskExecution(database, api), pacing=Pacing(factor=1e9, ceiling=pace)
    )
    definition = await define(database, kube, "paced", {"tasks": [task("only", duration="60s")]})
    _, row = await record_run(kube, database, "paced-run", definition)
    try:
        orchestrator.kick(row.id, kube.namespace, "paced-run")  # launches its task
        await asyncio.wait_for(orchestrator.advanced.wait(), 60)
        first_ended = orchestrator.advances[0][1]
        for _ in range(4):  # changes 0.1 s apart, each longer than an advance takes
            orchestrator.kick(row.id, kube.namespace, "paced-run")
            await asyncio.sleep(0.1)
        await orchestrator.quiesce()
        assert len(orchestrator.advances) == 2, orchestrator.advances
        assert orchestrator.advances[1][0] - first_ended >= pace - 0.05
    finally:
        await orchestrator.advance(row.id, Control(cancel=True))
        await orchestrator.quiesce()
        api.close()
