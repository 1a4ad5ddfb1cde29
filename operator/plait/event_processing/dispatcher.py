"""The event dispatcher: takes stored events off the queue and hands them to consumers.

Any number of dispatchers (operator replicas) run at once. Each leases a batch of due
events (``repository.lease``: FOR UPDATE SKIP LOCKED, the head of each sequence only),
runs every consumer on each event (waiting workflows first, then triggers), and marks it
done. A consumer's failure puts the event back with exponential backoff, and after
``max_attempts`` into the dead-letter queue; a :class:`PermanentDispatchError` sends it
there at once. A dispatcher killed mid-event simply lets its lease expire: another one
takes the event over, and consumers are idempotent per event, so nothing is lost and
nothing is started twice.

Dispatchers sleep on LISTEN/NOTIFY and poll as well, so they are correct even when a
notification is lost (or the listening connection is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from opentelemetry import context as otel_context
from opentelemetry import trace as otel
from opentelemetry.trace import NonRecordingSpan, StatusCode
from psycopg import AsyncConnection

from plait.errors import DispatchError, PermanentDispatchError, ValidationError
from plait.event_processing import repository
from plait.event_processing.repository import EventInstance, QueueItem
from plait.event_processing.states import QueueState
from plait.kernel.database import Database
from plait.observability.logging import log_context
from plait.observability.tracing import parse_traceparent, tracer

__all__ = ["Consumer", "DispatchSettings", "Dispatcher", "run_event_retention"]

logger = logging.getLogger(__name__)
COMPONENT = "event_processing"

#: Name of the span of one dispatch attempt of one event.
DISPATCH_SPAN = "plait.event.dispatch"

#: Something that acts on an event; raises to have it retried (or dead-lettered).
Consumer = Callable[[EventInstance], Awaitable[Any]]


@dataclass(frozen=True)
class DispatchSettings:
    """How a dispatcher leases and retries (``plait operator --event-*`` options)."""

    batch_size: int = 32
    """Events leased per round trip; they are handled concurrently (one per sequence)."""
    visibility_timeout: timedelta = timedelta(seconds=60)
    """How long a lease lasts: an event whose dispatcher died is taken over after this."""
    poll_interval: float = 2.0
    """Seconds between polls when no notification arrives (retries falling due, a lost
    NOTIFY)."""
    retry_base: timedelta = timedelta(seconds=1)
    """Backoff after the first failed attempt; doubles per attempt."""
    retry_max: timedelta = timedelta(minutes=5)
    """Longest backoff between attempts."""


class Dispatcher:
    """One dispatcher loop; run several (in one process or many) as you like."""

    def __init__(
        self,
        db: Database,
        consumers: Sequence[Consumer],
        settings: DispatchSettings | None = None,
        *,
        worker: str | None = None,
        namespaces: Sequence[str] | None = None,
    ) -> None:
        self._db = db
        self._namespaces = tuple(namespaces) if namespaces is not None else None
        self._consumers = tuple(consumers)
        self.settings = settings or DispatchSettings()
        self.worker = worker or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set; events in hand are finished first."""
        listener = asyncio.create_task(self._listen(stop), name="plait-event-listen")
        try:
            while not stop.is_set():
                self._wake.clear()  # before the round: a NOTIFY during it is not lost
                try:
                    handled = await self.run_once()
                except (psycopg.OperationalError, OSError) as exc:
                    logger.warning("event dispatch: database unavailable (%s); retrying", exc)
                    handled = 0
                except Exception:
                    logger.exception("event dispatch round failed; retrying")
                    handled = 0
                if handled:
                    continue  # more may be due (the next event of a sequence, a full batch)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_interval):
                        waiter = asyncio.ensure_future(self._wake.wait())
                        stopper = asyncio.ensure_future(stop.wait())
                        try:
                            await asyncio.wait(
                                {waiter, stopper}, return_when=asyncio.FIRST_COMPLETED
                            )
                        finally:
                            waiter.cancel()
                            stopper.cancel()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def run_once(self) -> int:
        """Lease one batch and dispatch it; the number of events handled."""
        async with self._db.connection(COMPONENT) as conn:
            await repository.reap_expired_leases(conn)
            items = await repository.lease(
                conn,
                self.worker,
                limit=self.settings.batch_size,
                lease_for=self.settings.visibility_timeout,
                namespaces=self._namespaces,
            )
        results = await asyncio.gather(
            *(self._dispatch(item) for item in items), return_exceptions=True
        )
        for item, result in zip(items, results, strict=True):
            if isinstance(result, BaseException):  # its lease expires; it is taken over
                logger.warning("event %s: dispatch aborted: %r", item.event_instance_id, result)
        return len(items)

    async def _dispatch(self, item: QueueItem) -> None:
        async with self._db.connection(COMPONENT) as conn:
            event = await repository.get_event_by_id(conn, item.event_instance_id)
        if event is None:  # removed by retention while queued: nothing left to do
            return
        # A dispatch must end well before its lease does, or another dispatcher would take
        # the event over while this one still works on it.
        budget = self.settings.visibility_timeout.total_seconds() * 0.8
        try:
            with _dispatch_span(event, item.attempts):
                async with asyncio.timeout(budget):
                    for consume in self._consumers:
                        await consume(event)
        except TimeoutError:
            await self._failed(item, event, DispatchError(f"dispatch took longer than {budget:g}s"))
            return
        except Exception as exc:
            await self._failed(item, event, exc)
            return
        async with self._db.connection(COMPONENT) as conn:
            if not await repository.complete(conn, item.event_instance_id, self.worker):
                logger.warning(
                    "event %s %s: lease lost before completion (another dispatcher took it "
                    "over after the visibility timeout); its consumers are idempotent",
                    event.source,
                    event.event_id,
                )

    async def _failed(self, item: QueueItem, event: EventInstance, exc: Exception) -> None:
        permanent = isinstance(exc, PermanentDispatchError)
        error = str(exc) or type(exc).__name__
        backoff = min(
            self.settings.retry_base * 2 ** max(0, item.attempts - 1), self.settings.retry_max
        )
        async with self._db.connection(COMPONENT) as conn:
            if permanent:
                await conn.execute(
                    "UPDATE event_processing_service.event_queue_state "
                    "SET max_attempts = attempts WHERE event_instance_id = %s AND leased_by = %s",
                    (item.event_instance_id, self.worker),
                )
            result = await repository.fail(
                conn, item.event_instance_id, self.worker, error, retry_in=backoff
            )
        dead = result is not None and result.state is QueueState.DEAD_LETTERED
        log = logger.warning if dead else logger.info
        log(
            "event %s %s (%s): attempt %d failed: %s%s",
            event.source,
            event.event_id,
            event.type,
            item.attempts,
            error,
            " -> dead-letter queue" if dead else f"; retry in {backoff.total_seconds():g}s",
        )

    async def _listen(self, stop: asyncio.Event) -> None:
        """Set the wake-up flag on each NOTIFY; reconnect with backoff when the link drops."""
        delay = 1.0
        while not stop.is_set():
            try:
                conninfo = self._db.pool(COMPONENT).conninfo
                assert isinstance(conninfo, str)  # Database.open passes a plain DSN
                conn: AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True
                )
                async with conn:
                    await conn.execute(f"LISTEN {repository.QUEUE_CHANNEL}")
                    delay = 1.0
                    self._wake.set()  # catch up on anything enqueued while not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("event dispatch: LISTEN connection lost (%s); polling", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


