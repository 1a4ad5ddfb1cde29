"""Process routes of ``plait api``: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plait.api.context import DATABASE

__all__ = ["healthz", "metrics", "readyz"]

logger = logging.getLogger(__name__)


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready means "can reach the database", so a replica cut off from PostgreSQL leaves
    the Service's endpoints instead of failing requests."""
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
