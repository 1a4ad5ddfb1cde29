"""What the dashboard's pages read: the run list (keyset pages, filters) and one run's
whole story (its definition's DAG, every attempt, logs and spans).

The run list reads the workflow_orchestrator's instances through that component's
connection, like its own ``list_workflow_instances`` does, but with the dashboard's
filters; everything else comes from the components' public repository functions.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
import uuid
import zoneinfo
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from plait.errors import ValidationError
from plait.event_processing.repository import EventInstance
from plait.integration.repository import IntegrationInstance
from plait.kernel.database import Database, decode_cursor, encode_cursor
from plait.observability.repository import (
    LogQuery,
    LogRecord,
    Span,
    find_traces,
    search_logs,
    spans_of_trace,
)
from plait.resources.foreach import split_item_name
from plait.resources.schedules import cron_ticks
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.task_execution.repository import (
    TaskInstance,
    current_attempts_of_tasks,
    current_task_states,
    tasks_of_instance,
)
from plait.task_execution.states import TaskState
from plait.workflow_orchestrator import repository as orchestrator
from plait.workflow_orchestrator.repository import (
    EventTrigger,
    WorkflowDefinition,
    WorkflowInstance,
)
from plait.workflow_orchestrator.runtime import fan_out_sizes
from plait.workflow_orchestrator.states import WorkflowPhase

__all__ = [
    "PAGE_SIZE",
    "LabelRequirement",
    "RunDetail",
    "RunFilter",
    "RunPage",
    "TaskNode",
    "instance_namespaces",
    "parse_labels",
    "read_attempts",
    "run_detail",
    "run_graph",
    "runs_page",
    "runs_query",
    "trigger_names",
]

#: Runs on one page of the list.
PAGE_SIZE = 50
#: Fan-outs with more items than this are one collapsed node in the graph.
COLLAPSE_ABOVE = 20
#: Log records shown on a run's page (the oldest first).
LOG_LIMIT = 2000


#: A label's name, and a DNS subdomain (lower case) as a key's optional prefix.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One requirement of a label selector: the label ``key`` set to ``value``, or set at
    all (``value`` None)."""

    key: str
    value: str | None = None

    def __str__(self) -> str:
        return self.key if self.value is None else f"{self.key}={self.value}"


def _label_key(key: str, said: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if not _LABEL_NAME.fullmatch(name) or (
        slash and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix))
    ):
        raise ValidationError(
            f"label {said[:80]!r}: {key[:80]!r} is not a Kubernetes label key (an optional "
            "lower-case DNS subdomain and '/', then a name of at most 63 letters, digits, "
            "'-', '_' or '.', beginning and ending with a letter or digit)"
        )
    return key


