"""EventTriggers at work: start a WorkflowInstance per matching event or per cron tick.

Exactly one instance per (trigger, event) and per (trigger, tick), across crashes,
retries and replicas, comes from the instance's *name*: it is derived from the trigger and
the event (or the tick), so a second attempt to create it is refused by the API server and
counts as done. A trigger's starts are serialized by a row lock on its
``workflow_event_triggers`` row, held while its rate limit and concurrency policy are
checked and the instance is created; the same lock makes each cron tick's start happen on
one replica. Dispatch of events (the queue) is event_processing's; this module is what it
calls for triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import hashlib
import json
import logging
import re
import uuid
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from psycopg import AsyncConnection
from psycopg.rows import class_row

from plait import API_GROUP, API_VERSION
from plait.errors import DispatchError, PermanentDispatchError
from plait.event_processing.repository import EventInstance
from plait.kernel import expressions
from plait.kernel.database import Database
from plait.kernel.kube import Kube
from plait.observability.tracing import TRACEPARENT_ANNOTATION, current_traceparent
from plait.resources.schedules import cron_ticks
from plait.workflow_orchestrator import repository
from plait.workflow_orchestrator.repository import EventTrigger
from plait.workflow_orchestrator.states import FINAL_PHASES

__all__ = [
    "EVENT_ANNOTATION",
    "TRIGGER_ANNOTATION",
    "TRIGGER_LABEL",
    "Outcome",
    "TriggerStarter",
    "due_ticks",
    "event_variable",
    "filter_holds",
    "instance_name",
    "take_token",
    "trigger_arguments",
]

logger = logging.getLogger(__name__)
COMPONENT = "workflow_orchestrator"

#: Label on every instance a trigger started: its concurrency policy selects by it.
TRIGGER_LABEL = "plait.dev/trigger"
#: The starting trigger's row id (workflow_instances.trigger_id).
TRIGGER_ANNOTATION = "plait.dev/trigger-id"
#: The id of the stored event that started the instance (workflow_instances.event_id).
EVENT_ANNOTATION = "plait.dev/event-id"
#: The cron tick an instance was started for.
SCHEDULED_ANNOTATION = "plait.dev/scheduled-time"

#: A tick this late is "missed" (catchUp decides) unless startingDeadlineSeconds says
#: otherwise; covers a slow pass or a replica taking over, not an outage.
ON_TIME_GRACE = dt.timedelta(seconds=60)
#: Most missed ticks started at once by catchUp: All (the newest ones).
MAX_CATCH_UP = 100
#: Starts within this many seconds share one EventTrigger status write.
STATUS_COALESCE_SECONDS = 1.0


class Outcome(enum.StrEnum):
    """What one (trigger, event or tick) came to."""

    STARTED = "Started"
    ALREADY_STARTED = "AlreadyStarted"
    FILTERED = "Filtered"
    FORBIDDEN = "Forbidden"
    RATE_LIMITED = "RateLimited"
    SUSPENDED = "Suspended"


# -- pure rules ----------------------------------------------------------------------------
def event_variable(event: EventInstance) -> dict[str, Any]:
    """The CloudEvent as CEL sees it (``event.data.amount``, ``event.subject``, ...)."""
    document: dict[str, Any] = {
        "specversion": event.spec_version,
        "id": event.event_id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": event.time,
        "datacontenttype": event.data_content_type,
        "dataschema": event.data_schema,
        "data": event.data if event.data is not None else event.data_base64,
        "extensions": dict(event.extensions),
    }
    document.update({k: v for k, v in event.extensions.items() if k not in document})
    return {k: v for k, v in document.items() if v is not None}


def filter_holds(trigger: str, filter: str, variables: Mapping[str, Any]) -> bool:
    """Whether EventTrigger ``trigger``'s filter is true for an event (``variables``);
    :class:`PermanentDispatchError` when it fails or gives no bool."""
    try:
        result = expressions.evaluate(expressions.compile(filter), variables)
    except expressions.ExpressionError as exc:
        raise PermanentDispatchError(
            f"EventTrigger {trigger}: filter {filter!r} failed: {exc.detail}"
        ) from None
    if not isinstance(result, bool):
        raise PermanentDispatchError(
            f"EventTrigger {trigger}: filter {filter!r} gave {type(result).__name__}, not a bool"
        )
    return result


def trigger_arguments(
    trigger: str, arguments: Mapping[str, str], variables: Mapping[str, Any]
) -> dict[str, Any]:
    """The arguments EventTrigger ``trigger`` starts its workflow with (each a CEL over
    ``variables``); :class:`PermanentDispatchError` when one fails."""
    values: dict[str, Any] = {}
    for name, source in arguments.items():
        try:
            values[name] = expressions.evaluate(expressions.compile(source), variables)
        except expressions.ExpressionError as exc:
            raise PermanentDispatchError(
                f"EventTrigger {trigger}: argument {name!r} ({source!r}) failed: {exc.detail}"
            ) from None
    return values


_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def _prefix(trigger_name: str) -> str:
    """The trigger's name cut so that instance names stay short (Job names derive from them)."""
    return _NOT_DNS.sub("-", trigger_name.lower())[:40].strip("-") or "trigger"


