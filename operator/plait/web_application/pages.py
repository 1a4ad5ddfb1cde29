"""The dashboard's pages and actions, each declared once with the permission it needs.

:data:`PAGES` is the dashboard's route table: ``plait api`` turns every entry into one of
its routes and checks the declared permission with the same code as the JSON API's (see
:mod:`plait.api.dashboard`), before the handler runs. The handlers then only hide what
the caller could not use anyway (a viewer sees no Cancel button; the server refuses it
too). Pages are rendered on the server from autoescaped Jinja2 templates; the scripts
they load are static files (no inline script), so a strict Content-Security-Policy holds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import psycopg
from aiohttp import web

from plait.auth.permissions import ANY_NAMESPACE, Principal
from plait.auth.service import AuthenticationFailed, AuthService, LoginThrottled
from plait.errors import ConfigurationError, NotFoundError, ValidationError
from plait.event_processing import repository as events_repository
from plait.event_processing.repository import DeadLetter
from plait.event_processing.states import DeadLetterStatus
from plait.kernel.database import Database
from plait.resources.common import Parameter
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.testing_framework import repository as tests_repository
from plait.testing_framework.repository import TestSummary
from plait.web_application import queries
from plait.web_application import repository as ui_repository
from plait.web_application.control import ACTIONS, ActionRefused, RunControl
from plait.web_application.live import Change, LiveFeed
from plait.web_application.panels import PanelData, PanelSpec, panel_data
from plait.workflow_orchestrator import repository as orchestrator
from plait.workflow_orchestrator.gate import current_definition, unusable_reason
from plait.workflow_orchestrator.states import WorkflowPhase

__all__ = [
    "AUTH_SERVICE",
    "CONTROL",
    "DASHBOARD_DATABASE",
    "LIVE",
    "PAGES",
    "STATIC_DIR",
    "VIEWER",
    "Forbidden",
    "PageRoute",
    "Viewer",
    "redirect",
    "render",
]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC_DIR = Path(str(resources.files("plait.web_application") / "static"))
PREFIX = "/ui"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at a page: the principal, and the CSRF token its forms must carry
    (None for a caller without a session cookie, who needs none)."""

    principal: Principal
    csrf: str | None

    def may(self, permission: str, namespace: str | None = ANY_NAMESPACE) -> bool:
        return self.principal.allows(permission, namespace)

    def namespaces(self, permission: str, known: list[str]) -> list[str]:
        """The namespaces among ``known`` where the caller holds ``permission``."""
        return [ns for ns in known if self.principal.allows(permission, ns)]


VIEWER = web.RequestKey("plait_dashboard_viewer", Viewer)
DASHBOARD_DATABASE = web.AppKey("plait_dashboard_database", Database)
AUTH_SERVICE = web.AppKey("plait_dashboard_auth", AuthService)
CONTROL = web.AppKey("plait_dashboard_control", RunControl)
LIVE = web.AppKey("plait_dashboard_live", LiveFeed)
#: A stream ends after this long (the browser reconnects at once, signed in again: a
#: disabled user's stream does not outlive it by more than this).
STREAM_SECONDS = 300.0
#: A comment line this often keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
SESSION_COOKIE = "plait_session"


@dataclass(frozen=True, slots=True)
class PageRoute:
    """One page or action: ``permission`` held in the namespace of the path parameter
    ``namespace`` (None: everywhere; ``*``: in at least one namespace). ``permission``
    None with ``public`` False: any signed-in caller."""

    method: str
    path: str
    handler: Handler
    name: str
    summary: str
    permission: str | None = None
    namespace: str | None = None
    public: bool = False


@cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("plait.web_application", "templates"),
        autoescape=True,  # every template, whatever its name: all text is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    env.globals["assets"] = _assets
    env.globals["outcome_class"] = outcome_class
    env.globals["prefix"] = PREFIX
    return env


#: A test run's status or a case's outcome drawn in the colour of the matching phase.
_OUTCOME_CLASSES = {
    "Passed": "phase-Succeeded",
    "Failed": "phase-Failed",
    "Error": "phase-Error",
    "Pending": "phase-Running",
    "Running": "phase-Running",
    "Cancelled": "phase-Cancelled",
    "Skipped": "phase-Cancelled",
}


