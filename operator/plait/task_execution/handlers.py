"""How TaskDefinitions are persisted: every accepted spec an immutable version."""

from __future__ import annotations

import uuid

from plait.resources import TASK_DEFINITION
from plait.resources.common import PlaitModel
from plait.resources.stores import Applied, KindBinding, ObjectRef, OperatorContext
from plait.task_execution import repository

__all__ = ["BINDINGS", "TaskDefinitionStore"]

COMPONENT = "task_execution"


class TaskDefinitionStore:
    async def apply(self, ctx: OperatorContext, ref: ObjectRef, spec: PlaitModel) -> Applied:
        document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        async with ctx.db.connection(COMPONENT) as conn:
            definition, _ = await repository.upsert_task_definition(
                conn, ref.namespace, ref.name, document, k8s_uid=uuid.UUID(ref.uid)
            )
        return Applied.version(definition.version)

    async def delete(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        async with ctx.db.connection(COMPONENT) as conn:
            await repository.delete_task_definition(conn, ref.namespace, ref.name)


BINDINGS = (KindBinding(TASK_DEFINITION, TaskDefinitionStore()),)
