"""How Integrations are persisted: non-secret settings and the Secret's name, never its data.

The type must be one of the catalog's (``integration_definitions``), the settings must
match that type's JSON Schema and ``secretRef`` may map only the type's secret keys;
anything else is reported on the object (Ready=False) and not stored.
"""

from __future__ import annotations

import uuid

from plait.integration import repository
from plait.integration.catalog import IntegrationType, settings_problems
from plait.integration.credentials import secret_ref_problems
from plait.resources import INTEGRATION
from plait.resources.common import PlaitModel
from plait.resources.integration import IntegrationSpec
from plait.resources.stores import Applied, KindBinding, ObjectRef, OperatorContext

__all__ = ["BINDINGS", "IntegrationStore"]

COMPONENT = "integration"


class IntegrationStore:
    async def apply(self, ctx: OperatorContext, ref: ObjectRef, spec: PlaitModel) -> Applied:
        assert isinstance(spec, IntegrationSpec)
        document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        async with ctx.db.connection(COMPONENT) as conn:
            catalog_type = await repository.get_integration_type(conn, spec.type)
            if catalog_type is None:
                known = ", ".join(t.type for t in await repository.list_integration_types(conn))
                return Applied(
                    reason="UnknownType",
                    message=f"spec.type: {spec.type!r} is not an integration type; "
                    f"known types: {known}",
                    condition_status="False",
                )
            kind = IntegrationType(
                catalog_type.type,
                catalog_type.settings_schema,
                tuple(catalog_type.secret_keys),
            )
            errors = settings_problems(kind, spec.settings or {})
            if errors:
                return Applied(
                    reason="InvalidSettings",
                    message="; ".join(f"{path}: {message}" for path, message in errors[:5]),
                    condition_status="False",
                )
            secret_problems = secret_ref_problems(spec, catalog_type)
            if secret_problems:
                return Applied(
                    reason="InvalidSecretRef",
                    message="; ".join(f"{path}: {message}" for path, message in secret_problems),
                    condition_status="False",
                )
            integration, _ = await repository.upsert_integration(
                conn,
                ref.namespace,
                ref.name,
                integration_type=spec.type,
                settings=spec.settings or {},
                secret_name=spec.secret_ref.name if spec.secret_ref else None,
                spec=document,
                k8s_uid=uuid.UUID(ref.uid),
            )
        return Applied.version(integration.version, in_status=False)

    async def delete(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        async with ctx.db.connection(COMPONENT) as conn:
            await repository.delete_integration(conn, ref.namespace, ref.name)


BINDINGS = (KindBinding(INTEGRATION, IntegrationStore()),)
