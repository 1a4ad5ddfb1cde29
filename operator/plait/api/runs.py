"""``/v1/namespaces/{namespace}/runs`` and ``/v1/runs``: WorkflowInstances as JSON.

The same reads as the dashboard's run list and run page (:mod:`plait.web_application.
queries`): the list is the dashboard's keyset query with its filters, the run is its row
and its tasks' latest attempts, a page of tasks at a time. Reading needs
``instances:read`` in the namespace, as the dashboard's run pages do; ``/v1/runs`` lists
every namespace where the caller holds it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from plait.api.access import PRINCIPAL
from plait.api.context import (
    DATABASE,
    NAMESPACE_MAX_LENGTH,
    NAMESPACE_PATTERN,
    namespace_of,
    validated,
)
from plait.api.problems import Problem
from plait.api.routing import Access, Parameter, Reply, Route, problem
from plait.auth.permissions import ANY_NAMESPACE
from plait.errors import ConfigurationError, ValidationError
from plait.kernel.database import decode_cursor
from plait.task_execution.repository import TaskInstance
from plait.web_application import queries
from plait.workflow_orchestrator.repository import WorkflowInstance
from plait.workflow_orchestrator.states import WorkflowPhase

__all__ = ["MAX_RUNS", "MAX_TASKS", "ROUTES", "RunOut"]

#: The most runs on one page of the list.
MAX_RUNS = 500
#: The most tasks on one page of a run.
MAX_TASKS = 500
#: Tasks on a page of a run unless asked (as many as the dashboard's task table shows).
TASKS = 100
#: What the runs API reads: the runs, and their tasks' attempts.
COMPONENTS = ("workflow_orchestrator", "task_execution")
_MAX_CURSOR_LENGTH = 256
_MAX_TEXT = 253
#: A Kubernetes object name (DNS subdomain), as WorkflowInstance names are.
_NAME_PATTERN = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_NAME = re.compile(_NAME_PATTERN)


class RunOut(BaseModel):
    """One run (a WorkflowInstance) as PostgreSQL records it."""

    namespace: str
    name: str
    uid: uuid.UUID = Field(description="The WorkflowInstance's metadata.uid.")
    definition: str = Field(description="The WorkflowDefinition it runs.")
    definition_version: int = Field(
        serialization_alias="definitionVersion", description="The version of it the run ran."
    )
    phase: WorkflowPhase
    message: str | None = Field(description="Why the run is in its phase, when it says.")
    labels: dict[str, str] = Field(description="The WorkflowInstance's metadata.labels.")
    trigger: str | None = Field(
        description="Name of the EventTrigger that started the run; null for one created "
        "directly (kubectl create, the dashboard, a parent run)."
    )
    created_at: datetime = Field(serialization_alias="createdAt")
    started_at: datetime | None = Field(serialization_alias="startedAt")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")


class RunPage(BaseModel):
    """One page of runs, newest first."""

    items: list[RunOut]
    next_cursor: str | None = Field(
        serialization_alias="nextCursor",
        description="Pass as `cursor` (with the same filters) for the next page; null at the end.",
    )


class AttemptOut(BaseModel):
    """The latest attempt of a task (or of one item of a fan-out)."""

    task: str = Field(description="The task's name; a fan-out item's is `task[index]`.")
    attempt: int = Field(description="1 for the first attempt, one more per retry.")
    state: str = Field(
        description="Pending, Running, Waiting, Succeeded, Failed, TimedOut or Skipped."
    )
    created_at: datetime = Field(serialization_alias="createdAt")
    started_at: datetime | None = Field(serialization_alias="startedAt")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")
    exit_code: int | None = Field(serialization_alias="exitCode")
    failure_cause: str | None = Field(
        serialization_alias="failureCause",
        description="Why a Failed or TimedOut attempt failed (what retryOn matches).",
    )
    message: str | None = Field(description="The failure's message, or the task's own.")
    outputs: dict[str, Any] | None = Field(description="What the task reported, as JSON.")


class TaskOut(BaseModel):
    """One task of the run's definition, run or not (``Planned``), with its latest
    attempt; a fan-out is one task whose items each have their latest attempt."""

    name: str
    kind: str = Field(description="container, wait (for an event) or workflow (a child run).")
    state: str = Field(description="The latest attempt's state, or Planned; a fan-out's overall.")
    dependencies: list[str]
    on_exit: bool = Field(serialization_alias="onExit", description="The onExit task.")
    items: int | None = Field(description="A fan-out's item count; null for another task.")
    item_states: dict[str, int] = Field(
        serialization_alias="itemStates", description="A fan-out's items by state."
    )
    attempts: list[AttemptOut] = Field(
        description="The latest attempt (a fan-out: each item's, by index, at most "
        "`tasks_limit` of them); empty before the task runs."
    )
    more_attempts: bool = Field(
        serialization_alias="moreAttempts",
        description="A fan-out with more items' attempts than `tasks_limit`: the rest are "
        "left out (their counts are in itemStates).",
    )


class RunDetailOut(RunOut):
    """One run, its inputs and outcome, and a page of its tasks in definition order."""

    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    failure: dict[str, Any] | None = Field(description="The failure that ended the run.")
    tasks: list[TaskOut]
    tasks_total: int = Field(
        serialization_alias="tasksTotal", description="Tasks in the run's definition."
    )
    next_tasks_from: int | None = Field(
        serialization_alias="nextTasksFrom",
        description="Pass as `tasks_from` for the next page of tasks; null at the end.",
    )


def _cursor(value: Any) -> Any:
    if isinstance(value, str) and value and len(value) <= _MAX_CURSOR_LENGTH:
        try:
            decode_cursor(value)
        except ValidationError:
            raise ValueError(
                "not a cursor of this list (it does not decode): pass the nextCursor of the "
                "previous page"
            ) from None
    return value


def _labels(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        try:
            queries.parse_labels(value)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
    return value


def _iso_time(value: Any) -> Any:
    """A date and time as the dashboard's filter reads it (ISO 8601, by
    ``datetime.fromisoformat``), not a number of seconds."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    if isinstance(value, datetime):
        return value
    raise ValueError(f"must be a date and time (ISO 8601), got {str(value)[:40]!r}")


