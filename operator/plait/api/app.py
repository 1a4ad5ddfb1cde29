"""``plait api``: the stateless HTTP process (any number of replicas).

It serves health, readiness and Prometheus metrics, CloudEvents ingestion, the
dead-letter queue, WorkflowTests and their results, and accounts (``/v1``, each route
with its permission; see
:mod:`plait.api.access`) and its OpenAPI document, all declared in the route table of
:mod:`plait.api.routes`. It writes only to PostgreSQL. Every error is
``application/problem+json``; a request that is the client's fault is a 4xx, never a 5xx.
Slow clients are cut off: a body must arrive within ``--body-timeout``, and a connection
that sends nothing (or not a whole request head) for ``--keepalive-timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import click
import psycopg
import psycopg_pool
from aiohttp import web
from prometheus_client import Histogram

from plait.api.access import AUTH, check_access
from plait.api.auth import TOKEN_ENV, TOKEN_FILE_ENV, TokenStore
from plait.api.context import CONFIG, DATABASE, ApiConfig
from plait.api.dashboard import add_dashboard, dashboard_components
from plait.api.events import SCHEMA_VALIDATOR
from plait.api.openapi import DOCUMENT
from plait.api.problems import Problem, problem_response
from plait.api.routes import ROUTES, document
from plait.api.routing import Handler, add_routes, route_of
from plait.auth.secrets import KEY_FILE_ENV
from plait.auth.service import AuthService
from plait.auth.settings import AuthSettings
from plait.errors import ConfigurationError, NotFoundError, ValidationError
from plait.event_processing.cloudevents import InvalidEventError, SchemaValidator
from plait.event_processing.gauges import queue_gauges
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.signals import run_until_signalled
from plait.observability import Telemetry
from plait.observability.logging import set_process_component
from plait.observability.metrics import DATABASE_GAUGES

__all__ = ["DATABASE", "ApiConfig", "api_command", "build_app", "serve"]

logger = logging.getLogger(__name__)
#: After refusing a request whose body was not read whole, the rest is read and discarded
#: for at most this long before the connection closes, so the client gets to read the
#: answer (closing with unread data would reset the connection under it).
LINGER_SECONDS = 2.0
REQUEST_DURATION = Histogram(
    "plait_api_request_duration_seconds",
    "Time from request to response of plait api, by route and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as problem+json; the duration of every request into the histogram."""
    started = time.perf_counter()
    status = 500
    try:
        declared = route_of(request)
        # Every declared route says whether it is public, else the permission it needs;
        # what matched none (404, 405) under /v1 still needs credentials, so strangers
        # learn nothing about the routes.
        if (declared is None and request.path.startswith("/v1/")) or (
            declared is not None and not declared.public
        ):
            await check_access(request, declared)
        response = await handler(request)
        status = response.status
        return response
    except Problem as problem:
        status = problem.status
        response = problem_response(problem)
        if problem.status in (400, 408, 413) and not request.content.at_eof():
            # Do not read (or linger over) the rest of a body we refused.
            response.force_close()
        return response
    except InvalidEventError as exc:
        status = exc.status
        return problem_response(
            Problem(
                exc.status,
                "invalid-event",
                exc.title,
                exc.detail or exc.title,
                errors=[v.as_json() for v in exc.violations],
            )
        )
    except ValidationError as exc:
        status = 400
        return problem_response(Problem(400, "invalid-request", "Invalid request", str(exc)))
    except NotFoundError as exc:
        status = 404
        return problem_response(Problem(404, "not-found", "Not found", str(exc)))
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        if isinstance(exc, psycopg.errors.ProgramLimitExceeded):
            # Not an outage (an index row too large, say): a retry would fail the same way.
            status = 500
            logger.exception("PostgreSQL refused a request over one of its limits")
            return problem_response(_INTERNAL)
        status = 503
        logger.warning("database unavailable: %s", type(exc).__name__)
        return problem_response(
            Problem(
                503,
                "database-unavailable",
                "Database unavailable",
                "PostgreSQL cannot be reached right now; nothing was stored. Retry later.",
                headers={"Retry-After": "1"},
            )
        )
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception:
        status = 500
        logger.exception("unexpected error in %s %s", request.method, request.path)
        return problem_response(_INTERNAL)
    finally:
        route = request.match_info.route.resource
        REQUEST_DURATION.labels(
            request.method, route.canonical if route is not None else "unmatched", str(status)
        ).observe(time.perf_counter() - started)


_INTERNAL = Problem(
    500,
    "internal-error",
    "Internal error",
    "plait api failed to handle this request; the error is in its log",
)


def build_app(database: Database, config: ApiConfig | None = None) -> web.Application:
    """The application: process-level routes, event ingestion and the dead-letter queue.

    Without ``config`` no token is accepted, so every ``/v1`` request gets 401.
    """
    config = config or ApiConfig()
    app = web.Application(
        client_max_size=max(config.max_batch_bytes, config.max_event_bytes) + 1,
        middlewares=[problems_middleware],
    )
    app[DATABASE] = database
    app[CONFIG] = config
    app[SCHEMA_VALIDATOR] = SchemaValidator()
    app[DOCUMENT] = document()
    auth = AuthService(lambda: database.connection("auth"), config.auth)
    app[AUTH] = auth

    async def close_auth(_: web.Application) -> None:
        auth.close()

    app.on_cleanup.append(close_auth)
    add_routes(app, ROUTES)
    add_dashboard(app, database)
    return app


