"""A bounded buffer and the background task that writes it to PostgreSQL in batches.

Log records and spans take the same road: producers (any thread, any coroutine) append to a
:class:`BoundedBuffer` in O(1) and never wait for the database; one :class:`BatchWriter`
task per process drains it in batches. When PostgreSQL is unreachable the writer retries
with capped exponential backoff while the buffer fills; once full, the *newest* items are
dropped and counted. Dropping the newest rather than the oldest keeps what is buffered
contiguous from the moment the outage began (the first errors usually say why), and it
means producers never touch the items the writer is in the middle of sending, so a batch
is removed only after its COPY has committed: nothing is lost by a failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg

if TYPE_CHECKING:
    from plait.kernel.database import Database

__all__ = [
    "BatchWriter",
    "BoundedBuffer",
    "ConnectionFactory",
    "DsnConnections",
    "pool_connections",
]

T = TypeVar("T")
log = logging.getLogger("plait.observability.batching")

ConnectionFactory = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]


def pool_connections(
    database: Database, component: str = "observability", *, timeout: float = 5.0
) -> ConnectionFactory:
    """Connections of ``component``'s pool, waiting at most ``timeout`` s for one."""
    pool = database.pool(component)
    return lambda: pool.connection(timeout=timeout)


class DsnConnections:
    """One reused connection to ``dsn``, reopened after any error (tests, the CLI)."""

    def __init__(self, dsn: str, *, connect_timeout: int = 5) -> None:
        self._dsn = dsn
        self._timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=self._timeout
            )
        try:
            yield self._conn
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class BoundedBuffer(Generic[T]):
    """Thread-safe FIFO of at most ``capacity`` items; :meth:`put` drops the newest when full."""

    def __init__(self, capacity: int, on_drop: Callable[[int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._on_drop = on_drop
        self._wake: Callable[[], None] | None = None
        self._wake_at = 0

    def put(self, item: T) -> bool:
        """Append ``item``; False (and counted) when the buffer is full. Never blocks on I/O."""
        with self._lock:
            if len(self._items) >= self.capacity:
                self.dropped += 1
                full = True
            else:
                self._items.append(item)
                full = False
                wake = self._wake if len(self._items) == self._wake_at else None
        if full:
            if self._on_drop is not None:
                self._on_drop(1)
            return False
        if wake is not None:
            wake()
        return True

    def peek(self, n: int) -> list[T]:
        """The oldest ``n`` items, left in place."""
        with self._lock:
            return [self._items[i] for i in range(min(n, len(self._items)))]

    def discard(self, n: int) -> None:
        """Remove the oldest ``n`` items (after they were written)."""
        with self._lock:
            for _ in range(min(n, len(self._items))):
                self._items.popleft()

    def clear(self) -> int:
        with self._lock:
            n = len(self._items)
            self._items.clear()
            return n

    def notify_at(self, size: int, wake: Callable[[], None] | None) -> None:
        """Call ``wake`` (from the producer's thread) whenever the buffer reaches ``size``."""
        with self._lock:
            self._wake_at, self._wake = size, wake

    def __len__(self) -> int:
        return len(self._items)


class BatchWriter(Generic[T]):
    """Drains a :class:`BoundedBuffer` into PostgreSQL every ``interval`` s or ``batch_size`` items.

    ``write(conn, items)`` does one batch (a COPY). Connection failures are retried with
    backoff, forever; a batch the database *rejects* (a constraint or data error, which a
    retry cannot fix) is dropped and counted with reason ``rejected`` so it cannot wedge
    the queue. :meth:`stop` flushes what it can within a deadline and counts the rest as
    dropped with reason ``shutdown``.
    """

    def __init__(
        self,
        name: str,
        buffer: BoundedBuffer[T],
        write: Callable[[psycopg.AsyncConnection[Any], Sequence[T]], Awaitable[None]],
        connections: ConnectionFactory,
        *,
        batch_size: int,
        interval: float,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[str, int], None] | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.name = name
        self.buffer = buffer
        self._write = write
        self._connections = connections
        self.batch_size = batch_size
        self.interval = interval
        self._on_written = on_written
        self._on_dropped = on_dropped
        self.max_backoff = max_backoff
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.healthy = True
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._stopping = False
        self._failing_since: float | None = None
        self._dropped_mark = 0
        self._last_warning = 0.0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background task on the running loop."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._wake.set)

        self.buffer.notify_at(self.batch_size, wake)
        self._task = loop.create_task(self._run(), name=f"plait-{self.name}-writer")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the task, then flush what is left within ``grace`` s."""
        self._stopping = True
        self.buffer.notify_at(0, None)
        if self._task is not None:
            self._wake.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with asyncio.timeout(grace):
                while len(self.buffer):
                    await self.flush_once()
        except Exception as exc:
            log.warning(
                "%s: final flush failed (%s); %d items not written",
                self.name,
                type(exc).__name__,
                len(self.buffer),
            )
        left = self.buffer.clear()
        if left:
            self._dropped("shutdown", left)

    # -- work --------------------------------------------------------------------------------
    async def flush_once(self) -> int:
        """Write one batch of the oldest items; how many were written (0 when empty).

        One flush at a time: items leave the buffer only once written, so two flushes at
        once (the background task and an explicit flush) would write the same batch twice.
        """
        async with self._flushing:
            return await self._flush_once()

    async def _flush_once(self) -> int:
        batch = self.buffer.peek(self.batch_size)
        if not batch:
            return 0
        try:
            async with self._connections() as conn:
                await self._write(conn, batch)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            self.buffer.discard(len(batch))
            self._dropped("rejected", len(batch))
            log.error("%s: batch of %d rejected by the database: %s", self.name, len(batch), exc)
            return 0
        self.buffer.discard(len(batch))
        if self.healthy:
            self._dropped_mark = self.buffer.dropped
        self.written += len(batch)
        self.batches += 1
        if self._on_written is not None:
            self._on_written(len(batch))
        return len(batch)

    async def flush(self) -> None:
        """Write everything buffered now (raises on a database error)."""
        while len(self.buffer):
            await self.flush_once()

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while len(self.buffer) and not self._stopping:
                    await self.flush_once()
                    if len(self.buffer) < self.batch_size:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self._failed(exc)
                delay = min(self.max_backoff, 0.2 * 2 ** min(attempt, 10))
                await asyncio.sleep(delay * random.uniform(0.75, 1.25))
                continue
            if attempt:
                attempt = 0
                self._recovered()

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.healthy:
            self.healthy = False
            self._failing_since = now
        if now - self._last_warning >= 60.0:
            self._last_warning = now
            log.warning(
                "%s: cannot write to the database (%s: %s); retrying, %d buffered, %d dropped",
                self.name,
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
                len(self.buffer),
                self.buffer.dropped - self._dropped_mark,
            )

    def _recovered(self) -> None:
        outage = time.monotonic() - (self._failing_since or time.monotonic())
        dropped = self.buffer.dropped - self._dropped_mark
        self._dropped_mark = self.buffer.dropped
        self.healthy = True
        self._failing_since = None
        self._last_warning = 0.0
        log.warning(
            "%s: writing again after %.1fs; %d items dropped meanwhile (buffer full)",
            self.name,
            outage,
            dropped,
            extra={"dropped": dropped, "outage_seconds": round(outage, 3)},
        )

    def _dropped(self, reason: str, n: int) -> None:
        if self._on_dropped is not None:
            self._on_dropped(reason, n)
