"""Immutable, versioned definitions: the one write pattern shared by every definition table.

A definition table has a key (``namespace, name`` or just ``name``), ``version``, ``spec``,
``spec_hash``, ``created_at`` and ``deleted_at``. Storing a spec adds version n+1 unless the
latest live version already has the same hash, in a single statement; the unique key
(key..., version) settles races between replicas (the loser re-reads and, if the winner
stored a different spec, tries again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from plait.errors import DatabaseError

__all__ = [
    "canonical_json",
    "get_version",
    "latest_version",
    "mark_deleted",
    "spec_hash",
    "upsert_version",
]

T = TypeVar("T")
_MAX_RACES = 5


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal documents give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``spec``."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def _table(schema: str, table: str) -> sql.Composed:
    return sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(table)])


def _match(key: Mapping[str, Any]) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(f"key_{k}")) for k in key
    )


def _key_params(key: Mapping[str, Any]) -> dict[str, Any]:
    return {f"key_{k}": v for k, v in key.items()}


async def upsert_version(
    conn: AsyncConnection[Any],
    row_type: type[T],
    schema: str,
    table: str,
    key: Mapping[str, Any],
    spec: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> tuple[T, bool]:
    """Store ``spec`` as the next version unless it is already the latest; (row, created)."""
    extra = dict(extra or {})
    digest = spec_hash(spec)
    columns = [*key, *extra, "version", "spec", "spec_hash"]
    values: list[sql.Composable] = [sql.Placeholder(f"key_{k}") for k in key]
    values += [sql.Placeholder(f"extra_{k}") for k in extra]
    values += [
        sql.SQL("coalesce((SELECT version FROM latest), 0) + 1"),
        sql.Placeholder("spec"),
        sql.Placeholder("spec_hash"),
    ]
    query = sql.SQL(
        "WITH latest AS (SELECT version, spec_hash, deleted_at FROM {table} WHERE {match} "
        "ORDER BY version DESC LIMIT 1) "
        "INSERT INTO {table} ({columns}) SELECT {values} "
        "WHERE NOT EXISTS (SELECT FROM latest WHERE spec_hash = {hash} AND deleted_at IS NULL) "
        "ON CONFLICT DO NOTHING RETURNING *"
    ).format(
        table=_table(schema, table),
        match=_match(key),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(values),
        hash=sql.Placeholder("spec_hash"),
    )
    params: dict[str, Any] = {
        **_key_params(key),
        **{f"extra_{k}": Jsonb(v) if isinstance(v, dict) else v for k, v in extra.items()},
        "spec": Jsonb(dict(spec)),
        "spec_hash": digest,
    }
    for _ in range(_MAX_RACES):
        async with conn.cursor(row_factory=class_row(row_type)) as cur:
            await cur.execute(query, params)
            created = await cur.fetchone()
        if created is not None:
            return created, True
        latest = await latest_version(conn, row_type, schema, table, key)
        if latest is not None and getattr(latest, "spec_hash", None) == digest:
            return latest, False
    raise DatabaseError(  # pragma: no cover - needs 5 lost races in a row
        f"could not store a new version of {schema}.{table} {dict(key)}: concurrent writers kept "
        "winning; retry later"
    )


async def latest_version(
    conn: AsyncConnection[Any],
    row_type: type[T],
    schema: str,
    table: str,
    key: Mapping[str, Any],
) -> T | None:
    """The newest live (not deleted) version, or None."""
    query = sql.SQL(
        "SELECT * FROM {table} WHERE {match} AND deleted_at IS NULL ORDER BY version DESC LIMIT 1"
    ).format(table=_table(schema, table), match=_match(key))
    async with conn.cursor(row_factory=class_row(row_type)) as cur:
        await cur.execute(query, _key_params(key))
        return await cur.fetchone()


async def get_version(
    conn: AsyncConnection[Any],
    row_type: type[T],
    schema: str,
    table: str,
    key: Mapping[str, Any],
    version: int,
) -> T | None:
    """One exact version, deleted or not (instances keep pointing at what they ran)."""
    query = sql.SQL("SELECT * FROM {table} WHERE {match} AND version = %(version)s").format(
        table=_table(schema, table), match=_match(key)
    )
    async with conn.cursor(row_factory=class_row(row_type)) as cur:
        await cur.execute(query, {**_key_params(key), "version": version})
        return await cur.fetchone()


async def mark_deleted(
    conn: AsyncConnection[Any], schema: str, table: str, key: Mapping[str, Any]
) -> int:
    """Soft-delete every live version; returns how many rows were marked."""
    query = sql.SQL(
        "UPDATE {table} SET deleted_at = now() WHERE {match} AND deleted_at IS NULL"
    ).format(table=_table(schema, table), match=_match(key))
    cur = await conn.execute(query, _key_params(key))
    return cur.rowcount