def instance_name(trigger: EventTrigger, *, event: uuid.UUID | None = None,
                  tick: dt.datetime | None = None) -> str:  # fmt: skip
    """``<trigger>-<digest of (trigger, event)>``, or for a cron tick
    ``<trigger>-<digest of trigger>-<tick in unix minutes>``."""
    if tick is not None:
        # The trigger's id in the name too: names that differ only in what _prefix drops
        # (report.daily, report-daily) must not share their runs.
        digest = hashlib.sha256(str(trigger.id).encode()).hexdigest()[:6]
        return f"{_prefix(trigger.name)}-{digest}-{int(tick.timestamp()) // 60}"
    digest = hashlib.sha256(f"{trigger.id}/{event}".encode()).hexdigest()[:10]
    return f"{_prefix(trigger.name)}-{digest}"


def label_value(name: str) -> str:
    """``name`` as a label value (63 characters at most; long names keep a hash)."""
    if len(name) <= 63:
        return name
    return f"{name[:54].rstrip('.-')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def take_token(
    tokens: float | None,
    refilled_at: dt.datetime | None,
    now: dt.datetime,
    runs: int,
    period_seconds: int,
) -> tuple[bool, float]:
    """Token bucket of a rate limit: (allowed, tokens left). A full bucket holds ``runs``
    and refills at ``runs / period_seconds`` per second, so bursts up to ``runs`` pass."""
    available = float(runs)
    if tokens is not None and refilled_at is not None:
        elapsed = max(0.0, (now - refilled_at).total_seconds())
        available = min(float(runs), tokens + elapsed * runs / period_seconds)
    if available >= 1.0:
        return True, available - 1.0
    return False, available


def due_ticks(
    cron: str,
    time_zone: str,
    after: dt.datetime,
    now: dt.datetime,
    *,
    catch_up: str,
    starting_deadline_seconds: int | None,
) -> tuple[list[dt.datetime], dt.datetime | None]:
    """(ticks to start now, newest tick passed) of a schedule over ``(after, now]``.

    A tick more than the deadline old (``startingDeadlineSeconds``, else a short grace)
    was missed: Skip drops missed ticks, Latest starts the newest tick if within
    ``startingDeadlineSeconds``, All starts every tick within it (at most
    :data:`MAX_CATCH_UP`). The newest tick is returned either way, so it is never looked at
    again.
    """
    zone = zoneinfo.ZoneInfo(time_zone)
    passed: list[dt.datetime] = []
    for tick in cron_ticks(cron, after.astimezone(zone)):
        if tick > now:
            break
        passed.append(tick.astimezone(dt.UTC))
        if len(passed) > 10 * MAX_CATCH_UP:
            passed = passed[-MAX_CATCH_UP:]
    if not passed:
        return [], None
    newest = passed[-1]
    deadline = (
        dt.timedelta(seconds=starting_deadline_seconds) if starting_deadline_seconds else None
    )
    on_time = [t for t in passed if now - t <= (deadline or ON_TIME_GRACE)]
    if catch_up == "All":
        eligible = passed if deadline is None else [t for t in passed if now - t <= deadline]
        return eligible[-MAX_CATCH_UP:], newest
    if catch_up == "Latest":
        within = deadline is None or now - newest <= deadline
        return ([newest] if within else []), newest
    return on_time[-1:], newest  # Skip: only a tick that is on time


