"""How WorkflowDefinitions, WorkflowInstances and EventTriggers are persisted.

The operator's reconciler validates and calls these stores;
they only translate a typed spec into repository calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection

from plait.observability.tracing import TRACEPARENT_ANNOTATION
from plait.resources import EVENT_TRIGGER, WORKFLOW_DEFINITION, WORKFLOW_INSTANCE
from plait.resources.common import PlaitModel
from plait.resources.stores import (
    Applied,
    KindBinding,
    ObjectRef,
    OperatorContext,
    ReferenceNotStored,
)
from plait.resources.trigger import EventTriggerSpec
from plait.resources.workflow import WorkflowDefinitionSpec, WorkflowInstanceSpec
from plait.workflow_orchestrator import gate, repository
from plait.workflow_orchestrator.repository import WorkflowInstance
from plait.workflow_orchestrator.runtime import (
    FINAL_VALUES,
    PARENT_ANNOTATION,
    Control,
    Orchestrator,
    succeeded_condition,
)
from plait.workflow_orchestrator.triggers import EVENT_ANNOTATION, TRIGGER_ANNOTATION

__all__ = [
    "EventTriggerStore",
    "WorkflowDefinitionStore",
    "WorkflowInstanceStore",
    "bindings",
]

COMPONENT = "workflow_orchestrator"


def spec_document(spec: PlaitModel) -> dict[str, object]:
    """The canonical JSON form of a spec: what is stored and hashed."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


