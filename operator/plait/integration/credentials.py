"""What a task that lists an Integration receives, and the check that makes it well-defined.

A task gets an Integration's settings (non-secret, stored in PostgreSQL) and the names of
its Secret and keys. The values stay in the Secret: the Job names the Secret and its keys
in a projected volume and the kubelet mounts them, so building a Job never reads an
Integration's Secret (the operator reads an artifact repository's, see
task_execution.artifacts, and an Integration's own for its health check, see :mod:`.health`).
Which keys are mounted is the catalog type's ``secret_keys``: an Integration that maps a
key the type does not declare is refused before it is stored (:func:`secret_ref_problems`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from plait.integration import repository
from plait.kernel.database import Database
from plait.resources.integration import IntegrationSpec

__all__ = [
    "CatalogType",
    "IntegrationUnavailable",
    "SecretItem",
    "TaskIntegration",
    "for_task",
    "secret_ref_problems",
]

COMPONENT = "integration"


@dataclass(frozen=True)
class SecretItem:
    """One secret key of the type, and the key of the Secret that holds it."""

    type_key: str
    secret_key: str


@dataclass(frozen=True)
class TaskIntegration:
    """An Integration as a task's Job needs it: no secret value, only where they are."""

    name: str
    type: str
    settings: dict[str, Any]
    secret_name: str | None
    secret_items: tuple[SecretItem, ...]


class CatalogType(Protocol):
    """A catalog type as the check needs it: the built-in one in code (what admission
    checks) or its row in ``integration_definitions`` (what the reconciler reads)."""

    @property
    def type(self) -> str: ...

    @property
    def secret_keys(self) -> Sequence[str]: ...

    @property
    def webhook_secret_key(self) -> str | None: ...


class IntegrationUnavailable(Exception):
    """A task names an Integration that cannot be given to it (the message says why)."""


def secret_ref_problems(spec: IntegrationSpec, catalog_type: CatalogType) -> list[tuple[str, str]]:
    """(field path, message) for every key of ``secretRef`` the type does not declare
    (its secret keys and its webhook's signing key)."""
    ref = spec.secret_ref
    if ref is None:
        return []
    declared = list(catalog_type.secret_keys)
    if catalog_type.webhook_secret_key:
        declared.append(catalog_type.webhook_secret_key)
    if not declared:
        return [
            (
                "spec.secretRef",
                f"type {catalog_type.type!r} has no secret keys, so there is nothing to "
                "read from a Secret: remove secretRef",
            )
        ]
    return [
        (
            f"spec.secretRef.keys.{key}",
            f"{key!r} is not a secret key of type {catalog_type.type!r} "
            f"(its secret keys: {', '.join(declared)})",
        )
        for key in sorted(ref.keys or {})
        if key not in declared
    ]


def _secret_items(spec: IntegrationSpec, declared: Sequence[str]) -> tuple[SecretItem, ...]:
    renamed = (spec.secret_ref.keys if spec.secret_ref else None) or {}
    return tuple(SecretItem(key, renamed.get(key, key)) for key in declared)


async def for_task(db: Database, namespace: str, names: Sequence[str]) -> list[TaskIntegration]:
    """The current version of each named Integration, in the order given.

    Raises :class:`IntegrationUnavailable` for one that is not stored (missing, deleted,
    or refused: its Ready condition says why) or no longer fits its catalog type.
    """
    found: list[TaskIntegration] = []
    async with db.connection(COMPONENT) as conn:
        for name in names:
            row = await repository.latest_integration(conn, namespace, name)
            if row is None or row.deleted_at is not None:
                raise IntegrationUnavailable(
                    f"Integration {name!r} does not exist in namespace {namespace!r} "
                    "(or was refused: see its Ready condition)"
                )
            catalog_type = await repository.get_integration_type(conn, row.integration_type)
            if catalog_type is None:
                raise IntegrationUnavailable(
                    f"Integration {name!r}: type {row.integration_type!r} is not in the catalog"
                )
            spec = IntegrationSpec.model_validate(row.spec)
            problems = secret_ref_problems(spec, catalog_type)
            if problems:
                raise IntegrationUnavailable(
                    f"Integration {name!r}: " + "; ".join(f"{p}: {m}" for p, m in problems)
                )
            found.append(
                TaskIntegration(
                    name=name,
                    type=row.integration_type,
                    settings=dict(row.settings),
                    secret_name=row.secret_name,
                    secret_items=(
                        _secret_items(spec, catalog_type.secret_keys) if row.secret_name else ()
                    ),
                )
            )
    return found
