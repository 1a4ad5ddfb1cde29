"""Workflow-instance gauges for ``/metrics``, read from this component's own table."""

from __future__ import annotations

from plait.kernel.database import Database
from plait.observability.metrics import GaugeSample
from plait.workflow_orchestrator.states import FINAL_PHASES, WorkflowPhase

__all__ = ["instance_gauges"]

_ACTIVE = [phase.value for phase in WorkflowPhase if phase not in FINAL_PHASES]


async def instance_gauges(database: Database) -> list[GaugeSample]:
    """Unfinished runs by namespace and phase (the partial index of active runs answers
    it; finished runs are counted by plait_workflow_instances_finished_total)."""
    async with database.connection("workflow_orchestrator") as conn:
        rows = await (
            await conn.execute(
                "SELECT namespace, phase, count(*) "
                "FROM workflow_orchestrator_service.workflow_instances "
                "WHERE phase = ANY(%s) GROUP BY namespace, phase",
                (_ACTIVE,),
            )
        ).fetchall()
    return [
        GaugeSample("plait_workflow_instances", count, {"namespace": ns, "phase": phase})
        for ns, phase, count in rows
    ]