# -- the starter ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Start:
    """One instance a trigger should start."""

    name: str
    arguments: Mapping[str, Any]
    annotations: Mapping[str, str]


class TriggerStarter:
    """Starts WorkflowInstances for events (called by the dispatcher) and cron ticks."""

    def __init__(self, db: Database, kube: Kube) -> None:
        self._db = db
        self._kube = kube
        self._publishing: dict[uuid.UUID, asyncio.Future[None]] = {}
        self._serial: dict[uuid.UUID, asyncio.Lock] = {}
        self._warned: dict[uuid.UUID, str] = {}

    async def close(self) -> None:
        """Finish (or drop) the pending status writes."""
        pending = list(self._publishing.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # events
    async def on_event(self, event: EventInstance) -> list[tuple[str, Outcome]]:
        """Start what the event's triggers ask for; (trigger name, outcome) per trigger.

        Raises :class:`PermanentDispatchError` when a filter or an argument fails on this
        event and :class:`DispatchError` when the workflow cannot be started for now; the
        dispatcher retries (instances already started are not started again) or
        dead-letters the event.
        """
        async with self._db.connection(COMPONENT) as conn:
            triggers = await repository.matching_triggers(
                conn, namespace=event.namespace, event_type=event.type
            )
        outcomes: list[tuple[str, Outcome]] = []
        variables = {"event": event_variable(event)}
        for trigger in triggers:
            if trigger.filter is not None and not self._holds(trigger, variables):
                outcomes.append((trigger.name, Outcome.FILTERED))
                continue
            annotations = {EVENT_ANNOTATION: str(event.id)}
            # The dispatch span's context (or the ingestion's): the run joins the trace.
            traceparent = current_traceparent() or event.extensions.get("traceparent")
            if isinstance(traceparent, str):
                annotations[TRACEPARENT_ANNOTATION] = traceparent
            start = Start(
                instance_name(trigger, event=event.id),
                self._arguments(trigger, variables),
                annotations,
            )
            if _needs_lock(trigger):
                # Starts of this trigger depend on each other (rate, concurrency): they
                # queue on its row lock. Within a process they queue here first, holding
                # no connection, so a burst for one trigger cannot drain the pool.
                async with (
                    self._serial.setdefault(trigger.id, asyncio.Lock()),
                    self._db.connection(COMPONENT) as conn,
                    conn.transaction(),
                ):
                    locked = await _lock_trigger(conn, trigger.id)
                    outcome = await self._start_locked(conn, locked, start)
            else:  # the instance's name alone makes the start exactly-once
                async with self._db.connection(COMPONENT) as conn:
                    outcome = await self._create(conn, trigger, start)
            outcomes.append((trigger.name, outcome))
        return outcomes

    def _holds(self, trigger: EventTrigger, variables: Mapping[str, Any]) -> bool:
        assert trigger.filter is not None
        return filter_holds(trigger.name, trigger.filter, variables)

    def _arguments(self, trigger: EventTrigger, variables: Mapping[str, Any]) -> dict[str, Any]:
        return trigger_arguments(trigger.name, trigger.arguments, variables)

    # schedules
    async def run_schedules(self, now: dt.datetime | None = None) -> list[tuple[str, Outcome]]:
        """Start the due ticks of every scheduled trigger not being handled elsewhere.

        Each trigger is handled in a transaction of its own, holding only its own row: a
        broken trigger (its workflow gone, an argument that fails) never holds back another.
        """
        async with self._db.connection(COMPONENT) as conn:
            ids = await _scheduled_trigger_ids(conn)
        outcomes: list[tuple[str, Outcome]] = []
        for id in ids:
            try:
                outcomes += await self._run_schedule(id, now)
            except DispatchError as exc:  # retried on the next pass, within the tick's grace
                self._warn_once(id, f"scheduled trigger: {exc}; trying again")
            except Exception:
                logger.exception("scheduled trigger %s: pass failed; trying again", id)
        return outcomes

    async def _run_schedule(
        self, id: uuid.UUID, now: dt.datetime | None
    ) -> list[tuple[str, Outcome]]:
        outcomes: list[tuple[str, Outcome]] = []
        async with self._db.connection(COMPONENT) as conn, conn.transaction():
            trigger = await _try_lock_schedule(conn, id)
            if trigger is None:  # another replica has it, or it is gone or suspended
                return outcomes
            now = now or await _database_now(conn)
            schedule = trigger.spec.get("schedule") or {}
            ticks, newest = due_ticks(
                schedule.get("cron", trigger.schedule or ""),
                schedule.get("timeZone", "UTC"),
                trigger.last_scheduled_time or trigger.created_at,
                now,
                catch_up=schedule.get("catchUp", "Skip"),
                starting_deadline_seconds=schedule.get("startingDeadlineSeconds"),
            )
            for tick in ticks:
                try:
                    start = Start(
                        instance_name(trigger, tick=tick),
                        self._arguments(trigger, {"schedule": {"time": tick}}),
                        {SCHEDULED_ANNOTATION: _rfc3339(tick)},
                    )
                    outcome = await self._start_locked(conn, trigger, start, now=now)
                except PermanentDispatchError as exc:  # this tick can never start
                    logger.warning("%s; the run of %s is skipped", exc, _rfc3339(tick))
                    continue
                outcomes.append((trigger.name, outcome))
                trigger = await _lock_trigger(conn, trigger.id)  # fresh bookkeeping
            if newest is None:
                return outcomes
            await conn.execute(
                "UPDATE workflow_orchestrator_service.workflow_event_triggers "
                "SET last_scheduled_time = %s WHERE id = %s",
                (newest, trigger.id),
            )
        self._warned.pop(id, None)
        await self._publish_next(trigger, schedule, newest)  # after the commit
        return outcomes

    def _warn_once(self, id: uuid.UUID, message: str) -> None:
        """Log a trigger's failure when it first happens or changes, not every pass."""
        if self._warned.get(id) != message:
            self._warned[id] = message
            logger.warning("%s", message)

    async def _publish_next(
        self, trigger: EventTrigger, schedule: Mapping[str, Any], newest: dt.datetime
    ) -> None:
        zone = zoneinfo.ZoneInfo(schedule.get("timeZone", "UTC"))
        upcoming = next(cron_ticks(str(schedule.get("cron", "")), newest.astimezone(zone)))
        await self._patch_status(trigger, {"nextScheduleTime": _rfc3339(upcoming)})

    # both
    async def _start_locked(
        self,
        conn: AsyncConnection[Any],
        trigger: EventTrigger,
        start: Start,
        *,
        now: dt.datetime | None = None,
    ) -> Outcome:
        """Start ``start`` for ``trigger``, whose row this transaction holds locked."""
        if not trigger.enabled or trigger.deleted_at is not None:
            return Outcome.SUSPENDED
        now = now or await _database_now(conn)
        namespace = trigger.namespace
        rate = trigger.spec.get("rateLimit")
        tokens: float | None = None
        if rate:
            allowed, tokens = take_token(
                trigger.rate_tokens,
                trigger.rate_refilled_at,
                now,
                int(rate["runs"]),
                int(rate.get("periodSeconds", 60)),
            )
            if not allowed:
                if await self._kube.get_instance(namespace, start.name) is not None:
                    return Outcome.ALREADY_STARTED  # started before a crash: not a new start
                logger.info(
                    "EventTrigger %s/%s: rate limit reached, %s not started",
                    namespace,
                    trigger.name,
                    start.name,
                )
                return Outcome.RATE_LIMITED
        if trigger.concurrency_policy != "Allow":
            active = await self._active_instances(trigger, exclude=start.name)
            if active and trigger.concurrency_policy == "Forbid":
                if await self._kube.get_instance(namespace, start.name) is not None:
                    return Outcome.ALREADY_STARTED
                logger.info(
                    "EventTrigger %s/%s: %s still running (concurrencyPolicy Forbid), "
                    "%s not started",
                    namespace,
                    trigger.name,
                    ", ".join(active),
                    start.name,
                )
                return Outcome.FORBIDDEN
            for name in active:  # Replace
                await self._kube.patch_instance_spec(namespace, name, {"cancel": True})
        return await self._create(conn, trigger, start, now=now, tokens=tokens)

    async def _create(
        self,
        conn: AsyncConnection[Any],
        trigger: EventTrigger,
        start: Start,
        *,
        now: dt.datetime | None = None,
        tokens: float | None = None,
    ) -> Outcome:
        """Create the instance (once: by name) and record the start."""
        namespace = trigger.namespace
        definition = await repository.latest_workflow_definition(
            conn, namespace, trigger.workflow_name
        )
        if definition is None or definition.deleted_at is not None:
            raise DispatchError(
                f"EventTrigger {trigger.name}: WorkflowDefinition {trigger.workflow_name!r} "
                f"does not exist in namespace {namespace!r}"
            )
        try:
            created = await self._kube.create_instance(self._manifest(trigger, start))
        except ApiException as exc:
            message = f"EventTrigger {trigger.name}: creating {start.name} failed: {exc.reason}"
            if exc.status in (400, 403, 422):
                raise PermanentDispatchError(f"{message} ({_api_message(exc)})") from None
            raise DispatchError(message) from None
        if not created:
            return Outcome.ALREADY_STARTED
        if trigger.spec.get("rateLimit"):
            await conn.execute(
                "UPDATE workflow_orchestrator_service.workflow_event_triggers SET "
                "rate_tokens = %s, rate_refilled_at = %s WHERE id = %s",
                (tokens, now, trigger.id),
            )
        await conn.execute(
            "UPDATE workflow_orchestrator_service.workflow_event_triggers SET "
            "last_fired_at = statement_timestamp(), last_instance = %s WHERE id = %s",
            (start.name, trigger.id),
        )
        logger.info("EventTrigger %s/%s started %s", namespace, trigger.name, start.name)
        self._publish_last_start(trigger)
        return Outcome.STARTED

    def _publish_last_start(self, trigger: EventTrigger) -> None:
        """Copy the newest start into the trigger's status, at most once a second: a burst
        of events costs one status write, not one per run."""
        if trigger.id in self._publishing:
            return

        async def publish() -> None:
            try:
                await self._publish_last_start_now(trigger)
            except Exception as exc:  # the start happened; a missed status is cosmetic
                logger.warning("EventTrigger %s: status not updated: %s", trigger.name, exc)
            finally:
                self._publishing.pop(trigger.id, None)

        self._publishing[trigger.id] = asyncio.ensure_future(publish())

    async def _publish_last_start_now(self, trigger: EventTrigger) -> None:
        await asyncio.sleep(STATUS_COALESCE_SECONDS)
        async with self._db.connection(COMPONENT) as conn:
            row = await (
                await conn.execute(
                    "SELECT last_fired_at, last_instance "
                    "FROM workflow_orchestrator_service.workflow_event_triggers WHERE id = %s",
                    (trigger.id,),
                )
            ).fetchone()
        if row is not None and row[0] is not None:
            status = {"lastTriggeredTime": _rfc3339(row[0]), "lastInstance": row[1]}
            await self._patch_status(trigger, status)

    async def _active_instances(self, trigger: EventTrigger, *, exclude: str) -> list[str]:
        selector = f"{TRIGGER_LABEL}={label_value(trigger.name)}"
        active = []
        async for page in self._kube.list_instances(trigger.namespace, selector):
            for item in page:
                name = item["metadata"]["name"]
                phase = (item.get("status") or {}).get("phase")
                spec = item.get("spec") or {}
                if name != exclude and phase not in FINAL_PHASES and not spec.get("cancel"):
                    active.append(name)
        return sorted(active)

    def _manifest(self, trigger: EventTrigger, start: Start) -> dict[str, Any]:
        workflow_ref: dict[str, Any] = {"name": trigger.workflow_name}
        if trigger.workflow_version is not None:
            workflow_ref["version"] = trigger.workflow_version
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": "WorkflowInstance",
            "metadata": {
                "name": start.name,
                "namespace": trigger.namespace,
                "labels": {TRIGGER_LABEL: label_value(trigger.name)},
                "annotations": {TRIGGER_ANNOTATION: str(trigger.id), **start.annotations},
            },
            "spec": {"workflowRef": workflow_ref, "arguments": dict(start.arguments)},
        }

    async def _patch_status(self, trigger: EventTrigger, status: Mapping[str, Any]) -> None:
        try:
            await self._kube.patch_trigger_status(trigger.namespace, trigger.name, status)
        except Exception as exc:  # the start happened; a missed status update is cosmetic
            logger.warning("EventTrigger %s: status not updated: %s", trigger.name, exc)


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _needs_lock(trigger: EventTrigger) -> bool:
    """Starts must queue on the trigger's row only when they depend on each other."""
    return bool(trigger.spec.get("rateLimit")) or trigger.concurrency_policy != "Allow"


