"""Panels as data: a chart or a table over one of the observability views (or a metric's
snapshots), declared as a versioned ``ui_components`` row and drawn on the overview.

A panel never carries SQL: it names an allow-listed view and its columns, and the query is
built here from identifiers checked against the view's real columns. Rows are limited to
the namespaces the viewer may read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from psycopg import AsyncConnection, sql
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from plait.errors import ValidationError

__all__ = ["VIEWS", "PageSpec", "PanelData", "PanelSpec", "panel_data", "validate_spec"]

#: The observability views a panel may read (``observability_service``), and whether
#: their rows belong to a namespace.
VIEWS = {
    "workflow_runs": True,
    "task_attempts": True,
    "slowest_task_attempts": True,
    "slowest_tasks": True,
    "workflow_failure_rates": True,
    "task_failure_rates": True,
    "task_overhead": True,
}
#: Metrics whose snapshots a panel may chart.
METRICS = ("plait_event_queue_depth", "plait_event_queue_lag_seconds")
Column = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class TimeSeries(_Model):
    """Rows counted (or a column averaged) per time bucket, over a recent window."""

    time: Column = "end_time"
    bucket: Literal["minute", "hour", "day"] = "minute"
    window_minutes: Annotated[int, Field(alias="windowMinutes", ge=1, le=43200)] = 60
    #: A column whose values are separate series (e.g. ``outcome``).
    series: Column | None = None
    #: Average this column instead of counting rows.
    average: Column | None = None


class Layout(_Model):
    order: Annotated[int, Field(ge=-1000, le=1000)] = 100
    width: Literal[1, 2] = 1


class PanelSpec(_Model):
    """The spec of a ``chart`` or ``table`` component."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    view: str | None = None
    metric: str | None = None
    columns: Annotated[list[Column], Field(max_length=12)] = []
    order_by: Column | None = Field(None, alias="orderBy")
    descending: bool = True
    limit: Annotated[int, Field(ge=1, le=100)] = 10
    time_series: TimeSeries | None = Field(None, alias="timeSeries")
    #: A chart's bars: label column and value column (without timeSeries).
    x: Column | None = None
    y: Column | None = None
    layout: Layout = Layout()

    @model_validator(mode="after")
    def _source(self) -> PanelSpec:
        if (self.view is None) == (self.metric is None):
            raise ValueError("a panel reads exactly one of view and metric")
        if self.view is not None and self.view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(sorted(VIEWS))}")
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}")
        return self


class PageSpec(_Model):
    """The spec of a ``page`` component: its title and the panels it shows first."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    panels: Annotated[list[str], Field(max_length=50)] = []


def validate_spec(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as stored (aliases, defaults dropped), or a :class:`ValidationError`."""
    model: type[_Model] = PageSpec if kind == "page" else PanelSpec
    if kind not in ("page", "chart", "table"):
        raise ValidationError(f"kind must be page, chart or table, got {kind[:20]!r}")
    try:
        parsed = model.model_validate(spec)
    except ValueError as exc:
        raise ValidationError(f"invalid {kind} spec: {exc}") from None
    dumped: dict[str, Any] = parsed.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    if (
        kind == "chart"
        and isinstance(parsed, PanelSpec)
        and parsed.time_series is None
        and parsed.metric is None
        and (parsed.x is None or parsed.y is None)
    ):
        raise ValidationError("a chart needs timeSeries, or x and y")
    return dumped


@dataclass(frozen=True, slots=True)
class PanelData:
    """What a panel draws: column names and rows (tables, bar charts) or series of
    (bucket, value) points (time series)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    series: dict[str, list[tuple[dt.datetime, float]]]


async def _columns(conn: AsyncConnection[Any], view: str) -> set[str]:
    cur = await conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'observability_service' AND table_name = %s",
        (view,),
    )
    return {row[0] for row in await cur.fetchall()}


async def panel_data(
    conn: AsyncConnection[Any], spec: PanelSpec, namespaces: list[str] | None
) -> PanelData:
    """Run the panel's query; ``namespaces`` None: every namespace."""
    if spec.metric is not None:
        return await _metric(conn, spec)
    assert spec.view is not None
    known = await _columns(conn, spec.view)
    wanted = [
        c
        for c in [
            *spec.columns,
            spec.order_by,
            spec.x,
            spec.y,
            *(
                [spec.time_series.time, spec.time_series.series, spec.time_series.average]
                if spec.time_series
                else []
            ),
        ]
        if c
    ]
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ValidationError(f"{spec.view} has no column {', '.join(unknown)}")
    view = sql.Identifier("observability_service", spec.view)
    where: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": spec.limit}
    if namespaces is not None and VIEWS[spec.view]:
        where.append(sql.SQL("namespace = ANY(%(namespaces)s)"))
        params["namespaces"] = namespaces
    if spec.time_series is not None:
        ts = spec.time_series
        where.append(
            sql.SQL("{} > now() - %(window)s * interval '1 minute'").format(sql.Identifier(ts.time))
        )
        params["window"] = ts.window_minutes
        value = (
            sql.SQL("avg({})::double precision").format(sql.Identifier(ts.average))
            if ts.average
            else sql.SQL("count(*)::double precision")
        )
        series = sql.Identifier(ts.series) if ts.series else sql.SQL("''")
        query = sql.SQL(
            "SELECT coalesce({series}::text, '') AS s, date_trunc(%(bucket)s, {time}) AS b, "
            "{value} FROM {view} WHERE {where} GROUP BY 1, 2 ORDER BY 2"
        ).format(
            series=series,
            time=sql.Identifier(ts.time),
            value=value,
            view=view,
            where=sql.SQL(" AND ").join(where),
        )
        params["bucket"] = ts.bucket
        cur = await conn.execute(query, params)
        found: dict[str, list[tuple[dt.datetime, float]]] = {}
        for s, bucket, v in await cur.fetchall():
            found.setdefault(s or spec.title, []).append((bucket, float(v or 0)))
        return PanelData([], [], found)
    columns = spec.columns or [c for c in (spec.x, spec.y) if c] or sorted(known)[:6]
    order = (
        sql.SQL(" ORDER BY {} {} NULLS LAST").format(
            sql.Identifier(spec.order_by), sql.SQL("DESC" if spec.descending else "ASC")
        )
        if spec.order_by
        else sql.SQL("")
    )
    query = sql.SQL("SELECT {cols} FROM {view}{where}{order} LIMIT %(limit)s").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        view=view,
        where=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        order=order,
    )
    cur = await conn.execute(query, params)
    return PanelData(columns, [tuple(r) for r in await cur.fetchall()], {})


async def _metric(conn: AsyncConnection[Any], spec: PanelSpec) -> PanelData:
    window = spec.time_series.window_minutes if spec.time_series else 60
    cur = await conn.execute(
        "SELECT time, sum(value) FROM observability_service.observability_metrics "
        "WHERE name = %s AND time > now() - %s * interval '1 minute' GROUP BY time ORDER BY time",
        (spec.metric, window),
    )
    points = [(t, float(v or 0)) for t, v in await cur.fetchall()]
    return PanelData([], [], {spec.title: points})
