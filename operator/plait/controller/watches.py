"""How the operator follows Jobs, Pods and Events: its own streams, or Kopf's under peering.

Replicas that share the runs (the default) each watch with ``plait.kernel.watching``: one
decoded stream per resource and namespace, and no Kopf machinery for objects that are
mostly another replica's. Under Kopf's peering (``--peering``: one replica works, the
others stand by) the same handlers are Kopf event handlers instead, because only Kopf
knows when this replica is the one that works, and pauses its handlers otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import kopf

from plait.kernel.watching import Subscription, Watched, Watcher, WatchHandler

__all__ = ["register_with_kopf", "run_watches"]


def register_with_kopf(
    registry: kopf.OperatorRegistry, subscriptions: Sequence[Subscription]
) -> None:
    """Each subscription as a Kopf event handler, its selectors applied by the API server."""
    for watched, handler in subscriptions:
        _register_one(registry, watched, handler)


def _register_one(registry: kopf.OperatorRegistry, watched: Watched, handler: WatchHandler) -> None:
    resource = (watched.group, watched.version, watched.plural)

    async def select(settings: kopf.OperatorSettings, **_: Any) -> None:
        if watched.label_selector:
            settings.watching.label_selectors[resource] = watched.label_selector
        if watched.field_selector:
            settings.watching.field_selectors[resource] = watched.field_selector

    async def on_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        work = handler(type, dict(body))
        if work is not None:
            await work

    kopf.on.startup(id=f"select-{watched.plural}", registry=registry)(select)
    kopf.on.event(*resource, id=f"follow-{watched.plural}", registry=registry)(on_event)


async def run_watches(
    subscriptions: Sequence[Subscription],
    namespaces: Sequence[str] | None,
    stop: asyncio.Event,
) -> None:
    """Watch every subscription until ``stop`` is set (the credentials must be loaded)."""
    watchers = [Watcher(watched, handler, namespaces) for watched, handler in subscriptions]
    await asyncio.gather(*(watcher.run(stop) for watcher in watchers))