async def serve(host: str, port: int, stop: asyncio.Event, config: ApiConfig | None = None) -> None:
    settings = Settings()
    # The pool opens lazily (min 0): the process starts, and reports not-ready, even while
    # PostgreSQL is down.
    settings = settings.model_copy(update={"database_pool_min": 0})
    set_process_component("api")
    database = await Database.open(
        settings,
        [
            component_by_name("event_processing"),
            component_by_name("observability"),
            component_by_name("auth"),
            component_by_name("integration"),  # webhooks: the Integration to verify with
            # The dashboard's (runs, attempts, ui components, WorkflowTests and their
            # results), where their DSNs are set.
            *dashboard_components(settings),
        ],
    )
    telemetry = Telemetry()
    runner: web.AppRunner | None = None
    try:
        app = build_app(database, config)  # refuses a bad configuration before anything runs
        await telemetry.start(database, "api")
        DATABASE_GAUGES.register_source("event_processing", queue_gauges)
        runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=app[CONFIG].keepalive_timeout,
            lingering_time=LINGER_SECONDS,
        )
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        logger.info("plait api listening on %s:%d", host, port)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        DATABASE_GAUGES.unregister_source("event_processing")
        await telemetry.stop()
        await database.close()


@click.command("api")
@click.option(
    "--host",
    default="0.0.0.0",
    show_default=True,
    envvar="PLAIT_API_HOST",
    help="Address to listen on.",
)
@click.option(
    "--port",
    type=int,
    default=8000,
    show_default=True,
    envvar="PLAIT_API_PORT",
    help="Port of the API, /healthz, /readyz and /metrics.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    envvar=TOKEN_FILE_ENV,
    help="File with the accepted bearer tokens, one per line (a mounted Secret); re-read "
    f"when it changes. {TOKEN_ENV} adds one more token.",
)
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    envvar="PLAIT_API_ALLOW_UNAUTHENTICATED",
    help="Serve /v1 without bearer tokens (only for a trusted network or local testing).",
)
@click.option(
    "--max-event-bytes",
    type=click.IntRange(min=1),
    default=262144,
    show_default=True,
    envvar="PLAIT_API_MAX_EVENT_BYTES",
    help="Largest accepted event (binary-mode body, structured event, or one batch entry).",
)
@click.option(
    "--max-batch-bytes",
    type=click.IntRange(min=1),
    default=4 * 1024 * 1024,
    show_default=True,
    envvar="PLAIT_API_MAX_BATCH_BYTES",
    help="Largest accepted batch body.",
)
@click.option(
    "--max-batch-events",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    envvar="PLAIT_API_MAX_BATCH_EVENTS",
    help="Most events in one batch.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    envvar="PLAIT_EVENT_MAX_ATTEMPTS",
    help="Dispatch attempts of each received event before it is dead-lettered.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    envvar="PLAIT_API_BODY_TIMEOUT",
    help="Seconds a client has to send a whole request body; slower clients get 408.",
)
@click.option(
    "--keepalive-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=75.0,
    show_default=True,
    envvar="PLAIT_API_KEEPALIVE_TIMEOUT",
    help="Seconds before closing a connection that sends no request (or not a whole request head).",
)
def api_command(
    host: str,
    port: int,
    token_file: str | None,
    allow_unauthenticated: bool,
    max_event_bytes: int,
    max_batch_bytes: int,
    max_batch_events: int,
    max_attempts: int,
    body_timeout: float,
    keepalive_timeout: float,
) -> None:
    """Run the HTTP API (stateless; run as many replicas as you like)."""
    environ = dict(os.environ)
    if token_file is not None:
        environ[TOKEN_FILE_ENV] = token_file
    tokens = TokenStore.from_environment(environ)
    auth = AuthSettings.from_environment(environ)
    if (
        not tokens.configured
        and auth.key is None
        and auth.kubernetes is None
        and not allow_unauthenticated
    ):
        raise ConfigurationError(
            f"plait api has no way to authenticate anyone: set {KEY_FILE_ENV} (the key of "
            f"Plait's own tokens and sessions), {TOKEN_FILE_ENV} (a file with one shared "
            f"token per line, e.g. a mounted Secret) or {TOKEN_ENV}, or pass "
            "--allow-unauthenticated to serve /v1 without authentication"
        )
    if auth.key is None and not allow_unauthenticated:
        logger.warning(
            "no token key (%s): Plait users, tokens and sessions are refused; only the "
            "shared token file%s is accepted",
            KEY_FILE_ENV,
            " and Kubernetes tokens" if auth.kubernetes is not None else "",
        )
    if allow_unauthenticated:
        logger.warning("serving /v1 WITHOUT authentication (--allow-unauthenticated)")
    config = ApiConfig(
        tokens=tokens,
        allow_unauthenticated=allow_unauthenticated,
        auth=auth,
        max_event_bytes=max_event_bytes,
        max_batch_bytes=max_batch_bytes,
        max_batch_events=max_batch_events,
        max_attempts=max_attempts,
        body_timeout=body_timeout,
        keepalive_timeout=keepalive_timeout,
    )

    run_until_signalled(lambda stop: serve(host, port, stop, config))
