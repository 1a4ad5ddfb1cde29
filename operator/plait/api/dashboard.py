"""The dashboard inside ``plait api``: the pages of :mod:`plait.web_application.pages`
turned into routes, guarded by the same :func:`~plait.api.access.check_access` and
:class:`~plait.api.routing.Access` declarations as the JSON API.

Around every page: a caller without credentials is sent to the sign-in page (a GET) or
gets 401; a caller without the permission gets a 403 page naming it; a write made with
the session cookie must carry the session's CSRF token (``SameSite=Strict`` already keeps
other sites' forms out; the token also keeps out same-site pages that are not Plait's).
Every answer carries a strict Content-Security-Policy (no inline script or style), and
the hashed static files are served with a year of caching.
"""

from __future__ import annotations

import base64
import hmac
import logging
import mimetypes
import urllib.parse

from aiohttp import web

from plait.api.access import AUTH, PRINCIPAL, SESSION_COOKIE, check_access
from plait.api.problems import Problem
from plait.api.routing import Access, Reply, Route
from plait.auth.permissions import Principal
from plait.errors import ConfigurationError, NotFoundError, ValidationError
from plait.kernel.components import Component, component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.web_application import pages, workflowtests
from plait.web_application.control import RunControl
from plait.web_application.live import LiveFeed

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DASHBOARD_ROUTES",
    "add_dashboard",
    "csrf_token",
    "dashboard_components",
]

logger = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_PAGE = {200: Reply("An HTML page.", content_type="text/html")}


#: What the dashboard (and the WorkflowTest routes) read besides the API's own components.
DASHBOARD_COMPONENTS = (
    "workflow_orchestrator",
    "task_execution",
    "web_application",
    "integration",
    "testing_framework",
)


def dashboard_components(settings: Settings) -> list[Component]:
    """The dashboard's components that have a database configured (the shared DSN, or
    their own): without them the pages say so (503) and the rest of the API runs."""
    found = []
    for name in DASHBOARD_COMPONENTS:
        component = component_by_name(name)
        try:
            settings.database_url_for(component)
        except ConfigurationError:
            logger.warning(
                "the dashboard has no database for %s (PLAIT_DATABASE_URL_%s): its pages "
                "answer 503",
                name,
                component.env_suffix,
            )
            continue
        found.append(component)
    return found


def _route(page: pages.PageRoute) -> Route:
    access = None if page.public else Access(page.permission, page.namespace)
    return Route(
        page.method,
        page.path,
        page.handler,
        f"dashboard.{page.name}",
        page.summary,
        _PAGE,
        public=page.public,
        access=access,
    )


#: The dashboard's routes, each with its declared permission (not in /openapi.json:
#: they answer HTML, not the API's JSON).
DASHBOARD_ROUTES: tuple[Route, ...] = tuple(_route(p) for p in (*pages.PAGES, *workflowtests.PAGES))


def csrf_token(app: web.Application, session_cookie: str) -> str | None:
    """The session's CSRF token: a keyed hash of its cookie (no state to share between
    replicas); None without a server key, when no session can exist anyway."""
    key = app[AUTH].settings.key
    if key is None:
        return None
    return base64.urlsafe_b64encode(key.digest("csrf:" + session_cookie)).decode().rstrip("=")


async def _check_csrf(request: web.Request, principal: Principal) -> str | None:
    """The token this caller's forms must carry; refuses a write that lacks it."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if principal.method != "session" or not cookie:
        return None
    expected = csrf_token(request.app, cookie)
    if expected is None:
        return None
    if request.method not in ("GET", "HEAD"):
        sent = request.headers.get("X-CSRF-Token")
        if sent is None:
            form = await request.post()
            sent = str(form.get("csrf", ""))
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Problem(
                403,
                "csrf",
                "Forbidden",
                "the form is missing this session's CSRF token (reload the page and retry)",
            )
    return expected


def _error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    return pages.render(request, "error.html", status=status, title=title, detail=detail)


def _guard(route: Route) -> pages.Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            if not route.public:
                await check_access(request, route)
                principal = request[PRINCIPAL]
                request[pages.VIEWER] = pages.Viewer(
                    principal, await _check_csrf(request, principal)
                )
            response = await route.handler(request)
        except Problem as problem:
            if problem.status == 401 and request.method == "GET":
                target = urllib.parse.quote(request.path_qs, safe="")
                response = pages.redirect(f"{pages.PREFIX}/login?next={target}")
            else:
                response = _error_page(request, problem.status, problem.title, problem.detail)
                for name, value in problem.headers.items():
                    response.headers[name] = value
        except pages.Forbidden as exc:
            response = _error_page(request, 403, "Forbidden", str(exc))
        except NotFoundError as exc:
            response = _error_page(request, 404, "Not found", str(exc))
        except ValidationError as exc:
            response = _error_page(request, 400, "Invalid request", str(exc))
        except ConfigurationError as exc:
            response = _error_page(request, 503, "Not configured", str(exc))
        if not response.prepared:  # a stream sent its own headers already
            response.headers.update(_SECURITY_HEADERS)
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return guarded


async def _static(request: web.Request) -> web.StreamResponse:
    """A built asset: hashed names, so cached for a year and never revalidated."""
    relative = request.match_info["path"]
    root = pages.STATIC_DIR.resolve()
    path = (root / relative).resolve()
    if root not in path.parents or not path.is_file() or relative.startswith("."):
        raise web.HTTPNotFound()
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.Response(
        body=path.read_bytes(),
        content_type=content_type,
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )


def add_dashboard(app: web.Application, database: Database) -> None:
    """Serve the dashboard under ``/ui`` from ``app`` (after its API routes)."""
    app[pages.DASHBOARD_DATABASE] = database
    app[pages.AUTH_SERVICE] = app[AUTH]
    control = RunControl()
    app[pages.CONTROL] = control
    live = LiveFeed(database)
    app[pages.LIVE] = live

    async def end_streams(_: web.Application) -> None:
        live.close_streams()

    async def close(_: web.Application) -> None:
        await live.stop()
        control.close()

    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(close)
    for route in DASHBOARD_ROUTES:
        app.router.add_route(route.method, route.path, _guard(route), name=route.operation_id)
    app.router.add_get(f"{pages.PREFIX}/static/{{path:.+}}", _static, name="dashboard.static")
