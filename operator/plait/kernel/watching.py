"""Watch streams of high-churn objects (Jobs, Pods, Events) without Kopf's per-object machinery.

Kopf gives every watch event of every object a worker, a cause, a diff, a patch and a
logger, then asks each handler whether it wants it. For Plait's own kinds that is what
makes a reconciler; for the Jobs and Pods of tasks (seven or more events per task, each
seen by every replica) it was the largest single cost of the operator. Here one stream per
resource and namespace is decoded once and each event goes straight to its handler:

- list (in pages), then watch from the list's ``resourceVersion``, with bookmarks so a
  reconnect resumes where it stopped; "410 Gone" lists again;
- objects that vanished while the stream was down are handed over as ``DELETED`` (their
  last metadata: name, namespace, uid, resourceVersion, and the labels and owners the
  :class:`Watched` keeps) after the next list (an informer's semantics: every object's
  end is seen once);
- a handler returns ``None`` (done) or an awaitable; awaitables run as tasks, one object's
  in the order of its events, different objects' concurrently, at most ``concurrency`` at
  a time. A handler that raises is logged; the stream goes on (like Kopf's event handlers).

Each request of a stream (a list, a watch of up to ``server_timeout_seconds``) has its own
connection (``plait.kernel.apiserver``: the Kubernetes client's credentials, read anew).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from plait.kernel.apiserver import ApiServer

__all__ = ["Subscription", "WatchHandler", "WatchSettings", "Watched", "Watcher"]

logger = logging.getLogger(__name__)

#: What a handler is given: the event type (``ADDED``, ``MODIFIED``, ``DELETED``; ``None``
#: for an object as listed) and the object as JSON.
WatchHandler = Callable[[str | None, Mapping[str, Any]], Awaitable[None] | None]

ObjectKey = tuple[str, str]


@dataclass(frozen=True)
class Watched:
    """A resource to watch, with the API server's selectors."""

    group: str
    """API group; ``""`` for the core group."""
    version: str
    plural: str
    label_selector: str | None = None
    field_selector: str | None = None
    kept_labels: frozenset[str] | None = None
    """The labels remembered of each live object (None: all). A stream remembers every
    live object until its deletion, to hand it over as ``DELETED`` should it vanish while
    the stream is down; with tens of thousands of Jobs and Pods that adds up (a Pod with
    all its labels and owners: about 3.3 KB; with its Job name only: about 1.1 KB). A
    handler that reads more of such a ``DELETED`` object than its identity needs its
    labels named here."""
    kept_owners: bool = True
    """Whether each live object's ``ownerReferences`` are remembered too."""

    def path(self, namespace: str | None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        return (
            f"{base}/namespaces/{namespace}/{self.plural}" if namespace else f"{base}/{self.plural}"
        )

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}"


#: A resource and the handler of its events.
Subscription = tuple[Watched, WatchHandler]


@dataclass(frozen=True)
class WatchSettings:
    """How the streams talk to the API server."""

    server_timeout_seconds: int = 300
    """How long the API server keeps one watch request open (it then ends it cleanly)."""
    read_timeout_seconds: float = 330
    """No byte for this long (bookmarks come every minute or so): the connection is dead."""
    connect_timeout_seconds: float = 30
    """Longest wait for a connection to the API server."""
    stop_grace_seconds: float = 10
    """At stop, how long the handlers still running (or queued) are given to finish."""
    page_size: int = 500
    """Objects per page of a list."""
    concurrency: int = 64
    """Handler awaitables running at once, over all objects of a stream."""
    retry_delays: Sequence[float] = field(default=(1, 2, 5, 10, 30))
    """Waits after consecutive failures to connect or read (the last one repeats)."""


@dataclass
class _StreamState:
    """What one stream knows between its requests."""

    version: str | None = None
    """The resourceVersion to watch from; None: list first."""
    known: dict[ObjectKey, Mapping[str, Any]] = field(default_factory=dict)
    """The live objects, by key (what a DELETED handler needs of each)."""
    failures: int = 0
    """Failed requests in a row (the retry delay grows with them)."""


class _Gone(Exception):
    """The resourceVersion is too old to watch from (410): list again."""