#: A Kubernetes object name (definitions and triggers are named so).
_Name = Annotated[str, Field(max_length=_MAX_TEXT, pattern=_NAME_PATTERN)] | SkipJsonSchema[None]
#: Label selectors: at most this many, each at most this long, in printable ASCII (as every
#: label key and value is), so that the longest query fits aiohttp's 8,190-byte request
#: line, percent-encoded.
MAX_SELECTORS = 4
MAX_SELECTOR_LENGTH = 512


class RunListQuery(BaseModel):
    """The query of ``GET /v1/namespaces/{namespace}/runs`` and ``GET /v1/runs``: the
    dashboard's run list filters (``phase`` and ``label`` may be repeated)."""

    model_config = ConfigDict(extra="ignore")

    definition: _Name = Field(default=None, description="Only runs of this WorkflowDefinition.")
    phase: list[WorkflowPhase] = Field(
        default_factory=list,
        max_length=len(WorkflowPhase),
        description="Only runs in one of these phases (repeatable).",
    )
    label: Annotated[
        list[Annotated[str, Field(max_length=MAX_SELECTOR_LENGTH, pattern=r"^[ -~]*$")]],
        BeforeValidator(_labels),
    ] = Field(
        default_factory=list,
        max_length=MAX_SELECTORS,
        description="Label selector as `kubectl get -l` takes it: comma-separated "
        "`key=value` (or `key==value`) and `key` (the label is set); repeatable (at most "
        f"{MAX_SELECTORS}, each at most {MAX_SELECTOR_LENGTH} printable ASCII characters), "
        "every requirement must hold. `!=`, `!key`, `in` and `notin` are refused.",
    )
    trigger: _Name = Field(default=None, description="Only runs this EventTrigger started.")
    since: Annotated[datetime, BeforeValidator(_iso_time)] | SkipJsonSchema[None] = Field(
        default=None,
        description="Only runs created at or after this time (ISO 8601, such as RFC 3339; UTC "
        "when it has no offset).",
    )
    until: Annotated[datetime, BeforeValidator(_iso_time)] | SkipJsonSchema[None] = Field(
        default=None, description="Only runs created before this time."
    )
    limit: int = Field(default=queries.PAGE_SIZE, ge=1, le=MAX_RUNS, description="Page size.")
    cursor: Annotated[
        Annotated[str, Field(max_length=_MAX_CURSOR_LENGTH)] | SkipJsonSchema[None],
        BeforeValidator(_cursor),
    ] = Field(default=None, description="`nextCursor` of the previous page.")

    @field_validator("cursor", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any) -> Any:
        return None if value == "" else value

    def run_filter(self, namespace: str | None) -> queries.RunFilter:
        """The dashboard's filter of this query (already validated)."""
        since, until = (
            t if t is None or t.tzinfo else t.replace(tzinfo=UTC) for t in (self.since, self.until)
        )
        return queries.RunFilter(
            namespace=namespace,
            definition=self.definition,
            phases=tuple(dict.fromkeys(self.phase)),
            trigger=self.trigger,
            since=since,
            until=until,
            cursor=self.cursor,
            labels=queries.parse_labels(self.label),
        )