def outcome_class(status: str) -> str:
    """The CSS class of a WorkflowTest run's status or a case's outcome."""
    return _OUTCOME_CLASSES.get(status, "phase-Cancelled")


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


@cache
def _manifest() -> dict[str, Any] | None:
    path = STATIC_DIR / ".vite" / "manifest.json"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except OSError:
        logger.warning("the dashboard's assets are not built (no %s): run `make web`", path)
        return None
    return loaded


def _assets() -> dict[str, list[str]]:
    """The hashed files of the front end's entry: its script and stylesheets."""
    manifest = _manifest()
    if manifest is None:
        return {"scripts": [], "styles": []}
    entry = manifest["src/main.ts"]
    return {
        "scripts": [f"{PREFIX}/static/{entry['file']}"],
        "styles": [f"{PREFIX}/static/{css}" for css in entry.get("css", [])],
    }


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """A page from its template, for the caller (None on public pages)."""
    viewer = request.get(VIEWER)
    body = (
        _templates()
        .get_template(template)
        .render(
            viewer=viewer,
            path=request.path_qs,
            phases=[p.value for p in WorkflowPhase],
            now=dt.datetime.now(dt.UTC),
            **context,
        )
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def redirect(location: str, status: int = 303) -> web.Response:
    """A redirect as a plain answer (cookies set on it are kept)."""
    return web.Response(status=status, headers={"Location": location})


def _viewer(request: web.Request) -> Viewer:
    return request[VIEWER]


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard: never an open redirect to another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//"):
        return target
    return f"{PREFIX}/runs"


# --- signing in and out ---------------------------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    return render(
        request, "login.html", next=_safe_next(request.query.get("next")), error=None, username=""
    )


