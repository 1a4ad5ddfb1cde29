"""Live updates: PostgreSQL's NOTIFY to the browsers, as Server-Sent Events.

The migrations make every change of a run (``plait_runs``) and of a task attempt
(``plait_tasks``) a NOTIFY sent at commit. Each ``plait api`` process keeps one listening
connection per channel (on the DSN of the component that owns the table, so a database
per component works too) and fans every notification out to the streams open in that
process; a page's script then fetches the page again and swaps the changed parts in. After
the listening connection was lost, every stream is told to resync (a notification sent
meanwhile is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg

from plait.kernel.database import Database

__all__ = ["CHANNELS", "Change", "LiveFeed"]

logger = logging.getLogger(__name__)

#: Channel -> the component whose database sends it.
CHANNELS = {"plait_runs": "workflow_orchestrator", "plait_tasks": "task_execution"}
#: Changes a slow stream may have waiting; past it, it is told to resync instead.
QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Change:
    """One notification: ``kind`` ``run``, ``task`` or ``resync``, and its payload."""

    kind: str
    data: dict[str, Any]


class LiveFeed:
    """The process's listeners and the streams subscribed to them."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._subscribers: set[asyncio.Queue[Change]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()

    def start(self) -> None:
        """Listen in the background (started with the first stream, not at start-up)."""
        if self._tasks:
            return
        conninfos: dict[str, list[str]] = {}
        for channel, component in CHANNELS.items():
            conninfo = self._database.pool(component).conninfo
            if not isinstance(conninfo, str):  # pools made here always have a DSN string
                raise TypeError(f"the pool of {component} has no DSN")
            conninfos.setdefault(conninfo, []).append(channel)
        for conninfo, channels in conninfos.items():
            self._tasks.append(asyncio.create_task(self._listen(conninfo, channels)))

    def close_streams(self) -> None:
        """Tell every open stream to end (the process is stopping)."""
        for queue in list(self._subscribers):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(Change("bye", {}))

    async def stop(self) -> None:
        self.close_streams()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _publish(self, change: Change) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                # Too slow to keep up: drop what waits, and have it reload once instead.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(Change("resync", {}))

    async def _listen(self, conninfo: str, channels: list[str]) -> None:
        delay = 0.5
        lost = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    for channel in channels:
                        await conn.execute(f"LISTEN {channel}")
                    self.listening.set()
                    delay = 0.5
                    if lost:
                        self._publish(Change("resync", {}))
                    async for note in conn.notifies():
                        try:
                            data = json.loads(note.payload)
                        except ValueError:
                            continue
                        kind = "run" if note.channel == "plait_runs" else "task"
                        self._publish(Change(kind, data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                lost = True
                logger.warning(
                    "live updates: listening on %s failed (%s); retrying in %.1f s",
                    ", ".join(channels),
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Change]]:
        """A queue of every change while the ``with`` lasts."""
        self.start()
        queue: asyncio.Queue[Change] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
