"""SQL of the web application: versioned dashboard components."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

from plait.kernel import versions
from plait.web_application.states import UiComponentKind

__all__ = [
    "UiComponent",
    "delete_ui_component",
    "get_ui_component_version",
    "latest_ui_component",
    "list_ui_components",
    "ui_component_versions",
    "upsert_ui_component",
]

SCHEMA = "web_application_service"


@dataclass(frozen=True, slots=True)
class UiComponent:
    id: uuid.UUID
    name: str
    version: int
    kind: UiComponentKind
    spec: dict[str, Any]
    spec_hash: str
    created_at: datetime
    deleted_at: datetime | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", UiComponentKind(self.kind))


async def upsert_ui_component(
    conn: AsyncConnection[Any], name: str, kind: UiComponentKind, spec: Mapping[str, Any]
) -> tuple[UiComponent, bool]:
    return await versions.upsert_version(
        conn, UiComponent, SCHEMA, "ui_components", {"name": name}, spec, {"kind": kind.value}
    )


async def latest_ui_component(conn: AsyncConnection[Any], name: str) -> UiComponent | None:
    return await versions.latest_version(conn, UiComponent, SCHEMA, "ui_components", {"name": name})


async def get_ui_component_version(
    conn: AsyncConnection[Any], name: str, version: int
) -> UiComponent | None:
    """An older version, e.g. to roll a dashboard change back by re-storing its spec."""
    return await versions.get_version(
        conn, UiComponent, SCHEMA, "ui_components", {"name": name}, version
    )


async def list_ui_components(conn: AsyncConnection[Any]) -> list[UiComponent]:
    """The latest live version of every component, by name."""
    async with conn.cursor(row_factory=class_row(UiComponent)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (name) * FROM web_application_service.ui_components "
            "WHERE deleted_at IS NULL ORDER BY name, version DESC"
        )
        return await cur.fetchall()


async def delete_ui_component(conn: AsyncConnection[Any], name: str) -> int:
    return await versions.mark_deleted(conn, SCHEMA, "ui_components", {"name": name})


async def ui_component_versions(conn: AsyncConnection[Any], name: str) -> list[UiComponent]:
    """Every version of one component, newest first (deleted ones too)."""
    async with conn.cursor(row_factory=class_row(UiComponent)) as cur:
        await cur.execute(
            "SELECT * FROM web_application_service.ui_components WHERE name = %s "
            "ORDER BY version DESC",
            (name,),
        )
        return await cur.fetchall()