class Watcher:
    """One resource, in the given namespaces (None: cluster-wide), to one handler."""

    def __init__(
        self,
        watched: Watched,
        handler: WatchHandler,
        namespaces: Sequence[str] | None,
        settings: WatchSettings | None = None,
    ) -> None:
        self.watched = watched
        self._handler = handler
        self._namespaces: Sequence[str | None] = list(namespaces) if namespaces else [None]
        self._settings = settings or WatchSettings()
        self._slots = asyncio.Semaphore(self._settings.concurrency)
        #: The last task of each object whose handler is running or waiting.
        self._tails: dict[ObjectKey, asyncio.Task[None]] = {}
        #: Whether each stream has delivered its first list (see ``listed``).
        self._listed = {ns: asyncio.Event() for ns in self._namespaces}

    async def listed(self) -> None:
        """Wait until every stream has handed over its first list."""
        for event in self._listed.values():
            await event.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set, then give the handlers still running
        ``stop_grace_seconds`` to finish."""
        streams = [asyncio.create_task(self._stream(ns)) for ns in self._namespaces]
        try:
            await stop.wait()
        finally:
            for stream in streams:
                stream.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            pending = list(self._tails.values())
            if pending:
                _, late = await asyncio.wait(pending, timeout=self._settings.stop_grace_seconds)
                for task in late:  # what they had not recorded is read again at the next start
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)

    async def _stream(self, namespace: str | None) -> None:
        """List and watch one namespace (or all) for as long as the operator runs."""
        state = _StreamState()
        where = namespace or "all namespaces"
        while True:
            try:
                async with ApiServer(connections=1) as session:  # credentials read anew
                    if state.version is None:
                        await self._list(session, namespace, state)
                        self._listed[namespace].set()
                    await self._watch(session, namespace, state)
            except _Gone:
                logger.debug(
                    "watch of %s in %s: resourceVersion expired, listing again", self.watched, where
                )
                state.version = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dead connection, an API error: wait and resume
                delays = self._settings.retry_delays
                delay = delays[min(state.failures, len(delays) - 1)]
                state.failures += 1
                logger.warning(
                    "watch of %s in %s failed (%s); again in %s s",
                    self.watched,
                    where,
                    _describe(exc),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _list(self, session: ApiServer, namespace: str | None, state: _StreamState) -> None:
        """Hand over every object (and, as DELETED, those gone since the last list); the
        stream then watches from the list's resourceVersion."""
        known = state.known
        seen: set[ObjectKey] = set()
        token: str | None = None
        version = ""
        while True:
            query = self._query(limit=self._settings.page_size, **{"continue": token})
            async with session.get(self.watched.path(namespace), query) as response:
                await _raise_for_status(response)
                page = await response.json(loads=json.loads)
            meta = page.get("metadata") or {}
            version = version or meta.get("resourceVersion", "")
            for item in page.get("items") or ():
                key = _key(item)
                seen.add(key)
                known[key] = _tombstone(item, self.watched)
                self._deliver(key, None, item)
            token = meta.get("continue")
            if not token:
                break
        for key in [k for k in known if k not in seen]:
            self._deliver(key, "DELETED", known.pop(key))
        state.version = version
        state.failures = 0

    async def _watch(self, session: ApiServer, namespace: str | None, state: _StreamState) -> None:
        """Follow one watch request until the server ends it. The version of each event
        is kept as it comes, so a request cut short resumes after the last event handed
        over, not from where it began."""
        known = state.known
        query = self._query(
            watch="true",
            resourceVersion=state.version,
            allowWatchBookmarks="true",
            timeoutSeconds=self._settings.server_timeout_seconds,
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._settings.connect_timeout_seconds,
            sock_read=self._settings.read_timeout_seconds,
        )
        async with session.get(self.watched.path(namespace), query, timeout) as response:
            await _raise_for_status(response)
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                state.failures = 0  # the connection works: a later failure starts afresh
                if kind != "BOOKMARK":
                    key = _key(obj)
                    if kind == "DELETED":
                        known.pop(key, None)
                    else:
                        known[key] = _tombstone(obj, self.watched)
                    self._deliver(key, kind, obj)
                state.version = (obj.get("metadata") or {}).get("resourceVersion") or state.version

    def _query(self, **params: Any) -> dict[str, str]:
        params["labelSelector"] = self.watched.label_selector
        params["fieldSelector"] = self.watched.field_selector
        return {k: str(v) for k, v in params.items() if v is not None}

    def _deliver(self, key: ObjectKey, kind: str | None, obj: Mapping[str, Any]) -> None:
        """Call the handler; run what it returns after this object's earlier events."""
        try:
            work = self._handler(kind, obj)
        except Exception:
            logger.exception("handling %s %s/%s failed", self.watched, *key)
            return
        if work is None:
            return
        previous = self._tails.get(key)
        task = asyncio.create_task(self._run(key, previous, work))
        self._tails[key] = task
        task.add_done_callback(lambda t: self._forget(key, t))

    async def _run(
        self, key: ObjectKey, previous: asyncio.Task[None] | None, work: Awaitable[None]
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])
            async with self._slots:
                await work
        except asyncio.CancelledError:
            if asyncio.iscoroutine(work):
                work.close()
            raise
        except Exception:
            logger.exception("handling %s %s/%s failed", self.watched, *key)

    def _forget(self, key: ObjectKey, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


#: The metadata always kept of a live object (besides the labels and owners its Watched
#: keeps; never its managedFields, often the bulk of it).
_IDENTITY_KEYS = ("name", "namespace", "uid", "resourceVersion")


def _tombstone(obj: Mapping[str, Any], watched: Watched) -> Mapping[str, Any]:
    """What is remembered of a live object: its identity, and the labels and owners
    ``watched`` keeps. Keys are interned: one copy of ``plait.dev/instance-uid`` for all
    the objects, not one per object as each decoded event brings its own."""
    meta = obj.get("metadata") or {}
    kept: dict[str, Any] = {k: meta[k] for k in _IDENTITY_KEYS if k in meta}
    labels: Mapping[str, str] = meta.get("labels") or {}
    wanted = watched.kept_labels
    kept["labels"] = {sys.intern(k): v for k, v in labels.items() if wanted is None or k in wanted}
    owners = meta.get("ownerReferences")
    if owners and watched.kept_owners:
        kept["ownerReferences"] = [{sys.intern(k): v for k, v in o.items()} for o in owners]
    return {"metadata": kept}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status == 410:
        raise _Gone()
    if response.status >= 400:
        text = (await response.text())[:500]
        raise RuntimeError(f"HTTP {response.status} from the API server: {text}")
