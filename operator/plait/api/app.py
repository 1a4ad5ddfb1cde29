"""``plait api``: the stateless HTTP process (any number of replicas).

It serves health, readiness and Prometheus metrics; components add their routes (event
ingestion, REST, the dashboard) to the same application. It writes only to PostgreSQL.
Readiness means "can reach the database", so a replica cut off from PostgreSQL leaves the
Service's endpoints instead of failing requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import click
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database

__all__ = ["api_command", "build_app"]

logger = logging.getLogger(__name__)
DATABASE = web.AppKey("database", Database)


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(2):
            async with request.app[DATABASE].connection("event_processing") as conn:
                await conn.execute("SELECT 1")
    except Exception as exc:
        logger.warning("not ready: %s", type(exc).__name__)
        return web.Response(status=503, text="database unreachable\n")
    return web.Response(text="ok\n")


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(database: Database) -> web.Application:
    """The application with the process-level routes."""
    app = web.Application(client_max_size=1024 * 1024)
    app[DATABASE] = database
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(host: str, port: int, stop: asyncio.Event) -> None:
    settings = Settings()
    # The pool opens lazily (min 0): the process starts, and reports not-ready, even while
    # PostgreSQL is down.
    settings = settings.model_copy(update={"database_pool_min": 0})
    database = await Database.open(settings, [component_by_name("event_processing")])
    runner = web.AppRunner(build_app(database), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    logger.info("plait api listening on %s:%d", host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
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
def api_command(host: str, port: int) -> None:
    """Run the HTTP API (stateless; run as many replicas as you like)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(host, port, stop)

    asyncio.run(main())
