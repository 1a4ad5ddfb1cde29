"""How WorkflowTests are persisted: every accepted spec an immutable version, the one a
run of the test runs (:mod:`plait.testing_framework.cluster`)."""

from __future__ import annotations

import uuid

from plait.resources import WORKFLOW_TEST
from plait.resources.common import PlaitModel
from plait.resources.stores import Applied, KindBinding, ObjectRef, OperatorContext
from plait.resources.test import WorkflowTestSpec
from plait.testing_framework import repository

__all__ = ["BINDINGS", "WorkflowTestStore"]

COMPONENT = "testing_framework"


class WorkflowTestStore:
    async def apply(self, ctx: OperatorContext, ref: ObjectRef, spec: PlaitModel) -> Applied:
        assert isinstance(spec, WorkflowTestSpec)
        document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        async with ctx.db.connection(COMPONENT) as conn:
            definition, _ = await repository.upsert_test_definition(
                conn,
                ref.namespace,
                ref.name,
                workflow_name=spec.workflow_ref.name,
                spec=document,
                k8s_uid=uuid.UUID(ref.uid),
            )
        return Applied.version(definition.version, in_status=False)

    async def delete(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        async with ctx.db.connection(COMPONENT) as conn:
            await repository.delete_test_definition(conn, ref.namespace, ref.name)


BINDINGS = (KindBinding(WORKFLOW_TEST, WorkflowTestStore()),)
