"""Connection pools, one per component, and the keyset-pagination cursor every list uses.

Each component gets its own :class:`psycopg_pool.AsyncConnectionPool` on its own DSN
(``PLAIT_DATABASE_URL_<COMPONENT>`` or the shared one). When the DSNs log in as a shared
user, ``as_component_roles=True`` makes every connection ``SET ROLE`` to the component's
role, so a component's queries run with its rights alone even in a one-login deployment.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from plait.errors import ConfigurationError, ValidationError
from plait.kernel.components import COMPONENTS, Component, component_by_name
from plait.kernel.config import Settings

__all__ = ["MAX_PAGE_SIZE", "Database", "Page", "decode_cursor", "encode_cursor", "fetch_page"]

T = TypeVar("T")
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paginated list; pass ``next_cursor`` back for the next one."""

    items: list[T]
    next_cursor: str | None = field(default=None)


def encode_cursor(created_at: datetime, id_: uuid.UUID) -> str:
    """Opaque cursor for the row after which the next page starts."""
    raw = json.dumps([created_at.isoformat(), str(id_)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Inverse of :func:`encode_cursor`; a cursor that was not made by it is a ValidationError."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, id_ = json.loads(raw)
        return datetime.fromisoformat(created_at), uuid.UUID(id_)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValidationError(f"invalid page cursor {cursor[:40]!r}") from exc


async def fetch_page(
    conn: AsyncConnection[Any],
    row_type: type[T],
    table: sql.Composable,
    filters: Mapping[str, Any],
    *,
    limit: int = 50,
    cursor: str | None = None,
    time_column: str = "created_at",
) -> Page[T]:
    """Newest-first keyset page of ``table``: ``WHERE (time, id) < cursor``, never OFFSET.

    Needs an index on (filter columns..., time DESC, id DESC) to be a pure index range scan.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError(f"page size must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    conditions: list[sql.Composable] = [
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(f"f_{k}")) for k in filters
    ]
    params: dict[str, Any] = {f"f_{k}": v for k, v in filters.items()}
    if cursor is not None:
        params["c_time"], params["c_id"] = decode_cursor(cursor)
        conditions.append(
            sql.SQL("({}, id) < (%(c_time)s, %(c_id)s)").format(sql.Identifier(time_column))
        )
    query = sql.SQL(
        "SELECT * FROM {table} WHERE {where} ORDER BY {time} DESC, id DESC LIMIT {limit}"
    ).format(
        table=table,
        where=sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"),
        time=sql.Identifier(time_column),
        limit=sql.Literal(limit + 1),
    )
    async with conn.cursor(row_factory=class_row(row_type)) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    if len(rows) <= limit:
        return Page(rows)
    last = rows[limit - 1]
    return Page(rows[:limit], encode_cursor(getattr(last, time_column), last.id))  # type: ignore[attr-defined]


class Database:
    """The pools of a process, keyed by component name. Use as ``async with``."""

    def __init__(self, pools: Mapping[str, AsyncConnectionPool[AsyncConnection[Any]]]) -> None:
        self._pools = dict(pools)
        self._checking: set[str] = set()

    @classmethod
    async def open(
        cls,
        settings: Settings,
        components: Iterable[Component] = COMPONENTS,
        *,
        as_component_roles: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Database:
        """Open (and wait for) one pool per component."""
        pools: dict[str, AsyncConnectionPool[AsyncConnection[Any]]] = {}
        try:
            for component in components:
                pool = AsyncConnectionPool(
                    settings.database_url_for(component, environ),
                    min_size=settings.database_pool_min,
                    max_size=max(settings.database_pool_max, settings.database_pool_min),
                    configure=_set_role(component.role) if as_component_roles else None,
                    name=f"plait-{component.name}",
                    open=False,
                )
                pools[component.name] = pool
                await pool.open(wait=settings.database_pool_min > 0, timeout=30)
        except BaseException:
            for pool in pools.values():
                await pool.close()
            raise
        return cls(pools)

    def pool(self, component: str | Component) -> AsyncConnectionPool[AsyncConnection[Any]]:
        name = component.name if isinstance(component, Component) else component
        try:
            return self._pools[component_by_name(name).name]
        except KeyError:
            raise ConfigurationError(f"no database pool open for component {name!r}") from None

    @asynccontextmanager
    async def connection(self, component: str | Component) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection of ``component`` (committed on success, rolled back on error).

        A connection that turns out broken (PostgreSQL restarted, a failover) makes the
        pool check its other idle connections in the background, so the next callers get
        live ones instead of failing one stale connection at a time.
        """
        pool = self.pool(component)
        try:
            async with pool.connection() as conn:
                yield conn
        except psycopg.OperationalError:
            if pool.name not in self._checking:
                self._checking.add(pool.name)
                task = asyncio.ensure_future(self._check(pool))
                task.add_done_callback(lambda _: self._checking.discard(pool.name))
            raise

    @staticmethod
    async def _check(pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        with contextlib.suppress(Exception):
            await pool.check()

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _set_role(role: str) -> Any:
    async def configure(conn: AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        await conn.commit()

    return configure