async def login(request: web.Request) -> web.StreamResponse:
    """Sign in with the form: the same session (and cookie) as ``POST /v1/auth/login``."""
    form = await request.post()
    username = str(form.get("username", ""))[:256]
    password = str(form.get("password", ""))[:1024]
    target = _safe_next(str(form.get("next", "")))
    service = request.app[AUTH_SERVICE]
    try:
        new = await service.login(username, password, request.remote)
    except AuthenticationFailed as exc:
        return render(
            request, "login.html", status=401, next=target, error=str(exc), username=username
        )
    except LoginThrottled as exc:
        response = render(
            request, "login.html", status=429, next=target, error=str(exc), username=username
        )
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    response = redirect(target)
    response.set_cookie(
        SESSION_COOKIE,
        new.secret,
        max_age=int(service.settings.session_absolute_seconds),
        path="/",
        secure=service.settings.cookie_secure,
        httponly=True,
        samesite="Strict",
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    viewer = _viewer(request)
    if viewer.principal.method == "session":
        await request.app[AUTH_SERVICE].logout(viewer.principal, request.remote)
    response = redirect(f"{PREFIX}/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def home(request: web.Request) -> web.StreamResponse:
    return redirect(f"{PREFIX}/runs", 302)


# --- runs -----------------------------------------------------------------------------


async def runs_list(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    f = queries.RunFilter.from_query(
        request.query, request.query.getall("phase", []), request.query.getall("label", [])
    )
    database = request.app[DASHBOARD_DATABASE]
    async with database.connection("workflow_orchestrator") as conn:
        if viewer.principal.allows("instances:read", None):
            known = await queries.instance_namespaces(conn)
        else:
            known = sorted(viewer.principal.by_namespace)
        readable = viewer.namespaces("instances:read", known)
        chosen = [f.namespace] if f.namespace else readable
        if f.namespace and f.namespace not in readable:
            raise _forbidden(viewer, "instances:read", f.namespace)
        page = await queries.runs_page(conn, chosen, f)
    query = {k: v for k, v in request.query.items() if k != "after"}
    next_url = None
    if page.next_cursor:
        pairs = [(k, v) for k, v in request.query.items() if k != "after"]
        next_url = f"{PREFIX}/runs?" + urllib.parse.urlencode([*pairs, ("after", page.next_cursor)])
    return render(
        request,
        "runs.html",
        runs=page.runs,
        live=f"{PREFIX}/live/runs"
        + (f"?{urllib.parse.urlencode({'namespace': f.namespace})}" if f.namespace else ""),
        filter=f,
        query=query,
        namespaces=readable,
        next_url=next_url,
        first_url=f"{PREFIX}/runs?" + urllib.parse.urlencode(list(query.items()))
        if f.cursor
        else None,
    )


class Forbidden(Exception):
    """The caller lacks a permission a page needs beyond its route's (HTTP 403)."""


def _forbidden(viewer: Viewer, permission: str, namespace: str) -> Forbidden:
    return Forbidden(
        f"{viewer.principal.name} lacks the permission {permission} in namespace {namespace[:63]!r}"
    )


async def run_page(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    detail = await queries.run_detail(request.app[DASHBOARD_DATABASE], namespace, name)
    if detail is None:
        # Just submitted: the operator has not recorded it yet. The page waits, live.
        return render(
            request,
            "run_waiting.html",
            status=404,
            namespace=namespace,
            name=name,
            live=f"{PREFIX}/live/runs/{namespace}/{name}",
        )
    viewer = _viewer(request)
    phase = detail.instance.phase.value
    actions = [a for a, phases in ACTIONS.items() if phase in phases]
    rows = _task_rows(request, detail)
    await queries.read_attempts(request.app[DASHBOARD_DATABASE], detail.instance, rows.nodes)
    return render(
        request,
        "run.html",
        run=detail.instance,
        detail=detail,
        rows=rows,
        live=f"{PREFIX}/live/runs/{namespace}/{name}",
        graph=detail.graph(),
        actions=actions if viewer.may("instances:write", namespace) else [],
        notice=request.query.get("notice"),
        spans=_waterfall(detail),
    )


#: Tasks shown per page of a run's task table (the graph shows them all). Each task is
#: some 25 DOM nodes and its attempts are read in full: a page of a 5,000-task run stays
#: light.
TASK_ROWS = 100


@dataclass(frozen=True)
class TaskRows:
    """One page of a run's task table: every task in definition order, TASK_ROWS at a
    time, or the one task asked for by ``?task=``."""

    nodes: list[queries.TaskNode]
    first: int
    total: int
    task: str | None
    previous_url: str | None
    next_url: str | None
    all_url: str | None


def _task_rows(request: web.Request, detail: queries.RunDetail) -> TaskRows:
    path = f"{PREFIX}/runs/{detail.instance.namespace}/{detail.instance.name}"
    total = len(detail.nodes)
    task = request.query.get("task") or None
    if task is not None:
        nodes = [n for n in detail.nodes if n.name == task]
        if not nodes:
            raise NotFoundError(f"run {detail.instance.name} has no task {task[:253]!r}")
        return TaskRows(nodes, 0, total, task, None, None, path)
    raw = request.query.get("tasks_from") or "0"
    try:
        first = int(raw)
    except ValueError:
        raise ValidationError(
            f"tasks_from must be a whole number of tasks to skip, not {raw[:20]!r}"
        ) from None
    if first < 0 or (first and first >= total):
        raise ValidationError(f"tasks_from must be between 0 and {max(total - 1, 0)}")
    end = first + TASK_ROWS

    def at(n: int) -> str:
        return f"{path}?tasks_from={n}" if n else path

    return TaskRows(
        detail.nodes[first:end],
        first,
        total,
        None,
        at(max(first - TASK_ROWS, 0)) if first else None,
        at(end) if end < total else None,
        None,
    )


def _waterfall(detail: queries.RunDetail) -> list[dict[str, Any]]:
    """Each span's offset and width as percentages of the run's trace."""
    if not detail.spans:
        return []
    start = min(s.start_time for s in detail.spans)
    end = max(s.end_time for s in detail.spans)
    total = max((end - start).total_seconds(), 1e-6)
    return [
        {
            "span": s,
            "offset": round((s.start_time - start).total_seconds() / total * 100, 2),
            "width": max(round((s.end_time - s.start_time).total_seconds() / total * 100, 2), 0.3),
            "seconds": (s.end_time - s.start_time).total_seconds(),
        }
        for s in detail.spans[:500]
    ]


async def run_action(request: web.Request) -> web.StreamResponse:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    action = request.match_info["action"]
    viewer = _viewer(request)
    try:
        said = await request.app[CONTROL].apply(namespace, name, action, viewer.principal.name)
    except ActionRefused as exc:
        said = str(exc)
    target = f"{PREFIX}/runs/{namespace}/{name}?" + urllib.parse.urlencode({"notice": said})
    return redirect(target)


# --- the overview: panels from ui_components -------------------------------------------

CHART_WIDTH, CHART_HEIGHT = 600.0, 160.0


def _geometry(kind: str, spec: PanelSpec, data: PanelData) -> dict[str, Any]:
    """What a chart draws, in a 600 x 160 viewBox: polylines of time series (with their
    last value), or bars with their labels."""
    if spec.time_series is not None or spec.metric is not None:
        drawn = {name: points for name, points in data.series.items() if points}
        if not drawn:
            return {"lines": []}
        times = [t for points in drawn.values() for t, _ in points]
        values = [v for points in drawn.values() for _, v in points]
        start, end = min(times), max(times)
        span = max((end - start).total_seconds(), 1.0)
        top = max(max(values), 1e-9)
        lines = []
        for i, (name, points) in enumerate(sorted(drawn.items())):
            coords = " ".join(
                f"{(t - start).total_seconds() / span * CHART_WIDTH:.1f},"
                f"{CHART_HEIGHT - v / top * (CHART_HEIGHT - 8):.1f}"
                for t, v in points
            )
            lines.append({"name": name, "points": coords, "last": points[-1][1], "n": i % 6})
        return {"lines": lines, "top": top, "start": start, "end": end}
    if kind == "chart" and spec.x and spec.y:
        rows = [(str(r[0]), float(r[1] or 0)) for r in data.rows]
        top = max([v for _, v in rows] + [1e-9])
        step = CHART_WIDTH / max(len(rows), 1)
        return {
            "bars": [
                {
                    "label": label,
                    "value": value,
                    "x": round(i * step + 2, 1),
                    "width": round(step - 4, 1),
                    "height": round(value / top * (CHART_HEIGHT - 8), 1),
                    "y": round(CHART_HEIGHT - value / top * (CHART_HEIGHT - 8), 1),
                }
                for i, (label, value) in enumerate(rows)
            ]
        }
    return {}


async def overview(request: web.Request) -> web.Response:
    viewer = _viewer(request)
    principal = viewer.principal
    namespaces = (
        None
        if principal.allows("instances:read", None)
        else [ns for ns in sorted(principal.by_namespace) if viewer.may("instances:read", ns)]
    )
    database = request.app[DASHBOARD_DATABASE]
    async with database.connection("web_application") as conn:
        components = await ui_repository.list_ui_components(conn)
    page = next((c for c in components if c.name == "overview" and c.kind.value == "page"), None)
    first = list(page.spec.get("panels", [])) if page else []
    shown = [c for c in components if c.kind.value in ("chart", "table")]
    shown.sort(
        key=lambda c: (
            first.index(c.name) if c.name in first else len(first),
            int((c.spec.get("layout") or {}).get("order", 100)),
            c.name,
        )
    )
    panels = []
    async with database.connection("observability") as conn:
        for component in shown:
            entry: dict[str, Any] = {
                "component": component,
                "error": None,
                "spec": None,
                "data": None,
                "chart": {},
            }
            try:
                spec = PanelSpec.model_validate(component.spec)
                data = await panel_data(conn, spec, namespaces)
                entry.update(
                    spec=spec, data=data, chart=_geometry(component.kind.value, spec, data)
                )
            except (ValueError, ValidationError) as exc:
                entry["error"] = str(exc)
            except psycopg.Error as exc:
                await conn.rollback()
                entry["error"] = f"the query failed: {type(exc).__name__}"
            panels.append(entry)
    return render(
        request,
        "overview.html",
        title=page.spec.get("title", "Overview") if page else "Overview",
        panels=panels,
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
    )


# --- workflow definitions ---------------------------------------------------------------


async def _readable(request: web.Request, permission: str) -> list[str]:
    viewer = _viewer(request)
    if viewer.principal.allows(permission, None):
        async with request.app[DASHBOARD_DATABASE].connection("workflow_orchestrator") as conn:
            known = await queries.instance_namespaces(conn)
    else:
        known = sorted(viewer.principal.by_namespace)
    return viewer.namespaces(permission, known)


async def definitions_list(request: web.Request) -> web.Response:
    namespaces = await _readable(request, "workflows:read")
    only = request.query.get("namespace") or None
    if only is not None and only not in namespaces:
        raise _forbidden(_viewer(request), "workflows:read", only)
    async with request.app[DASHBOARD_DATABASE].connection("workflow_orchestrator") as conn:
        found = await queries.latest_definitions(conn, [only] if only else namespaces)
    rows = []
    for d in found:
        spec = d.spec
        rows.append(
            {
                "definition": d,
                "tasks": len(spec.get("tasks", [])),
                "parameters": len(spec.get("parameters", [])),
                "description": spec.get("description") or "",
            }
        )
    return render(request, "definitions.html", rows=rows, namespaces=namespaces, namespace=only)


async def definition_page(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    async with request.app[DASHBOARD_DATABASE].connection("workflow_orchestrator") as conn:
        versions = await queries.definition_versions(conn, namespace, name)
        triggers = await queries.triggers_of(conn, namespace, name)
    if not versions:
        raise NotFoundError(
            f"no workflow definition {name[:253]!r} in namespace {namespace[:63]!r}"
        )
    try:
        shown = int(request.query.get("version") or versions[0].version)
    except ValueError:
        raise ValidationError("version must be a number") from None
    current = next((v for v in versions if v.version == shown), None)
    if current is None:
        raise NotFoundError(f"{name[:253]} has no version {shown}")
    against = request.query.get("diff")
    diff: list[tuple[str, str]] | None = None
    base = None
    if against:
        base = next((v for v in versions if str(v.version) == against), None)
        if base is None:
            raise NotFoundError(f"{name[:253]} has no version {against[:20]}")
        diff = queries.spec_diff(base.spec, current.spec)
    spec = WorkflowDefinitionSpec.model_validate(current.spec)
    now = dt.datetime.now(dt.UTC)
    tests = await _tests_of(request.app[DASHBOARD_DATABASE], namespace, name)
    return render(
        request,
        "definition.html",
        namespace=namespace,
        name=name,
        versions=versions,
        current=current,
        spec=spec,
        base=base,
        diff=diff,
        triggers=[(t, queries.next_firing(t, now)) for t in triggers],
        tests=tests,
        may_submit=_viewer(request).may("instances:write", namespace)
        and current.deleted_at is None
        and current.version == versions[0].version,
    )


async def _tests_of(database: Database, namespace: str, workflow: str) -> list[TestSummary] | None:
    """The workflow's WorkflowTests and their last runs; None where this API has no
    database for the testing_framework component (the rest of the page still shows)."""
    try:
        database.pool("testing_framework")
    except ConfigurationError:
        return None
    async with database.connection("testing_framework") as conn:
        return await tests_repository.stored_tests(conn, [namespace], workflow=workflow)


# --- events and dead letters ------------------------------------------------------------


async def _namespace_choice(request: web.Request, permission: str) -> tuple[list[str], str | None]:
    """The namespaces the caller may read, and the one asked for (else the first)."""
    namespaces = await _readable(request, permission)
    chosen = request.query.get("namespace") or (namespaces[0] if namespaces else None)
    if chosen is not None and chosen not in namespaces:
        raise _forbidden(_viewer(request), permission, chosen)
    return namespaces, chosen


def _next_url(path: str, query: Mapping[str, str], cursor: str | None) -> str | None:
    if cursor is None:
        return None
    pairs = [(k, v) for k, v in query.items() if k != "after"]
    return f"{path}?" + urllib.parse.urlencode([*pairs, ("after", cursor)])


async def events_page(request: web.Request) -> web.Response:
    namespaces, namespace = await _namespace_choice(request, "events:read")
    f = queries.EventFilter.from_query(request.query)
    page = queries.EventPage([], None)
    series: list[queries.EventSeries] = []
    if namespace is not None:
        async with request.app[DASHBOARD_DATABASE].connection("event_processing") as conn:
            page = await queries.search_events(conn, namespace, f)
            series = await queries.sequences(conn, namespace)
    return render(
        request,
        "events.html",
        namespaces=namespaces,
        namespace=namespace,
        filter=f,
        query=request.query,
        events=page.events,
        series=series,
        next_url=_next_url(f"{PREFIX}/events", request.query, page.next_cursor),
    )


async def dead_letters_page(request: web.Request) -> web.Response:
    namespaces, namespace = await _namespace_choice(request, "events:read")
    status_name = request.query.get("status") or None
    status = None
    if status_name is not None:
        try:
            status = DeadLetterStatus(status_name)
        except ValueError:
            raise ValidationError(f"unknown status {status_name[:40]!r}") from None
    letters: list[DeadLetter] = []
    cursor = None
    if namespace is not None:
        async with request.app[DASHBOARD_DATABASE].connection("event_processing") as conn:
            found = await events_repository.list_dead_letters(
                conn,
                namespace,
                limit=queries.PAGE_SIZE,
                cursor=request.query.get("after") or None,
                status=status,
            )
        letters, cursor = found.items, found.next_cursor
    return render(
        request,
        "deadletters.html",
        namespaces=namespaces,
        namespace=namespace,
        chosen_status=status_name,
        statuses=[s.value for s in DeadLetterStatus],
        letters=letters,
        may_write=namespace is not None and _viewer(request).may("deadletters:write", namespace),
        notice=request.query.get("notice"),
        next_url=_next_url(f"{PREFIX}/deadletters", request.query, cursor),
    )


async def replay_letter(request: web.Request) -> web.StreamResponse:
    namespace = request.match_info["namespace"]
    try:
        letter_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise NotFoundError("no such dead letter") from None
    async with (
        request.app[DASHBOARD_DATABASE].connection("event_processing") as conn,
        conn.transaction(),
    ):
        replayed = await events_repository.replay_dead_letter(conn, namespace, letter_id)
    said = (
        f"replayed {replayed.type} {replayed.event_id}"
        if replayed is not None
        else f"dead letter {letter_id} is not open (or gone): nothing replayed"
    )
    query = urllib.parse.urlencode({"namespace": namespace, "notice": said})
    return redirect(f"{PREFIX}/deadletters?{query}")


async def purge_letters(request: web.Request) -> web.StreamResponse:
    """Delete the checked letters, or all created before a time."""
    namespace = request.match_info["namespace"]
    form = await request.post()
    ids = []
    for raw in form.getall("id", []):
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            raise ValidationError(f"{str(raw)[:40]!r} is not a dead letter id") from None
    older = _form_time(str(form.get("older_than", "")))
    if not ids and older is None:
        said = "nothing purged: check letters, or give a time"
    else:
        async with request.app[DASHBOARD_DATABASE].connection("event_processing") as conn:
            purged = await events_repository.purge_dead_letters(
                conn, namespace, ids=ids or None, older_than=older
            )
        said = f"purged {purged} dead letter{'s' if purged != 1 else ''}"
    query = urllib.parse.urlencode({"namespace": namespace, "notice": said})
    return redirect(f"{PREFIX}/deadletters?{query}")


def _form_time(raw: str) -> dt.datetime | None:
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(f"older_than must be a date and time, got {raw[:40]!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# --- integrations -------------------------------------------------------------------------


async def integrations_page(request: web.Request) -> web.Response:
    namespaces = await _readable(request, "integrations:read")
    only = request.query.get("namespace") or None
    if only is not None and only not in namespaces:
        raise _forbidden(_viewer(request), "integrations:read", only)
    async with request.app[DASHBOARD_DATABASE].connection("integration") as conn:
        found = await queries.integrations(conn, [only] if only else namespaces)
    return render(
        request, "integrations.html", integrations=found, namespaces=namespaces, namespace=only
    )


# --- submitting a run -----------------------------------------------------------------


def _argument(parameter: Parameter, raw: str | None) -> Any:
    """A form field as the parameter's JSON type; a :class:`ValidationError` naming it."""
    name = parameter.name
    if parameter.type == "boolean":
        return raw == "true"
    if raw is None or raw == "":
        if parameter.default is None:
            raise ValidationError(f"{name} is required")
        return parameter.default
    try:
        if parameter.type == "integer":
            return int(raw)
        if parameter.type == "number":
            return float(raw)
        if parameter.type in ("object", "array"):
            value = json.loads(raw)
            expected = dict if parameter.type == "object" else list
            if not isinstance(value, expected):
                raise ValidationError(f"{name} must be a JSON {parameter.type}")
            return value
    except ValueError:
        raise ValidationError(
            f"{name} must be {'an' if parameter.type == 'integer' else 'a'} "
            f"{parameter.type}, got {raw[:60]!r}"
        ) from None
    if parameter.enum and raw not in parameter.enum:
        raise ValidationError(f"{name} must be one of {', '.join(parameter.enum)}")
    return raw


async def _definition_spec(
    request: web.Request, namespace: str, name: str
) -> tuple[Any, WorkflowDefinitionSpec]:
    """The version a run that names none gets (a gated definition's newest passed one),
    so the form asks for that version's parameters."""
    async with request.app[DASHBOARD_DATABASE].connection("workflow_orchestrator") as conn:
        definition = await current_definition(conn, namespace, name)
        unusable = None if definition is not None else await unusable_reason(conn, namespace, name)
    if unusable is not None:
        raise NotFoundError(f"workflow definition {name[:253]!r} has no version to run: {unusable}")
    if definition is None:
        raise NotFoundError(
            f"no workflow definition {name[:253]!r} in namespace {namespace[:63]!r}"
        )
    return definition, WorkflowDefinitionSpec.model_validate(definition.spec)


async def submit_page(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["definition"]
    definition, spec = await _definition_spec(request, namespace, name)
    return render(
        request,
        "submit.html",
        namespace=namespace,
        definition=definition,
        parameters=spec.parameters,
        values={},
        error=None,
    )


async def submit(request: web.Request) -> web.StreamResponse:
    """Start a run from the form: each field read as its parameter's type."""
    namespace, name = request.match_info["namespace"], request.match_info["definition"]
    definition, spec = await _definition_spec(request, namespace, name)
    form = await request.post()
    values = {k: str(v) for k, v in form.items() if k != "csrf"}
    try:
        arguments = {p.name: _argument(p, values.get(p.name)) for p in spec.parameters}
        created = await request.app[CONTROL].create(
            namespace, name, arguments, _viewer(request).principal.name
        )
    except (ValidationError, ActionRefused) as exc:
        return render(
            request,
            "submit.html",
            status=400,
            namespace=namespace,
            definition=definition,
            parameters=spec.parameters,
            values=values,
            error=str(exc),
        )
    return redirect(f"{PREFIX}/runs/{namespace}/{created}")


# --- live updates ---------------------------------------------------------------------


async def _stream(request: web.Request, accept: Callable[[Change], bool]) -> web.StreamResponse:
    """Server-Sent Events: each accepted change as an event, until the stream's time is up
    or the browser goes away."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass events on at once
            "X-Content-Type-Options": "nosniff",
        }
    )
    request.app[LIVE].start()  # before the answer starts: a missing database is a 503 page
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_SECONDS
    try:
        await response.write(b"retry: 2000\n\n")
        async with request.app[LIVE].subscribe() as queue:
            while (left := deadline - loop.time()) > 0:
                try:
                    change = await asyncio.wait_for(queue.get(), min(HEARTBEAT_SECONDS, left))
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if change.kind == "bye":
                    break
                if change.kind == "resync" or accept(change):
                    data = json.dumps(change.data)
                    await response.write(f"event: {change.kind}\ndata: {data}\n\n".encode())
    except ConnectionError:
        pass  # the page was closed
    return response


async def runs_stream(request: web.Request) -> web.StreamResponse:
    """Changes of the runs the caller may read (of one namespace, with ``?namespace=``)."""
    viewer = _viewer(request)
    only = request.query.get("namespace") or None

    def accept(change: Change) -> bool:
        namespace = str(change.data.get("namespace", ""))
        if change.kind != "run" or (only is not None and namespace != only):
            return False
        return viewer.may("instances:read", namespace)

    return await _stream(request, accept)


async def run_stream(request: web.Request) -> web.StreamResponse:
    """Changes of one run and of its tasks."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    async with request.app[DASHBOARD_DATABASE].connection("workflow_orchestrator") as conn:
        instance = await orchestrator.instance_by_name(conn, namespace, name)
    ids = {str(instance.id)} if instance is not None else set()

    def accept(change: Change) -> bool:
        if change.kind == "run":
            if change.data.get("namespace") == namespace and change.data.get("name") == name:
                ids.add(str(change.data.get("id")))  # a new run of the name
                return True
            return False
        return str(change.data.get("run")) in ids

    return await _stream(request, accept)


PAGES: tuple[PageRoute, ...] = (
    PageRoute("GET", f"{PREFIX}/login", login_page, "login-page", "The sign-in form.", public=True),
    PageRoute(
        "POST", f"{PREFIX}/login", login, "login", "Sign in (a session cookie).", public=True
    ),
    PageRoute("POST", f"{PREFIX}/logout", logout, "logout", "Sign out."),
    PageRoute("GET", f"{PREFIX}", home, "home", "To the runs.", public=True),
    PageRoute("GET", f"{PREFIX}/", home, "home-slash", "To the runs.", public=True),
    PageRoute(
        "GET",
        f"{PREFIX}/runs",
        runs_list,
        "runs",
        "Runs, newest first, filtered.",
        "instances:read",
        ANY_NAMESPACE,
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/runs/{{namespace}}/{{name}}",
        run_page,
        "run",
        "One run: graph, attempts, logs, trace.",
        "instances:read",
        "namespace",
    ),
    PageRoute(
        "POST",
        f"{PREFIX}/runs/{{namespace}}/{{name}}/{{action}}",
        run_action,
        "run-action",
        "Cancel, suspend, resume or retry a run.",
        "instances:write",
        "namespace",
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/overview",
        overview,
        "overview",
        "Charts and tables over the observability views (ui_components).",
        "instances:read",
        ANY_NAMESPACE,
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/definitions",
        definitions_list,
        "definitions",
        "Workflow definitions, their latest versions.",
        "workflows:read",
        ANY_NAMESPACE,
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/definitions/{{namespace}}/{{name}}",
        definition_page,
        "definition",
        "One definition: versions, a diff, parameters, tasks, triggers.",
        "workflows:read",
        "namespace",
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/integrations",
        integrations_page,
        "integrations",
        "Integrations and their health.",
        "integrations:read",
        ANY_NAMESPACE,
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/events",
        events_page,
        "events",
        "A namespace's events, searchable, and its ordered series.",
        "events:read",
        ANY_NAMESPACE,
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/deadletters",
        dead_letters_page,
        "deadletters",
        "A namespace's dead letters.",
        "events:read",
        ANY_NAMESPACE,
    ),
    PageRoute(
        "POST",
        f"{PREFIX}/deadletters/{{namespace}}/{{id}}/replay",
        replay_letter,
        "deadletter-replay",
        "Send a dead letter's event through dispatch again.",
        "deadletters:write",
        "namespace",
    ),
    PageRoute(
        "POST",
        f"{PREFIX}/deadletters/{{namespace}}/purge",
        purge_letters,
        "deadletter-purge",
        "Delete dead letters (checked ones, or older than a time).",
        "deadletters:write",
        "namespace",
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/submit/{{namespace}}/{{definition}}",
        submit_page,
        "submit-page",
        "The form that starts a run, from the definition's parameters.",
        "instances:write",
        "namespace",
    ),
    PageRoute(
        "POST",
        f"{PREFIX}/submit/{{namespace}}/{{definition}}",
        submit,
        "submit",
        "Start a run (a WorkflowInstance).",
        "instances:write",
        "namespace",
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/live/runs",
        runs_stream,
        "live-runs",
        "Server-Sent Events: changes of the runs the caller may read.",
        "instances:read",
        ANY_NAMESPACE,
    ),
    PageRoute(
        "GET",
        f"{PREFIX}/live/runs/{{namespace}}/{{name}}",
        run_stream,
        "live-run",
        "Server-Sent Events: changes of one run and its tasks.",
        "instances:read",
        "namespace",
    ),
)