class RunQuery(BaseModel):
    """The query of ``GET /v1/namespaces/{namespace}/runs/{name}``: which page of tasks."""

    model_config = ConfigDict(extra="ignore")

    tasks_from: int = Field(
        default=0,
        ge=0,
        description="Tasks to skip, in definition order (`nextTasksFrom` of the previous "
        "page; the dashboard's `tasks_from`).",
    )
    tasks_limit: int = Field(default=TASKS, ge=1, le=MAX_TASKS, description="Tasks per page.")


def _query(model: type[BaseModel], request: web.Request, repeated: Sequence[str] = ()) -> Any:
    """The query string as ``model``, the ``repeated`` parameters as lists."""
    data: dict[str, Any] = {k: v for k, v in request.query.items() if k not in repeated}
    for key in repeated:
        data[key] = request.query.getall(key, [])
    return validated(model, data, pointer=False)


def _database(request: web.Request) -> Any:
    """The API's database, 503 where it has none for a component the runs live in."""
    database = request.app[DATABASE]
    for component in COMPONENTS:
        try:
            database.pool(component)
        except ConfigurationError as exc:
            raise Problem(503, "not-configured", "Not configured", str(exc)) from None
    return database


def run_out(run: WorkflowInstance, triggers: dict[uuid.UUID, str]) -> dict[str, Any]:
    return {
        "namespace": run.namespace,
        "name": run.name,
        "uid": run.id,
        "definition": run.workflow_name,
        "definition_version": run.workflow_version,
        "phase": run.phase,
        "message": run.message,
        "labels": run.labels,
        "trigger": triggers.get(run.trigger_id) if run.trigger_id else None,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


def _json(model: BaseModel) -> web.Response:
    return web.json_response(model.model_dump(mode="json", by_alias=True))


async def _list(request: web.Request, namespace: str | None) -> web.Response:
    query: RunListQuery = _query(RunListQuery, request, ("phase", "label"))
    f = query.run_filter(namespace)
    caller = request[PRINCIPAL]
    async with _database(request).connection("workflow_orchestrator") as conn:
        if namespace is not None:
            chosen = [namespace]
        else:
            # As the dashboard's run list: every namespace that has runs, for a caller
            # who may read them all; the namespaces of the caller's grants otherwise.
            if caller.allows("instances:read", None):
                known = await queries.instance_namespaces(conn)
            else:
                known = sorted(caller.by_namespace)
            chosen = [ns for ns in known if caller.allows("instances:read", ns)]
        page = await queries.runs_page(conn, chosen, f, limit=query.limit)
        triggers = await queries.trigger_names(
            conn, [r.trigger_id for r in page.runs if r.trigger_id is not None]
        )
    items = [RunOut.model_validate(run_out(r, triggers)) for r in page.runs]
    return _json(RunPage(items=items, next_cursor=page.next_cursor))


async def list_namespace_runs(request: web.Request) -> web.Response:
    return await _list(request, namespace_of(request))


async def list_all_runs(request: web.Request) -> web.Response:
    return await _list(request, None)


def _attempt(a: TaskInstance) -> AttemptOut:
    return AttemptOut(
        task=a.task_name,
        attempt=a.attempt,
        state=a.state.value,
        created_at=a.created_at,
        started_at=a.started_at,
        finished_at=a.finished_at,
        exit_code=a.exit_code,
        failure_cause=a.failure_cause.value if a.failure_cause is not None else None,
        message=a.message,
        outputs=a.outputs,
    )


def _latest(attempts: Sequence[TaskInstance]) -> list[TaskInstance]:
    """The last attempt of each task name (a fan-out's items: of each item), in order."""
    last: dict[str, TaskInstance] = {}
    for a in attempts:
        if a.task_name not in last or last[a.task_name].attempt < a.attempt:
            last[a.task_name] = a
    return list(last.values())


def _task(node: queries.TaskNode, limit: int) -> TaskOut:
    latest = _latest(node.attempts)
    return TaskOut(
        name=node.name,
        kind=node.kind,
        state=node.state,
        dependencies=node.dependencies,
        on_exit=node.on_exit,
        items=node.items,
        item_states=node.item_states,
        attempts=[_attempt(a) for a in latest[:limit]],
        more_attempts=len(latest) > limit,
    )


def _run_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if len(name) > _MAX_TEXT or not _NAME.match(name):
        detail = (
            f"{name[:80]!r} is not a WorkflowInstance name: lower-case letters, digits, '-' "
            f"and '.', starting and ending with a letter or digit, at most {_MAX_TEXT} "
            "characters"
        )
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            detail,
            errors=[{"path": "name", "reason": detail}],
        )
    return name