# -- bookkeeping SQL -------------------------------------------------------------------------
async def _database_now(conn: AsyncConnection[Any]) -> dt.datetime:
    """The database's clock: every replica reads the same time for rate limits and ticks."""
    row = await (await conn.execute("SELECT statement_timestamp()")).fetchone()
    assert row is not None
    moment: dt.datetime = row[0]
    return moment


async def _lock_trigger(conn: AsyncConnection[Any], id: uuid.UUID) -> EventTrigger:
    """The trigger's row, locked until the transaction ends: starts of one trigger queue
    up here, across dispatchers and replicas."""
    async with conn.cursor(row_factory=class_row(EventTrigger)) as cur:
        await cur.execute(
            "SELECT * FROM workflow_orchestrator_service.workflow_event_triggers "
            "WHERE id = %s FOR UPDATE",
            (id,),
        )
        row = await cur.fetchone()
    if row is None:
        raise DispatchError(f"EventTrigger row {id} vanished")
    return row


async def _scheduled_trigger_ids(conn: AsyncConnection[Any]) -> list[uuid.UUID]:
    """The live, enabled scheduled triggers (index workflow_event_triggers_scheduled)."""
    rows = await (
        await conn.execute(
            "SELECT id FROM workflow_orchestrator_service.workflow_event_triggers "
            "WHERE schedule IS NOT NULL AND enabled AND deleted_at IS NULL ORDER BY id"
        )
    ).fetchall()
    return [row[0] for row in rows]


async def _try_lock_schedule(conn: AsyncConnection[Any], id: uuid.UUID) -> EventTrigger | None:
    """The scheduled trigger's row, locked; None when another replica holds it (SKIP
    LOCKED) or it was suspended or deleted meanwhile."""
    async with conn.cursor(row_factory=class_row(EventTrigger)) as cur:
        await cur.execute(
            "SELECT * FROM workflow_orchestrator_service.workflow_event_triggers "
            "WHERE id = %s AND schedule IS NOT NULL AND enabled AND deleted_at IS NULL "
            "FOR UPDATE SKIP LOCKED",
            (id,),
        )
        return await cur.fetchone()


async def run_scheduler(starter: TriggerStarter, stop: asyncio.Event, *, poll: float) -> None:
    """Start scheduled runs every ``poll`` seconds until ``stop`` (errors are retried)."""
    while not stop.is_set():
        try:
            await starter.run_schedules()
        except Exception:
            logger.exception("scheduled triggers: pass failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll)
