"""Group commit of ingestion: requests that arrive together share one transaction.

A durable commit costs a round trip and a WAL flush whatever it holds, so committing each
request alone caps concurrent single-event requests at what one commit at a time allows.
Here every request joins a queue; a few flushers each take all requests waiting (up to a
number of events), check them against their types' EventDefinitions, store them with one
set-based statement and commit, then answer each request. A request is answered only
after the transaction holding its events committed, and all its events are in that one
transaction (a batch stays all-or-nothing).

One request's problem never fails the others: a refused check answers that request
alone, and a group whose transaction fails for any other reason (input that slipped
past validation and that PostgreSQL refuses) is committed again request by request, so
only the request at fault gets the error. A deadlock, a serialization failure or a
duplicate committed concurrently by another replica rolls the group back and retries it
whole; PostgreSQL being unreachable fails the whole group at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection

from plait.event_processing import repository
from plait.event_processing.repository import EventDefinition, EventReceipt, NewEvent

__all__ = ["Check", "Definitions", "GroupCommit", "Stored"]

Definitions = Mapping[tuple[str, str], EventDefinition | None]
"""The live EventDefinition of each (namespace, type) of a request, or None."""

Check = Callable[[Definitions], None]
"""Refuses a request by raising (its error becomes that request's answer)."""

Stored = list[tuple[EventReceipt, bool]]
"""(receipt of the stored event, created) per event of a request, in order."""

_RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    repository.ConcurrentDuplicateError,
)


@dataclass(eq=False, slots=True)
class _Request:
    events: Sequence[NewEvent]
    check: Check | None
    answer: asyncio.Future[Stored] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self, result: Stored | BaseException) -> None:
        if self.answer.done():  # the client went away: its events are stored all the same
            return
        if isinstance(result, BaseException):
            self.answer.set_exception(result)
        else:
            self.answer.set_result(result)


class GroupCommit:
    """Stores requests' events, committing the requests that wait together in one
    transaction.

    ``connection`` gives a pooled connection that commits on a clean exit and rolls back
    on an error (:meth:`plait.kernel.database.Database.connection`). ``flushers``
    transactions run at once: while one waits for its commit, the requests arriving
    meanwhile gather for the next.
    """

    def __init__(
        self,
        connection: Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]],
        *,
        max_attempts: int = 5,
        max_group_events: int = 1000,
        flushers: int = 2,
        retries: int = 3,
    ) -> None:
        self._connection = connection
        self._max_attempts = max_attempts
        self._max_group_events = max_group_events
        self._flushers = flushers
        self._retries = retries
        self._waiting: deque[_Request] = deque()
        self._running: set[asyncio.Task[None]] = set()

    async def store(self, events: Sequence[NewEvent], check: Check | None = None) -> Stored:
        """Store ``events`` (all or none) once ``check`` passed in the transaction that
        stores them; returns after that transaction committed."""
        request = _Request(events, check)
        self._waiting.append(request)
        if len(self._running) < self._flushers:
            task = asyncio.create_task(self._flush())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await request.answer

    async def _flush(self) -> None:
        while self._waiting:
            group = [self._waiting.popleft()]
            size = len(group[0].events)
            while self._waiting and size + len(self._waiting[0].events) <= self._max_group_events:
                request = self._waiting.popleft()
                size += len(request.events)
                group.append(request)
            await self._commit(group)

    async def _commit(self, group: list[_Request]) -> None:
        """Commit ``group`` and answer each of its requests, whatever happens."""
        for attempt in range(self._retries):
            try:
                outcomes = await self._transaction(group)
            except _RETRYABLE as exc:
                if attempt < self._retries - 1:
                    continue
                failure: BaseException = exc
            except psycopg.OperationalError as exc:  # PostgreSQL unreachable: all fail alike
                failure = exc
            except Exception as exc:
                if len(group) > 1:  # find the request at fault: each alone
                    for request in group:
                        await self._commit([request])
                    return
                failure = exc
            except BaseException:  # cancelled: no request may wait forever
                for request in group:
                    request.answer.cancel()
                raise
            else:
                for request, outcome in zip(group, outcomes, strict=True):
                    request.settle(outcome)
                return
            for request in group:
                request.settle(failure)
            return

    async def _transaction(self, group: list[_Request]) -> list[Stored | Exception]:
        """One transaction for ``group``: each request's stored events, or why it was
        refused. Returns once committed."""
        outcomes: list[Stored | Exception] = []
        # Two round trips: BEGIN and the definitions, then the insert, NOTIFY and COMMIT.
        async with self._connection() as conn, conn.pipeline():
            checked = [r for r in group if r.check is not None]
            definitions: Definitions = {}
            if checked:
                definitions = await repository.latest_event_definitions_for_types(
                    conn, {(e.namespace, e.type) for r in checked for e in r.events}
                )
            accepted: list[NewEvent] = []
            for request in group:
                try:
                    if request.check is not None:
                        request.check(definitions)
                except Exception as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append([])
                    accepted.extend(request.events)
            stored = await repository.insert_events(
                conn, accepted, max_attempts=self._max_attempts, notify=True, commit=True
            )
        position = 0
        for index, request in enumerate(group):
            if not isinstance(outcomes[index], Exception):
                outcomes[index] = stored[position : position + len(request.events)]
                position += len(request.events)
        return outcomes