async def show_run(request: web.Request) -> web.Response:
    namespace, name = namespace_of(request), _run_name(request)
    query: RunQuery = _query(RunQuery, request)
    database = _database(request)
    graph = await queries.run_graph(database, namespace, name)
    if graph is None:
        raise Problem(
            404,
            "not-found",
            "Not found",
            f"no run {name[:_MAX_TEXT]!r} is recorded in namespace {namespace!r} (a run just "
            "created appears once the operator has recorded it)",
        )
    run, _, nodes = graph
    total = len(nodes)
    first = query.tasks_from
    if first and first >= total:
        detail = f"tasks_from must be between 0 and {max(total - 1, 0)} (the run has {total} tasks)"
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            detail,
            errors=[{"path": "tasks_from", "reason": detail}],
        )
    end = first + query.tasks_limit
    shown = nodes[first:end]
    await queries.read_attempts(database, run, shown)
    triggers: dict[uuid.UUID, str] = {}
    if run.trigger_id is not None:
        async with database.connection("workflow_orchestrator") as conn:
            triggers = await queries.trigger_names(conn, [run.trigger_id])
    return _json(
        RunDetailOut(
            **run_out(run, triggers),
            inputs=run.inputs,
            outputs=run.outputs,
            failure=run.failure,
            tasks=[_task(n, query.tasks_limit) for n in shown],
            tasks_total=total,
            next_tasks_from=end if end < total else None,
        )
    )


_NAMESPACE = Parameter(
    "namespace",
    "path",
    {"type": "string", "pattern": NAMESPACE_PATTERN, "maxLength": NAMESPACE_MAX_LENGTH},
    "Kubernetes namespace of the runs.",
)
_RUN_NAME = Parameter(
    "name",
    "path",
    {"type": "string", "pattern": _NAME_PATTERN, "maxLength": _MAX_TEXT},
    "Name of the WorkflowInstance.",
)
_UNAVAILABLE = problem(
    "PostgreSQL cannot be reached, or this API has no database for the workflow_orchestrator "
    "or task_execution component (PLAIT_DATABASE_URL_WORKFLOW_ORCHESTRATOR, "
    "PLAIT_DATABASE_URL_TASK_EXECUTION or the shared one).",
    {"Retry-After": "Seconds to wait before retrying (when PostgreSQL cannot be reached)."},
)
_BAD_LIST = problem(
    "A bad filter, limit or cursor (a phase that is not one, a label selector that is not "
    "key=value or key, a time that does not parse, a cursor that does not decode); "
    "`errors` name the parameter."
)
_PAGE = Reply("One page, newest first.", (RunPage,))

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/runs",
        list_all_runs,
        "listRuns",
        "Runs in every namespace where the caller may read them, newest first.",
        {200: _PAGE, 400: _BAD_LIST, 503: _UNAVAILABLE},
        description="The dashboard's run list as JSON: each namespace is read along its "
        "keyset index and the pages merged, so a page costs the same however deep.",
        query=RunListQuery,
        access=Access("instances:read", ANY_NAMESPACE),
    ),
    Route(
        "GET",
        "/v1/namespaces/{namespace}/runs",
        list_namespace_runs,
        "listNamespaceRuns",
        "The runs of a namespace, newest first, filtered.",
        {200: _PAGE, 400: problem("Invalid namespace, or as for listRuns."), 503: _UNAVAILABLE},
        parameters=(_NAMESPACE,),
        query=RunListQuery,
        access=Access("instances:read", "namespace"),
    ),
    Route(
        "GET",
        "/v1/namespaces/{namespace}/runs/{name}",
        show_run,
        "getRun",
        "One run and a page of its tasks, each with its latest attempt.",
        {
            200: Reply("The run and a page of its tasks.", (RunDetailOut,)),
            400: problem("Invalid namespace, or tasks_from or tasks_limit out of range."),
            404: problem("No run of that name is recorded in the namespace."),
            503: _UNAVAILABLE,
        },
        parameters=(_NAMESPACE, _RUN_NAME),
        query=RunQuery,
        access=Access("instances:read", "namespace"),
    ),
)
