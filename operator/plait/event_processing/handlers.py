"""How EventDefinitions are persisted: versioned, keyed by name, indexed by event type."""

from __future__ import annotations

import uuid

from plait.event_processing import repository
from plait.resources import EVENT_DEFINITION
from plait.resources.common import PlaitModel
from plait.resources.event import EventDefinitionSpec
from plait.resources.stores import Applied, KindBinding, ObjectRef, OperatorContext

__all__ = ["BINDINGS", "EventDefinitionStore"]

COMPONENT = "event_processing"


class EventDefinitionStore:
    async def apply(self, ctx: OperatorContext, ref: ObjectRef, spec: PlaitModel) -> Applied:
        assert isinstance(spec, EventDefinitionSpec)
        document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        async with ctx.db.connection(COMPONENT) as conn:
            definition, _ = await repository.upsert_event_definition(
                conn, ref.namespace, ref.name, spec.type, document, k8s_uid=uuid.UUID(ref.uid)
            )
        return Applied.version(definition.version)

    async def delete(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        async with ctx.db.connection(COMPONENT) as conn:
            await repository.delete_event_definition(conn, ref.namespace, ref.name)


BINDINGS = (KindBinding(EVENT_DEFINITION, EventDefinitionStore()),)