@contextlib.contextmanager
def _dispatch_span(event: EventInstance, attempt: int) -> Iterator[None]:
    """A span per dispatch attempt, in the trace the event was ingested in (its
    ``traceparent`` extension): ingestion, dispatch and the runs started are one trace."""
    parent = None
    value = event.extensions.get("traceparent")
    if isinstance(value, str):
        with contextlib.suppress(ValidationError):
            remote = NonRecordingSpan(parse_traceparent(value))
            parent = otel.set_span_in_context(remote, otel_context.Context())
    attributes: dict[str, str | int] = {
        "plait.namespace": event.namespace,
        "plait.event.source": event.source,
        "plait.event.type": event.type,
        "plait.event.id": event.event_id,
        "plait.attempt": attempt,
    }
    with (
        log_context(namespace=event.namespace),
        tracer().start_as_current_span(DISPATCH_SPAN, parent, attributes=attributes) as span,
    ):
        try:
            yield
        except Exception as exc:
            span.set_status(StatusCode.ERROR, str(exc))
            span.set_attribute("plait.outcome", "error")
            raise
        span.set_attribute("plait.outcome", "success")


async def run_event_retention(
    db: Database, stop: asyncio.Event, *, days: float, interval: float = 3600.0
) -> None:
    """Delete dispatched events older than ``days`` every ``interval`` seconds (batched,
    so no long locks); events still queued are never removed. ``days`` 0 keeps all."""
    if days <= 0:
        return
    while not stop.is_set():
        try:
            async with db.connection(COMPONENT) as conn:
                row = await (await conn.execute("SELECT now()")).fetchone()
                assert row is not None
                deleted = await repository.purge_events(conn, row[0] - timedelta(days=days))
            if deleted:
                logger.info("event retention: deleted %d events older than %g days", deleted, days)
        except Exception as exc:
            logger.warning("event retention failed (%s); trying again later", exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
