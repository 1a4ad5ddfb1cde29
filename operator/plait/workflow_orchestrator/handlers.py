"""How WorkflowDefinitions, WorkflowInstances and EventTriggers are persisted.

The reconciler (:mod:`plait.controller.reconcile`) validates and calls these stores;
they only translate a typed spec into repository calls.
"""

from __future__ import annotations

import uuid

import kopf

from plait.controller.reconcile import Applied, KindBinding, ObjectRef
from plait.kernel.database import Database
from plait.resources import EVENT_TRIGGER, WORKFLOW_DEFINITION, WORKFLOW_INSTANCE
from plait.resources.common import PlaitModel
from plait.resources.trigger import EventTriggerSpec
from plait.resources.workflow import WorkflowDefinitionSpec, WorkflowInstanceSpec
from plait.workflow_orchestrator import repository
from plait.workflow_orchestrator.states import FINAL_PHASES, WorkflowPhase

__all__ = ["BINDINGS", "EventTriggerStore", "WorkflowDefinitionStore", "WorkflowInstanceStore"]

COMPONENT = "workflow_orchestrator"


def spec_document(spec: PlaitModel) -> dict[str, object]:
    """The canonical JSON form of a spec: what is stored and hashed."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


class WorkflowDefinitionStore:
    """Every accepted spec becomes an immutable version; unchanged specs write nothing."""

    async def apply(self, db: Database, ref: ObjectRef, spec: PlaitModel) -> Applied:
        assert isinstance(spec, WorkflowDefinitionSpec)
        async with db.connection(COMPONENT) as conn:
            definition, _ = await repository.upsert_workflow_definition(
                conn, ref.namespace, ref.name, spec_document(spec), k8s_uid=uuid.UUID(ref.uid)
            )
        return Applied.version(definition.version)

    async def delete(self, db: Database, ref: ObjectRef) -> None:
        async with db.connection(COMPONENT) as conn:
            await repository.delete_workflow_definition(conn, ref.namespace, ref.name)


class WorkflowInstanceStore:
    """Records a run against the exact definition version it will execute."""

    async def apply(self, db: Database, ref: ObjectRef, spec: PlaitModel) -> Applied:
        assert isinstance(spec, WorkflowInstanceSpec)
        workflow = spec.workflow_ref
        async with db.connection(COMPONENT) as conn:
            existing = await repository.get_workflow_instance(conn, uuid.UUID(ref.uid))
            if existing is None:
                if workflow.version is not None:
                    definition = await repository.get_workflow_definition(
                        conn, ref.namespace, workflow.name, workflow.version
                    )
                else:
                    definition = await repository.latest_workflow_definition(
                        conn, ref.namespace, workflow.name
                    )
                if definition is None or definition.deleted_at is not None:
                    # The definition's own reconciliation may simply not have run yet.
                    raise kopf.TemporaryError(
                        f"WorkflowDefinition {workflow.name!r}"
                        + (f" version {workflow.version}" if workflow.version else "")
                        + " is not stored yet",
                        delay=2,
                    )
                existing, _ = await repository.create_workflow_instance(
                    conn,
                    id=uuid.UUID(ref.uid),
                    namespace=ref.namespace,
                    name=ref.name,
                    workflow_name=definition.name,
                    workflow_version=definition.version,
                    inputs=spec.arguments or {},
                )
            definition = await repository.get_workflow_definition(
                conn, ref.namespace, existing.workflow_name, existing.workflow_version
            )
        total = len((definition.spec if definition else {}).get("tasks", []))
        phase = existing.phase
        status: dict[str, object] = {
            "phase": phase.value,
            "definitionVersion": existing.workflow_version,
        }
        if phase is WorkflowPhase.PENDING:
            status["progress"] = f"0/{total}"
            status["counts"] = {"total": total, "pending": total}
        if phase in FINAL_PHASES:
            succeeded = phase is WorkflowPhase.SUCCEEDED
            return Applied(
                reason=phase.value,
                message=existing.message or f"the workflow {phase.value.lower()}",
                status=status,
                condition_status="True" if succeeded else "False",
            )
        return Applied(
            reason=phase.value,
            message=existing.message
            or f"runs {existing.workflow_name} version {existing.workflow_version}",
            status=status,
            condition_status="Unknown",
        )

    async def delete(self, db: Database, ref: ObjectRef) -> None:
        async with db.connection(COMPONENT) as conn:
            await repository.set_workflow_phase(
                conn,
                uuid.UUID(ref.uid),
                WorkflowPhase.CANCELLED,
                message="the WorkflowInstance was deleted",
            )


class EventTriggerStore:
    """The trigger's current spec, ready for the dispatcher and the cron scheduler."""

    async def apply(self, db: Database, ref: ObjectRef, spec: PlaitModel) -> Applied:
        assert isinstance(spec, EventTriggerSpec)
        async with db.connection(COMPONENT) as conn:
            trigger, _ = await repository.upsert_event_trigger(
                conn,
                namespace=ref.namespace,
                name=ref.name,
                spec=spec_document(spec),
                k8s_uid=uuid.UUID(ref.uid),
            )
        what = (
            f"events of type {trigger.event_type}"
            if trigger.event_type
            else (f"schedule {trigger.schedule}")
        )
        state = "suspended" if not trigger.enabled else "active"
        return Applied(
            reason="Suspended" if not trigger.enabled else "Accepted",
            message=f"{state}: starts {trigger.workflow_name} on {what}",
        )

    async def delete(self, db: Database, ref: ObjectRef) -> None:
        async with db.connection(COMPONENT) as conn:
            await repository.delete_event_trigger(conn, ref.namespace, ref.name)


BINDINGS = (
    KindBinding(WORKFLOW_DEFINITION, WorkflowDefinitionStore()),
    KindBinding(EVENT_TRIGGER, EventTriggerStore(), admit_missing_references=True),
    KindBinding(
        WORKFLOW_INSTANCE,
        WorkflowInstanceStore(),
        condition_type="Succeeded",
        rejected_status={"phase": "Failed"},
    ),
)