def parse_labels(selectors: Sequence[str]) -> tuple[LabelRequirement, ...]:
    """Label selectors as ``kubectl get -l`` takes them, each of comma-separated
    requirements: ``key=value`` (or ``key==value``) and ``key`` (the label is set).
    Anything else is a :class:`ValidationError` saying which requirement and why."""
    found: list[LabelRequirement] = []
    for selector in selectors:
        for raw in selector.split(","):
            text = raw.strip()
            if not text:
                continue
            if any(op in text for op in ("!", " in ", " notin ", "(", ")")):
                raise ValidationError(
                    f"label {text[:80]!r}: only key=value and key (the label is set) are "
                    "supported, not !=, !key, in or notin"
                )
            key, equals, value = text.partition("=")
            if equals and value.startswith("="):
                value = value[1:]  # key==value
            key = _label_key(key.strip(), text)
            if not equals:
                found.append(LabelRequirement(key))
                continue
            value = value.strip()
            if value and not _LABEL_NAME.fullmatch(value):
                raise ValidationError(
                    f"label {text[:80]!r}: {value[:80]!r} is not a Kubernetes label value "
                    "(empty, or at most 63 letters, digits, '-', '_' or '.', beginning and "
                    "ending with a letter or digit)"
                )
            found.append(LabelRequirement(key, value))
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class RunFilter:
    """The run list's filters, as they stand in the page's URL."""

    namespace: str | None = None
    definition: str | None = None
    phases: tuple[WorkflowPhase, ...] = ()
    trigger: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    cursor: str | None = None
    labels: tuple[LabelRequirement, ...] = ()

    @classmethod
    def from_query(
        cls, query: Mapping[str, str], phases: Sequence[str], labels: Sequence[str] = ()
    ) -> RunFilter:
        """Parse the URL's query (``phase`` and ``label`` may be repeated: ``phases`` and
        ``labels`` are all their values); a bad value is a :class:`ValidationError`
        naming it."""
        known = {p.value: p for p in WorkflowPhase}
        chosen: list[WorkflowPhase] = []
        for p in phases:
            if p not in known:
                raise ValidationError(f"unknown phase {p[:40]!r}; one of {', '.join(known)}")
            chosen.append(known[p])
        cursor = query.get("after") or None
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except Exception:
                raise ValidationError("the page cursor 'after' is not one this list made") from None
        return cls(
            namespace=query.get("namespace") or None,
            definition=query.get("definition") or None,
            phases=tuple(chosen),
            trigger=query.get("trigger") or None,
            since=_time(query, "since"),
            until=_time(query, "until"),
            cursor=cursor,
            labels=parse_labels(labels),
        )

    @property
    def label_text(self) -> str:
        """The label requirements as one selector, as the form shows them."""
        return ",".join(str(r) for r in self.labels)


