"""SQL of the integration component: the type catalog and versioned Integration resources."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

from plait.kernel import versions

__all__ = [
    "IntegrationDefinition",
    "IntegrationInstance",
    "delete_integration",
    "get_integration_type",
    "latest_integration",
    "list_integration_types",
    "record_health",
    "upsert_integration",
]

SCHEMA = "integration_service"


@dataclass(frozen=True, slots=True)
class IntegrationDefinition:
    id: uuid.UUID
    type: str
    display_name: str
    description: str
    settings_schema: dict[str, Any]
    secret_keys: list[str]
    builtin: bool
    created_at: datetime
    updated_at: datetime
    webhook_secret_key: str | None


@dataclass(frozen=True, slots=True)
class IntegrationInstance:
    id: uuid.UUID
    namespace: str
    name: str
    version: int
    integration_type: str
    settings: dict[str, Any]
    secret_name: str | None
    spec: dict[str, Any]
    spec_hash: str
    k8s_uid: uuid.UUID | None
    created_at: datetime
    deleted_at: datetime | None
    health_checked_at: datetime | None = None
    healthy: bool | None = None
    health_latency_seconds: float | None = None
    health_error: str | None = None


async def list_integration_types(conn: AsyncConnection[Any]) -> list[IntegrationDefinition]:
    async with conn.cursor(row_factory=class_row(IntegrationDefinition)) as cur:
        await cur.execute("SELECT * FROM integration_service.integration_definitions ORDER BY type")
        return await cur.fetchall()


async def get_integration_type(
    conn: AsyncConnection[Any], type_: str
) -> IntegrationDefinition | None:
    async with conn.cursor(row_factory=class_row(IntegrationDefinition)) as cur:
        await cur.execute(
            "SELECT * FROM integration_service.integration_definitions WHERE type = %s", (type_,)
        )
        return await cur.fetchone()


async def upsert_integration(
    conn: AsyncConnection[Any],
    namespace: str,
    name: str,
    *,
    integration_type: str,
    settings: Mapping[str, Any],
    secret_name: str | None,
    spec: Mapping[str, Any],
    k8s_uid: uuid.UUID | None = None,
) -> tuple[IntegrationInstance, bool]:
    """Store a new version of an Integration unless its spec is unchanged; (row, created)."""
    return await versions.upsert_version(
        conn,
        IntegrationInstance,
        SCHEMA,
        "integration_instances",
        {"namespace": namespace, "name": name},
        spec,
        {
            "integration_type": integration_type,
            "settings": dict(settings),
            "secret_name": secret_name,
            "k8s_uid": k8s_uid,
        },
    )


async def latest_integration(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> IntegrationInstance | None:
    return await versions.latest_version(
        conn,
        IntegrationInstance,
        SCHEMA,
        "integration_instances",
        {"namespace": namespace, "name": name},
    )


async def delete_integration(conn: AsyncConnection[Any], namespace: str, name: str) -> int:
    return await versions.mark_deleted(
        conn, SCHEMA, "integration_instances", {"namespace": namespace, "name": name}
    )


async def record_health(
    conn: AsyncConnection[Any],
    namespace: str,
    name: str,
    *,
    checked_at: datetime,
    healthy: bool,
    latency_seconds: float,
    error: str | None,
) -> bool:
    """Record a health check on the Integration's current version; False when it has none."""
    cursor = await conn.execute(
        """
        UPDATE integration_service.integration_instances
        SET health_checked_at = %s, healthy = %s, health_latency_seconds = %s,
            health_error = %s
        WHERE id = (
            SELECT id FROM integration_service.integration_instances
            WHERE namespace = %s AND name = %s AND deleted_at IS NULL
            ORDER BY version DESC LIMIT 1
        )
        """,
        (checked_at, healthy, latency_seconds, error, namespace, name),
    )
    return cursor.rowcount == 1
