"""The specs of the kinds other kinds refer to, kept in memory from their watch streams.

Validation resolves references by name (a workflow's ``taskRef``, a trigger's workflow,
an integration) without an API call: every replica keeps each referenced kind's specs by
namespace and name, from a stream of its own (``plait.kernel.watching``). These kinds are
few and change rarely, so the streams cost little; the reconciler waits for their first
lists before it validates anything, so a reference is never judged missing only because
its object was not listed yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from plait import API_GROUP, API_VERSION
from plait.kernel.watching import Watched, Watcher, WatchHandler
from plait.resources import KINDS_BY_NAME
from plait.resources.validation import Lookup

__all__ = ["REFERENCED_KINDS", "ReferenceIndexes"]

#: The kinds other kinds refer to by name.
REFERENCED_KINDS = (
    "WorkflowDefinition",
    "TaskDefinition",
    "Integration",
    "EventDefinition",
    "EventTrigger",  # a WorkflowTest case started by a trigger is checked against it
)

_Key = tuple[str, str]


class ReferenceIndexes:
    """By kind, each object's spec by (namespace, name), as the watch last gave it."""

    def __init__(
        self, namespaces: Sequence[str] | None, kinds: Sequence[str] = REFERENCED_KINDS
    ) -> None:
        self._specs: dict[str, dict[_Key, Mapping[str, Any]]] = {kind: {} for kind in kinds}
        self._watchers = [
            Watcher(
                Watched(API_GROUP, API_VERSION, KINDS_BY_NAME[kind].plural),
                self._handler(self._specs[kind]),
                namespaces,
            )
            for kind in kinds
        ]
        self._listed = asyncio.Event()

    @staticmethod
    def _handler(specs: dict[_Key, Mapping[str, Any]]) -> WatchHandler:
        def on_event(event_type: str | None, obj: Mapping[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            key = (meta.get("namespace") or "", meta.get("name") or "")
            if event_type == "DELETED":
                specs.pop(key, None)
            else:
                specs[key] = dict(obj.get("spec") or {})

        return on_event

    async def run(self, stop: asyncio.Event) -> None:
        """Follow every referenced kind until ``stop`` is set (credentials must be loaded)."""
        listing = asyncio.ensure_future(
            asyncio.gather(*(watcher.listed() for watcher in self._watchers))
        )
        listing.add_done_callback(self._on_listed)
        try:
            await asyncio.gather(*(watcher.run(stop) for watcher in self._watchers))
        finally:
            listing.cancel()

    def _on_listed(self, listing: asyncio.Future[Any]) -> None:
        if not listing.cancelled():
            self._listed.set()

    async def listed(self) -> None:
        """Wait until every kind's first list is in."""
        await self._listed.wait()

    def lookup(self, namespace: str) -> Lookup:
        """A validation lookup in one namespace: (kind, name) -> spec, or None."""

        def find(kind: str, name: str) -> Mapping[str, Any] | None:
            specs = self._specs.get(kind)
            return None if specs is None else specs.get((namespace, name))

        return find