def _time(query: Mapping[str, str], key: str) -> dt.datetime | None:
    raw = query.get(key)
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(
            f"{key} must be a date and time (ISO 8601), got {raw[:40]!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class RunPage:
    runs: list[WorkflowInstance]
    next_cursor: str | None


async def instance_namespaces(conn: AsyncConnection[Any]) -> list[str]:
    """Every namespace that has a workflow definition (so every one that can have runs):
    a skip scan over the definitions' unique index, one probe per namespace."""
    cur = await conn.execute(
        "WITH RECURSIVE ns(namespace) AS ("
        " (SELECT namespace FROM workflow_orchestrator_service.workflow_definitions"
        "  ORDER BY namespace LIMIT 1)"
        " UNION ALL"
        " SELECT (SELECT d.namespace FROM workflow_orchestrator_service.workflow_definitions d"
        "  WHERE d.namespace > ns.namespace ORDER BY d.namespace LIMIT 1)"
        " FROM ns WHERE ns.namespace IS NOT NULL)"
        " SELECT namespace FROM ns WHERE namespace IS NOT NULL"
    )
    return [row[0] for row in await cur.fetchall()]


#: A label filter that fewer runs than this match (counted through the labels index, up to
#: this many) is read through that index and sorted; a commoner one along each namespace's
#: keyset index, where matching runs come soon.
RARE_LABEL_RUNS = 2000


async def runs_page(
    conn: AsyncConnection[Any], namespaces: Sequence[str], f: RunFilter, *, limit: int = PAGE_SIZE
) -> RunPage:
    """Newest runs first, one keyset page over the given namespaces.

    Each namespace is read along its (namespace, created_at, id) index for at most
    ``limit + 1`` rows past the cursor and the results are merged, so a page costs the
    same on page 1 and page 1,000 and nothing is counted. Filtered by a rare label, the
    runs that carry it are found through the labels index instead (see :func:`runs_query`).
    """
    if not namespaces:
        return RunPage([], None)
    rare = await _rare_labels(conn, f.labels)
    query, params = runs_query(namespaces, f, limit=limit, by_labels=rare)
    async with conn.cursor(row_factory=class_row(WorkflowInstance)) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    if len(rows) <= limit:
        return RunPage(rows, None)
    last = rows[limit - 1]
    return RunPage(rows[:limit], encode_cursor(last.created_at, last.id))


async def trigger_names(
    conn: AsyncConnection[Any], ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The names of the EventTriggers that started runs (a run keeps its trigger's id): one
    primary-key probe per distinct id, deleted triggers included."""
    if not ids:
        return {}
    cur = await conn.execute(
        "SELECT id, name FROM workflow_orchestrator_service.workflow_event_triggers "
        "WHERE id = ANY(%s)",
        (list(set(ids)),),
    )
    return {row[0]: row[1] for row in await cur.fetchall()}


async def _rare_labels(conn: AsyncConnection[Any], labels: Sequence[LabelRequirement]) -> bool:
    """Whether fewer than RARE_LABEL_RUNS runs carry the ``key=value`` labels (in any
    namespace: this only chooses how to read)."""
    params: dict[str, Any] = {"rare": RARE_LABEL_RUNS}
    containments = _label_containments(labels, params)
    if not containments:
        return False
    cur = await conn.execute(
        sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM workflow_orchestrator_service.workflow_instances w"
            " WHERE {where} LIMIT %(rare)s) found"
        ).format(where=sql.SQL(" AND ").join(containments)),
        params,
    )
    row = await cur.fetchone()
    return row is not None and int(row[0]) < RARE_LABEL_RUNS


def runs_query(
    namespaces: Sequence[str], f: RunFilter, *, limit: int = PAGE_SIZE, by_labels: bool = False
) -> tuple[sql.Composed, dict[str, Any]]:
    """The SQL of :func:`runs_page` and its parameters (``limit + 1`` rows, to tell
    whether another page follows): each namespace along its keyset index, merged; or,
    ``by_labels``, the runs that carry the labels (through the labels index), sorted."""
    namespace = sql.SQL("w.namespace" if by_labels else "n.ns")
    conditions: list[sql.Composable] = [
        sql.SQL("w.namespace = ANY(%(namespaces)s)") if by_labels else sql.SQL("w.namespace = n.ns")
    ]
    params: dict[str, Any] = {"namespaces": list(namespaces), "limit": limit + 1}
    if f.definition:
        conditions.append(sql.SQL("w.workflow_name = %(definition)s"))
        params["definition"] = f.definition
    if f.phases:
        conditions.append(sql.SQL("w.phase = ANY(%(phases)s)"))
        params["phases"] = [p.value for p in f.phases]
    if f.trigger:
        conditions.append(
            sql.SQL(
                "w.trigger_id IN (SELECT t.id FROM "
                "workflow_orchestrator_service.workflow_event_triggers t "
                "WHERE t.namespace = {namespace} AND t.name = %(trigger)s)"
            ).format(namespace=namespace)
        )
        params["trigger"] = f.trigger
    if f.since:
        conditions.append(sql.SQL("w.created_at >= %(since)s"))
        params["since"] = f.since
    if f.until:
        conditions.append(sql.SQL("w.created_at < %(until)s"))
        params["until"] = f.until
    conditions += _label_containments(f.labels, params)
    for i, key in enumerate(r.key for r in f.labels if r.value is None):
        params[f"label_key_{i}"] = key
        conditions.append(sql.SQL("w.labels ? {}").format(sql.Placeholder(f"label_key_{i}")))
    if f.cursor:
        params["c_time"], params["c_id"] = decode_cursor(f.cursor)
        conditions.append(sql.SQL("(w.created_at, w.id) < (%(c_time)s, %(c_id)s)"))
    where = sql.SQL(" AND ").join(conditions)
    if by_labels:
        query = sql.SQL(
            "SELECT w.* FROM workflow_orchestrator_service.workflow_instances w WHERE {where}"
            " ORDER BY w.created_at DESC, w.id DESC LIMIT %(limit)s"
        ).format(where=where)
    else:
        query = sql.SQL(
            "SELECT r.* FROM unnest(%(namespaces)s::text[]) AS n(ns) CROSS JOIN LATERAL ("
            " SELECT w.* FROM workflow_orchestrator_service.workflow_instances w WHERE {where}"
            " ORDER BY w.created_at DESC, w.id DESC LIMIT %(limit)s) r"
            " ORDER BY r.created_at DESC, r.id DESC LIMIT %(limit)s"
        ).format(where=where)
    return query, params


def _label_containments(
    labels: Sequence[LabelRequirement], params: dict[str, Any]
) -> list[sql.Composable]:
    """``key=value`` requirements as one containment, ``labels @> {...}`` (what the GIN
    index on labels answers), with one more per further value of a key named twice (no run
    matches those). ``key`` alone is ``labels ? key``, checked on the rows read."""
    conditions: list[sql.Composable] = []
    objects: list[dict[str, str]] = []
    for r in labels:
        if r.value is None:
            continue
        target = next((o for o in objects if r.key not in o), None)
        if target is None:
            target = {}
            objects.append(target)
        target[r.key] = r.value
    for i, o in enumerate(objects):
        params[f"labels_{i}"] = Jsonb(o)
        conditions.append(sql.SQL("w.labels @> {}").format(sql.Placeholder(f"labels_{i}")))
    return conditions


@dataclass(slots=True)
class TaskNode:
    """One node of the run's graph: a task, or a fan-out's items as one group."""

    name: str
    dependencies: list[str]
    state: str
    #: The current attempts in full: read only for the tasks on the task table's page
    #: (:func:`read_attempts`); the graph needs only the states.
    attempts: list[TaskInstance] = field(default_factory=list)
    #: For a fan-out: its item count, and the items (their last attempts) by state.
    items: int | None = None
    item_states: dict[str, int] = field(default_factory=dict)
    collapsed: bool = False
    on_exit: bool = False
    kind: str = "container"


@dataclass(frozen=True, slots=True)
class RunDetail:
    instance: WorkflowInstance
    definition: WorkflowDefinition | None
    nodes: list[TaskNode]
    logs: list[LogRecord]
    spans: list[Span]

    def graph(self) -> dict[str, Any]:
        """The graph as the page's script draws it: names and states, and the edges as
        pairs of node positions (no user data beyond names, which the script writes as
        text). Fields at their defaults are left out: a 5,000-task graph is sent in every
        page of the run."""
        index = {n.name: i for i, n in enumerate(self.nodes)}
        nodes: list[dict[str, Any]] = []
        for n in self.nodes:
            node: dict[str, Any] = {"id": n.name, "state": n.state}
            if n.items is not None:
                node["items"], node["itemStates"] = n.items, n.item_states
            if n.collapsed:
                node["collapsed"] = True
            if n.on_exit:
                node["onExit"] = True
            nodes.append(node)
        return {
            "nodes": nodes,
            "edges": [
                [index[d], i]
                for i, n in enumerate(self.nodes)
                for d in n.dependencies
                if d in index
            ],
        }


def _kind(task: Any) -> str:
    if task.wait_for_event is not None:
        return "wait"
    if task.workflow_ref is not None:
        return "workflow"
    return "container"


#: A current attempt as the graph sees it: (task name, attempt, state).
AttemptState = tuple[str, int, TaskState]


def _nodes(
    spec: WorkflowDefinitionSpec, attempts: Sequence[AttemptState], fan_outs: Mapping[str, int]
) -> list[TaskNode]:
    """Every task of the definition, run or not, with its state; fan-outs grouped."""
    last: dict[str, AttemptState] = {}
    items: dict[str, dict[int, AttemptState]] = {}
    for a in attempts:
        base, index = split_item_name(a[0])
        if index is not None:
            mine = items.setdefault(base, {})
            if index not in mine or mine[index][1] < a[1]:
                mine[index] = a
        elif a[0] not in last or last[a[0]][1] < a[1]:
            last[a[0]] = a
    tasks = spec.all_tasks()
    exit_name = spec.on_exit.name if spec.on_exit else None
    nodes: list[TaskNode] = []
    for t in tasks:
        ran = last.get(t.name)
        node = TaskNode(
            t.name,
            list(t.dependencies),
            ran[2].value if ran else "Planned",
            on_exit=t.name == exit_name,
            kind=_kind(t),
        )
        if t.for_each is not None and ran is None:
            found = items.get(t.name, {})
            n = fan_outs.get(t.name, max(found) + 1 if found else 0)
            states: dict[str, int] = {}
            for item in found.values():
                states[item[2].value] = states.get(item[2].value, 0) + 1
            if n > len(found):
                states["Planned"] = n - len(found)
            node.items, node.item_states = n, states
            node.collapsed = n > COLLAPSE_ABOVE
            node.state = _group_state(states)
        nodes.append(node)
    return nodes


def _group_state(states: Mapping[str, int]) -> str:
    for state in ("Failed", "TimedOut", "Running", "Waiting", "Pending"):
        if states.get(state):
            return state
    if states and set(states) <= {"Succeeded", "Skipped"}:
        return "Succeeded"
    return "Planned" if not states or states.get("Planned") else next(iter(states))


#: Definition versions kept per process, with their parsed specs (a version's spec never
#: changes).
SPEC_CACHE = 64
_specs: OrderedDict[
    tuple[str, str, int, str], tuple[WorkflowDefinition, WorkflowDefinitionSpec]
] = OrderedDict()


async def _run_definition(
    conn: AsyncConnection[Any], run: WorkflowInstance
) -> tuple[WorkflowDefinition, WorkflowDefinitionSpec] | None:
    """The definition version the run ran and its parsed spec, read and parsed once per
    process: a version is immutable (its hash is part of the key), and a 5,000-task spec
    takes 60 ms to read and decode and half a second to parse. A cached version costs one
    index probe that reads no spec."""
    cur = await conn.execute(
        "SELECT spec_hash FROM workflow_orchestrator_service.workflow_definitions "
        "WHERE namespace = %s AND name = %s AND version = %s",
        (run.namespace, run.workflow_name, run.workflow_version),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    key = (run.namespace, run.workflow_name, run.workflow_version, str(row[0]))
    cached = _specs.get(key)
    if cached is not None:
        _specs.move_to_end(key)
        return cached
    definition = await orchestrator.get_workflow_definition(
        conn, run.namespace, run.workflow_name, run.workflow_version
    )
    if definition is None:
        return None
    cached = (definition, WorkflowDefinitionSpec.model_validate(definition.spec))
    _specs[(*key[:3], definition.spec_hash)] = cached
    if len(_specs) > SPEC_CACHE:
        _specs.popitem(last=False)
    return cached


async def run_graph(
    database: Database, namespace: str, name: str
) -> tuple[WorkflowInstance, WorkflowDefinition | None, list[TaskNode]] | None:
    """A run by name, the definition version it ran, and every task of that definition
    with its state (a fan-out as one node): what the run's page and the runs API read
    before the attempts in full (see :func:`read_attempts`). None: no such run."""
    async with database.connection("workflow_orchestrator") as conn:
        instance = await orchestrator.instance_by_name(conn, namespace, name)
        if instance is None:
            return None
        found = await _run_definition(conn, instance)
    definition: WorkflowDefinition | None = None
    nodes: list[TaskNode] = []
    if found is not None:
        definition, spec = found
        async with database.connection("task_execution") as conn:
            if any(t.for_each is not None for t in spec.tasks):
                # A fan-out's item count is planned from its upstream tasks' outputs, as
                # the engine plans it: that needs the attempts in full.
                full = [
                    a for a in await tasks_of_instance(conn, instance.id) if a.superseded_at is None
                ]
                states = [(a.task_name, a.attempt, a.state) for a in full]
                nodes = _nodes(spec, states, fan_out_sizes(instance, spec, full))
            else:
                nodes = _nodes(spec, await current_task_states(conn, instance.id), {})
    return instance, definition, nodes


async def run_detail(database: Database, namespace: str, name: str) -> RunDetail | None:
    """A run by name, with everything its page shows but the attempts in full (see
    :func:`read_attempts`); None when there is no such run."""
    graph = await run_graph(database, namespace, name)
    if graph is None:
        return None
    instance, definition, nodes = graph
    async with database.connection("observability") as conn:
        # Plait's own records name the run (namespace, object); its tasks' output carries
        # the run's uid; a reused name is told apart by the run's creation time.
        logs = await search_logs(
            conn,
            LogQuery(
                since=instance.created_at - dt.timedelta(seconds=1),
                namespace=namespace,
                object_name=name,
                workflow_instance_ids=[instance.id],
                limit=LOG_LIMIT,
            ),
        )
        traces = [
            t
            for t, uid in await find_traces(conn, namespace, name)
            if uid is None or uid == instance.id
        ]
        spans = await spans_of_trace(conn, traces[0]) if traces else []
    spans.sort(key=lambda s: s.start_time)
    return RunDetail(instance, definition, nodes, logs, spans)


async def read_attempts(database: Database, run: WorkflowInstance, nodes: list[TaskNode]) -> None:
    """Fill in the current attempts of ``nodes`` (the task table's page), in full: a
    task's by attempt, a fan-out's items by index then attempt."""
    if not nodes:
        return
    fan_outs = [n.name for n in nodes if n.items is not None]
    async with database.connection("task_execution") as conn:
        found = await current_attempts_of_tasks(
            conn, run.id, [n.name for n in nodes if n.items is None], fan_outs
        )
    by_task: dict[str, list[TaskInstance]] = {}
    for a in found:
        base, index = split_item_name(a.task_name)
        by_task.setdefault(base if index is not None else a.task_name, []).append(a)
    for node in nodes:
        mine = by_task.get(node.name, [])
        if node.items is not None:
            mine = [a for a in mine if a.task_name != node.name]
            mine.sort(key=lambda a: (split_item_name(a.task_name)[1] or 0, a.attempt))
        else:
            mine = [a for a in mine if a.task_name == node.name]
            mine.sort(key=lambda a: a.attempt)
        node.attempts = mine


# --- workflow definitions ----------------------------------------------------------------


async def latest_definitions(
    conn: AsyncConnection[Any], namespaces: Sequence[str]
) -> list[WorkflowDefinition]:
    """The latest live version of every definition in ``namespaces``, by namespace and name
    (one backward probe of the unique key per definition)."""
    async with conn.cursor(row_factory=class_row(WorkflowDefinition)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (namespace, name) * "
            "FROM workflow_orchestrator_service.workflow_definitions "
            "WHERE namespace = ANY(%s) AND deleted_at IS NULL "
            "ORDER BY namespace, name, version DESC",
            (list(namespaces),),
        )
        return await cur.fetchall()


async def definition_versions(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> list[WorkflowDefinition]:
    """Every stored version of one definition, newest first."""
    async with conn.cursor(row_factory=class_row(WorkflowDefinition)) as cur:
        await cur.execute(
            "SELECT * FROM workflow_orchestrator_service.workflow_definitions "
            "WHERE namespace = %s AND name = %s ORDER BY version DESC",
            (namespace, name),
        )
        return await cur.fetchall()


async def triggers_of(
    conn: AsyncConnection[Any], namespace: str, workflow: str
) -> list[EventTrigger]:
    """The live EventTriggers that start ``workflow``."""
    async with conn.cursor(row_factory=class_row(EventTrigger)) as cur:
        await cur.execute(
            "SELECT * FROM workflow_orchestrator_service.workflow_event_triggers "
            "WHERE namespace = %s AND workflow_name = %s AND deleted_at IS NULL ORDER BY name",
            (namespace, workflow),
        )
        return await cur.fetchall()


def next_firing(trigger: EventTrigger, now: dt.datetime) -> dt.datetime | None:
    """When a cron trigger fires next (None: not a cron trigger, suspended, or never)."""
    if trigger.schedule is None or not trigger.enabled:
        return None
    try:
        zone = zoneinfo.ZoneInfo(str(trigger.spec.get("timeZone") or "UTC"))
        return next(cron_ticks(trigger.schedule, now.astimezone(zone)))
    except Exception:
        return None


def spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A unified diff of two specs as indented JSON: (kind, line), kind one of ``add``,
    ``del``, ``hunk``, ``same``."""
    a = json.dumps(old, indent=2, sort_keys=True).splitlines()
    b = json.dumps(new, indent=2, sort_keys=True).splitlines()
    lines: list[tuple[str, str]] = []
    for line in difflib.unified_diff(a, b, lineterm="", n=3):
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")
        lines.append((kind, line))
    return lines


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventFilter:
    """The events page's search, as it stands in the URL."""

    type: str | None = None
    source: str | None = None
    subject: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    cursor: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> EventFilter:
        cursor = query.get("after") or None
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except Exception:
                raise ValidationError("the page cursor 'after' is not one this list made") from None
        return cls(
            type=query.get("type") or None,
            source=query.get("source") or None,
            subject=query.get("subject") or None,
            since=_time(query, "since"),
            until=_time(query, "until"),
            cursor=cursor,
        )


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[EventInstance]
    next_cursor: str | None


async def search_events(
    conn: AsyncConnection[Any], namespace: str, f: EventFilter, *, limit: int = PAGE_SIZE
) -> EventPage:
    """Newest events of a namespace first, along its (namespace, received_at, id) index:
    type and source match exactly, subject by prefix."""
    conditions = [sql.SQL("namespace = %(namespace)s")]
    params: dict[str, Any] = {"namespace": namespace, "limit": limit + 1}
    if f.type:
        conditions.append(sql.SQL("type = %(type)s"))
        params["type"] = f.type
    if f.source:
        conditions.append(sql.SQL("source = %(source)s"))
        params["source"] = f.source
    if f.subject:
        conditions.append(sql.SQL("starts_with(subject, %(subject)s)"))
        params["subject"] = f.subject
    if f.since:
        conditions.append(sql.SQL("received_at >= %(since)s"))
        params["since"] = f.since
    if f.until:
        conditions.append(sql.SQL("received_at < %(until)s"))
        params["until"] = f.until
    if f.cursor:
        params["c_time"], params["c_id"] = decode_cursor(f.cursor)
        conditions.append(sql.SQL("(received_at, id) < (%(c_time)s, %(c_id)s)"))
    query = sql.SQL(
        "SELECT * FROM event_processing_service.event_instances WHERE {where} "
        "ORDER BY received_at DESC, id DESC LIMIT %(limit)s"
    ).format(where=sql.SQL(" AND ").join(conditions))
    async with conn.cursor(row_factory=class_row(EventInstance)) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    if len(rows) <= limit:
        return EventPage(rows, None)
    last = rows[limit - 1]
    return EventPage(rows[:limit], encode_cursor(last.received_at, last.id))


@dataclass(frozen=True, slots=True)
class EventSeries:
    event_type: str
    partition_key: str
    last_position: int
    updated_at: dt.datetime


async def sequences(
    conn: AsyncConnection[Any], namespace: str, limit: int = 100
) -> list[EventSeries]:
    """The namespace's ordered series (one per type and key), most recently moved first."""
    async with conn.cursor(row_factory=class_row(EventSeries)) as cur:
        await cur.execute(
            "SELECT event_type, partition_key, last_position, updated_at "
            "FROM event_processing_service.event_sequences WHERE namespace = %s "
            "ORDER BY updated_at DESC LIMIT %s",
            (namespace, limit),
        )
        return await cur.fetchall()


# --- integrations ------------------------------------------------------------------------


async def integrations(
    conn: AsyncConnection[Any], namespaces: Sequence[str]
) -> list[IntegrationInstance]:
    """The latest live version of every Integration in ``namespaces``, with its health."""
    async with conn.cursor(row_factory=class_row(IntegrationInstance)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (namespace, name) * "
            "FROM integration_service.integration_instances "
            "WHERE namespace = ANY(%s) AND deleted_at IS NULL "
            "ORDER BY namespace, name, version DESC",
            (list(namespaces),),
        )
        return await cur.fetchall()
