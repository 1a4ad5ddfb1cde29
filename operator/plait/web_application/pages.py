"""The dashboard's pages and actions, each declared once with the permission it needs.

:data:`PAGES` is the dashboard's route table: ``plait api`` turns every entry into one of
its routes and checks the declared permission with the same code as the JSON API's (see
:mod:`plait.api.dashboard`), before the handler runs. The handlers then only hide what
the caller could not use anyway (a viewer sees no Cancel button; the server refuses it
too). Pages are rendered on the server from autoescaped Jinja2 templates; the scripts
they load are static files (no inline script), so a strict Content-Security-Policy holds.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from plait.auth.permissions import ANY_NAMESPACE, Principal
from plait.auth.service import AuthenticationFailed, AuthService, LoginThrottled
from plait.errors import NotFoundError
from plait.kernel.database import Database
from plait.web_application import queries
from plait.web_application.control import ACTIONS, ActionRefused, RunControl
from plait.workflow_orchestrator.states import WorkflowPhase

__all__ = [
    "AUTH_SERVICE",
    "CONTROL",
    "DASHBOARD_DATABASE",
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
    env.globals["prefix"] = PREFIX
    return env


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
    f = queries.RunFilter.from_query(request.query, request.query.getall("phase", []))
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
        raise NotFoundError(f"no run {name[:253]!r} in namespace {namespace[:63]!r}")
    viewer = _viewer(request)
    phase = detail.instance.phase.value
    actions = [a for a, phases in ACTIONS.items() if phase in phases]
    return render(
        request,
        "run.html",
        run=detail.instance,
        detail=detail,
        graph=detail.graph(),
        actions=actions if viewer.may("instances:write", namespace) else [],
        notice=request.query.get("notice"),
        spans=_waterfall(detail),
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
)