class WorkflowDefinitionStore:
    """Every accepted spec becomes an immutable version; unchanged specs write nothing."""

    async def apply(self, ctx: OperatorContext, ref: ObjectRef, spec: PlaitModel) -> Applied:
        assert isinstance(spec, WorkflowDefinitionSpec)
        async with ctx.db.connection(COMPONENT) as conn:
            definition, created = await repository.upsert_workflow_definition(
                conn, ref.namespace, ref.name, spec_document(spec), k8s_uid=uuid.UUID(ref.uid)
            )
            if created and spec.test_gate:
                await gate.open_gate(conn, definition)
            tested, current = await gate.condition(
                conn, ref.namespace, ref.name, generation=ref.generation
            )
        stored = Applied.version(definition.version)
        return Applied(
            reason=stored.reason,
            message=stored.message,
            status={**stored.status, "currentVersion": current},
            conditions=(tested,) if tested is not None else (),
        )

    async def delete(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        async with ctx.db.connection(COMPONENT) as conn:
            await repository.delete_workflow_definition(conn, ref.namespace, ref.name)


class WorkflowInstanceStore:
    """Records a run against the exact definition version it runs, then runs it."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    async def apply(self, ctx: OperatorContext, ref: ObjectRef, spec: PlaitModel) -> Applied:
        assert isinstance(spec, WorkflowInstanceSpec)
        uid = uuid.UUID(ref.uid)
        workflow = spec.workflow_ref
        recorded: WorkflowInstance | None = None  # inserted now: it has no attempts yet
        async with ctx.db.connection(COMPONENT) as conn:
            existing = await repository.get_workflow_instance(conn, uid)
            if existing is not None:
                if existing.labels != ref.labels:
                    await repository.set_instance_labels(conn, uid, ref.labels)
                    self.orchestrator.records_changed(uid)
            else:
                if workflow.version is not None:
                    definition = await repository.get_workflow_definition(
                        conn, ref.namespace, workflow.name, workflow.version
                    )
                else:
                    # The newest version its test gate lets new runs use.
                    definition = await gate.current_definition(conn, ref.namespace, workflow.name)
                if definition is None or definition.deleted_at is not None:
                    gated = (
                        await gate.unusable_reason(conn, ref.namespace, workflow.name)
                        if workflow.version is None
                        else None
                    )
                    # The definition (or the version the run is pinned to) may simply not
                    # be applied or reconciled yet, or its only versions wait for their
                    # tests: the run waits for it.
                    raise ReferenceNotStored(
                        f"spec.workflowRef: WorkflowDefinition {workflow.name!r}"
                        + (f" version {workflow.version}" if workflow.version else "")
                        + (f" has no version new runs may use yet: {gated}" if gated else
                           " is not stored yet")
                    )  # fmt: skip
                trigger_id, event_id = _started_by(ref)
                if trigger_id is not None and not await _trigger_exists(conn, trigger_id):
                    trigger_id = event_id = None  # a copied annotation: not ours to trust
                instance, created = await repository.create_workflow_instance(
                    conn,
                    id=uid,
                    namespace=ref.namespace,
                    name=ref.name,
                    workflow_name=definition.name,
                    workflow_version=definition.version,
                    inputs=spec.arguments or {},
                    trigger_id=trigger_id,
                    event_id=event_id,
                    parent_id=await _parent(conn, ref),
                    mocks=spec.mocks or None,
                    labels=ref.labels,
                )
                recorded = instance if created else None
        summary = await self.orchestrator.advance(
            uid,
            Control(
                cancel=spec.cancel,
                suspend=spec.suspend,
                retry=spec.retry,
                traceparent=ref.annotations.get(TRACEPARENT_ANNOTATION),
                bypass_cache=spec.bypass_cache,
                priority=spec.priority,
            ),
            ensure_jobs=True,
            recorded=recorded,
        )
        assert summary is not None  # the row exists: it was just made sure of
        await self.orchestrator.publish(uid, ref.namespace, ref.name, generation=ref.generation)
        condition = succeeded_condition(summary.status(), ref.generation)
        return Applied(
            reason=condition.reason,
            message=condition.message,
            condition_status=condition.status,
            published=True,
        )

    def saw(self, obj: Mapping[str, Any]) -> None:
        """A version of a run's object: its next status write starts from it."""
        self.orchestrator.saw(obj)

    def gone(self, uid: str) -> None:
        self.orchestrator.forget_object(uuid.UUID(uid))

    def settled(self, obj: Mapping[str, Any]) -> bool:
        status = obj.get("status") or {}
        return status.get("phase") in FINAL_VALUES and status.get("observedGeneration") == (
            obj.get("metadata") or {}
        ).get("generation")

    async def relabel(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        """The object's labels changed (nothing else did): the run's row keeps them, so the
        run list's label filter sees what ``kubectl get -l`` sees. A run not recorded yet
        gets them when it is."""
        async with ctx.db.connection(COMPONENT) as conn:
            await repository.set_instance_labels(conn, uuid.UUID(ref.uid), ref.labels)
        self.orchestrator.records_changed(uuid.UUID(ref.uid))

    async def delete(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        """Deleting a run cancels it; its rows stay as history."""
        await self.orchestrator.advance(uuid.UUID(ref.uid), Control(cancel=True))


def _started_by(ref: ObjectRef) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """The trigger (and event) that started this run, from the annotations it was
    created with; malformed values (someone else's object) count as none."""
    try:
        trigger = ref.annotations.get(TRIGGER_ANNOTATION)
        event = ref.annotations.get(EVENT_ANNOTATION)
        trigger_id = uuid.UUID(trigger) if trigger else None
        event_id = uuid.UUID(event) if event and trigger_id else None
    except ValueError:
        return None, None
    return trigger_id, event_id


async def _parent(conn: AsyncConnection[Any], ref: ObjectRef) -> uuid.UUID | None:
    """The run whose task started this one (its ``plait.dev/parent-uid`` annotation),
    when that run exists; none for one that names no run of this namespace."""
    label = ref.annotations.get(PARENT_ANNOTATION)
    try:
        parent_id = uuid.UUID(label) if label else None
    except ValueError:
        return None
    if parent_id is None:
        return None
    parent = await repository.get_workflow_instance(conn, parent_id)
    return parent_id if parent is not None and parent.namespace == ref.namespace else None


async def _trigger_exists(conn: AsyncConnection[Any], id: uuid.UUID) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM workflow_orchestrator_service.workflow_event_triggers WHERE id = %s",
        (id,),
    )
    return await cur.fetchone() is not None


class EventTriggerStore:
    """The trigger's current spec, ready for the dispatcher and the cron scheduler."""

    async def apply(self, ctx: OperatorContext, ref: ObjectRef, spec: PlaitModel) -> Applied:
        assert isinstance(spec, EventTriggerSpec)
        async with ctx.db.connection(COMPONENT) as conn:
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

    async def delete(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        async with ctx.db.connection(COMPONENT) as conn:
            await repository.delete_event_trigger(conn, ref.namespace, ref.name)


def bindings(orchestrator: Orchestrator) -> tuple[KindBinding, ...]:
    """The component's kinds; runs are driven by ``orchestrator``."""
    return (
        KindBinding(WORKFLOW_DEFINITION, WorkflowDefinitionStore()),
        KindBinding(EVENT_TRIGGER, EventTriggerStore()),
        KindBinding(
            WORKFLOW_INSTANCE,
            WorkflowInstanceStore(orchestrator),
            condition_type="Succeeded",
            rejected_status={"phase": "Failed"},
            waiting_status={"phase": "Pending"},
            waiting_condition="Unknown",
            followed=True,
            sharing=orchestrator.ownership,
        ),
    )
