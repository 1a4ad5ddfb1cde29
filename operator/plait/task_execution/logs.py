"""Task output: the operator follows each task container's log into ``observability_logs``.

Every Pod of a Plait Job (label ``plait.dev/instance-uid``, selected by the API server) is
watched; once a container has started, a follower streams its log
(``GET pods/log?follow=true&timestamps=true``) until the container ends, so the lines are
in PostgreSQL while the task runs and stay there after the Pod is deleted. Each line is a
record of component ``task`` linked like Plait's own records: ``workflow_instance_id``
(the run), ``task_instance_id`` (the attempt's row), ``trace_id``/``span_id`` (the
attempt's span, from the Job's ``TRACEPARENT``), and attributes ``object`` (the run's
name), ``task``, ``attempt``, ``pod``, ``container`` and ``seq`` (the line's number).

Bounds: at most ``task_log_followers`` streams at once (a dedicated thread each, so a
stream never takes a thread the Kubernetes calls need), and at most
``task_log_max_bytes`` of text per attempt, after which one WARNING record marks the
truncation and the log is no longer read. Records go through their own bounded buffer
and batch writer (COPY); a full buffer pauses the readers instead of dropping lines.

Resuming: a follower starts from the position stored in PostgreSQL (the kubelet's
timestamp of the last stored line and how many lines share it) and reads the log from its
start, skipping what is stored, so an operator restart neither repeats nor loses a line
as long as the Pod and its log are still on the node. Within a process a broken stream is
reopened with ``sinceSeconds`` reaching back past the last line (plus a margin) and the
same skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from plait.kernel.database import Database
from plait.observability import metrics
from plait.observability import repository as obs_repo
from plait.observability.batching import BatchWriter, BoundedBuffer, pool_connections
from plait.observability.settings import ObservabilitySettings
from plait.observability.states import LogLevel
from plait.observability.tracing import parse_traceparent
from plait.task_execution import repository
from plait.task_execution.jobs import (
    ANNOTATION_TASK_INSTANCE,
    LABEL_ATTEMPT,
    LABEL_INSTANCE,
    LABEL_INSTANCE_UID,
    LABEL_TASK,
)

__all__ = ["COMPONENT_TASK", "TaskLogCollector", "split_lines"]

logger = logging.getLogger(__name__)

#: The ``component`` of a task's own output (Plait's records name a Plait component).
COMPONENT_TASK = "task"
#: Longest wait for a byte on an open stream before it is reopened (a quiet task).
READ_TIMEOUT_SECONDS = 60.0
#: How far before the last stored line a reopened stream starts (clock skew, rounding).
REOPEN_MARGIN_SECONDS = 30
#: Longest record: a longer line is stored in pieces of this many bytes.
MAX_LINE_BYTES = 65536
#: Failed attempts to open a stream before a follower gives up.
MAX_OPEN_FAILURES = 5
#: The API server's answer for a node it cannot reach a kubelet on (kwok's simulated node):
#: no log will ever be served, so the follower stops at once.
NO_KUBELET = "no preferred addresses found"


@dataclasses.dataclass
class _Follow:
    """One container being followed, and what the Pod events said about it."""

    namespace: str
    pod: str
    container: str
    instance_uid: uuid.UUID
    labels: Mapping[str, str]
    env: Mapping[str, str]
    attempt_id: uuid.UUID | None = None
    """The attempt's row id, as the Pod names it (older Pods do not: it is read)."""
    terminated: threading.Event = dataclasses.field(default_factory=threading.Event)
    pod_gone: bool = False
    """The Pod was deleted while followed: nothing is kept of it when the follower ends."""


class _Budget:
    """Bytes left for one attempt (a Pod), shared by its containers' followers."""

    def __init__(self, left: int, truncated: bool) -> None:
        self.left = left
        self.truncated = truncated
        self.lock = threading.Lock()


class TaskLogCollector:
    """Follows the logs of task containers; one per operator process."""

    def __init__(self, database: Database, settings: ObservabilitySettings | None = None) -> None:
        self.settings = settings or ObservabilitySettings()
        self._db = database
        self.buffer: BoundedBuffer[obs_repo.LogRecord] = BoundedBuffer(
            self.settings.log_buffer_size
        )
        self.writer: BatchWriter[obs_repo.LogRecord] = BatchWriter(
            "task logs",
            self.buffer,
            obs_repo.copy_logs,
            pool_connections(database, "observability"),
            batch_size=self.settings.log_batch_size,
            interval=self.settings.log_flush_interval_ms / 1000,
            on_written=metrics.TASK_LOG_LINES.inc,
            on_dropped=metrics.log_records_dropped,
        )
        self._slots = asyncio.Semaphore(self.settings.task_log_followers)
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.task_log_followers, thread_name_prefix="plait-task-log"
        )
        self._api: client.ApiClient | None = None
        # By Pod uid, then container: a Pod's deletion finds its own without a scan.
        self._follows: dict[str, dict[str, _Follow]] = {}
        self._done: dict[str, set[str]] = {}
        self._budgets: dict[str, _Budget] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = threading.Event()
        self._responses: set[Any] = set()
        self._responses_lock = threading.Lock()

    def _core(self) -> client.CoreV1Api:
        # Made on first use: the credentials are loaded by Kopf's login.
        if self._api is None:
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = self.settings.task_log_followers
            self._api = client.ApiClient(configuration)
        return client.CoreV1Api(self._api)

    def start(self) -> None:
        self.writer.start()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop following (within a read timeout), then write what is buffered."""
        self._stopping.set()
        with self._responses_lock:
            for response in self._responses:
                with contextlib.suppress(Exception):
                    response.shutdown()  # unblocks the thread reading it
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self.writer.stop(grace)
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]

    async def flush(self) -> None:
        await self.writer.flush()

    # -- Pod events ------------------------------------------------------------------------
    def on_pod(self, event_type: str | None, pod: Mapping[str, Any]) -> None:
        """Start a follower for each container that has started and is not followed yet."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or ""
        if event_type == "DELETED":
            for followed in self._follows.get(uid, {}).values():
                followed.pod_gone = True
                followed.terminated.set()
            self._done.pop(uid, None)
            self._budgets.pop(uid, None)
            return
        labels: Mapping[str, str] = meta.get("labels") or {}
        try:
            instance_uid = uuid.UUID(labels.get(LABEL_INSTANCE_UID, ""))
        except ValueError:
            return
        envs = {
            c.get("name", ""): {
                e["name"]: e.get("value") or "" for e in c.get("env") or () if "name" in e
            }
            for c in (pod.get("spec") or {}).get("containers") or ()
        }
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            state = status.get("state") or {}
            if not (state.get("running") or state.get("terminated")):
                continue
            container = status.get("name", "")
            follow = self._follows.get(uid, {}).get(container)
            if follow is not None:
                if state.get("terminated"):
                    follow.terminated.set()
                continue
            if container in self._done.get(uid, ()):
                continue
            follow = _Follow(
                namespace=meta.get("namespace", ""),
                pod=meta.get("name", ""),
                container=container,
                instance_uid=instance_uid,
                labels=dict(labels),
                env=envs.get(container, {}),
                attempt_id=_uuid_or_none(
                    (meta.get("annotations") or {}).get(ANNOTATION_TASK_INSTANCE)
                ),
            )
            if state.get("terminated"):
                follow.terminated.set()
            self._follows.setdefault(uid, {})[container] = follow
            task = asyncio.get_running_loop().create_task(
                self._run(uid, follow), name=f"plait-task-log-{follow.pod}-{follow.container}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- one follower ----------------------------------------------------------------------
    async def _run(self, pod_uid: str, follow: _Follow) -> None:
        try:
            async with self._slots:
                template = await self._template(follow)
                async with self._db.connection("observability") as conn:
                    position = await obs_repo.task_log_position(
                        conn, follow.instance_uid, follow.pod, follow.container
                    )
                budget = self._budgets.get(pod_uid)
                if budget is None:
                    budget = _Budget(
                        self.settings.task_log_max_bytes - position.pod_bytes, position.truncated
                    )
                    self._budgets[pod_uid] = budget
                if budget.truncated:
                    return
                loop = asyncio.get_running_loop()
                with metrics.TASK_LOG_FOLLOWERS.track_inprogress():
                    await loop.run_in_executor(
                        self._executor, self._follow_blocking, follow, template, position, budget
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning(
                "could not collect the log of %s/%s container %s",
                follow.namespace,
                follow.pod,
                follow.container,
                exc_info=True,
            )
        finally:
            followed = self._follows.get(pod_uid, {})
            followed.pop(follow.container, None)
            if not followed:
                self._follows.pop(pod_uid, None)
            if not (self._stopping.is_set() or follow.pod_gone):
                self._done.setdefault(pod_uid, set()).add(follow.container)

    async def _template(self, follow: _Follow) -> obs_repo.LogRecord:
        """The fields every line of this container shares."""
        labels = follow.labels
        task_instance_id = follow.attempt_id
        job = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")
        if job and task_instance_id is None:
            try:
                async with self._db.connection("task_execution") as conn:
                    attempt = await repository.attempt_by_job(conn, job)
                if attempt is not None:
                    task_instance_id = attempt.id
            except Exception:
                logger.debug("no attempt found for Job %s", job, exc_info=True)
        trace_id = span_id = None
        if follow.env.get("TRACEPARENT"):
            with contextlib.suppress(Exception):
                context = parse_traceparent(follow.env["TRACEPARENT"])
                trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        attributes: dict[str, Any] = {
            "object": labels.get(LABEL_INSTANCE, ""),
            "task": follow.env.get("PLAIT_TASK") or labels.get(LABEL_TASK, ""),
            "pod": follow.pod,
            "container": follow.container,
        }
        with contextlib.suppress(ValueError):
            attributes["attempt"] = int(labels.get(LABEL_ATTEMPT, ""))
        if job:
            attributes["job"] = job
        return obs_repo.LogRecord(
            time=dt.datetime.now(dt.UTC),
            level=LogLevel.INFO,
            component=COMPONENT_TASK,
            message="",
            logger=f"task.{follow.container}",
            attributes=attributes,
            namespace=follow.namespace,
            workflow_instance_id=follow.instance_uid,
            task_instance_id=task_instance_id,
            trace_id=trace_id,
            span_id=span_id,
        )

    def _follow_blocking(
        self,
        follow: _Follow,
        template: obs_repo.LogRecord,
        position: obs_repo.TaskLogPosition,
        budget: _Budget,
    ) -> None:
        """Stream the log until the container has ended and the stream is drained (a thread)."""
        last, at_last, seq = position.last_time, position.at_last_time, position.seq
        since: int | None = None  # the first stream reads from the start, skipping what is stored
        failures = 0
        while not self._stopping.is_set():
            ended = follow.terminated.is_set()
            skip = at_last  # lines stamped ``last`` already stored
            try:
                for stamp, text in self._lines(follow, since):
                    if stamp is not None and last is not None:
                        if stamp < last:
                            continue
                        if stamp == last and skip > 0:
                            skip -= 1
                            continue
                    if stamp is not None:
                        at_last = at_last + 1 if stamp == last else 1
                        last = stamp
                    seq += 1
                    if not self._emit(template, stamp, text, seq, budget):
                        return
                    failures = 0
            except ApiException as exc:
                if exc.status in (404, 410):
                    return  # the Pod is gone
                if isinstance(exc.body, str) and NO_KUBELET in exc.body:
                    logger.debug("node of %s/%s serves no logs", follow.namespace, follow.pod)
                    return
                failures += 1
                # A container that had ended gets one more try: a node that serves no logs
                # (kwok's) must not hold a slot for long per Pod.
                if failures >= (2 if ended else MAX_OPEN_FAILURES):
                    logger.warning(
                        "giving up on the log of %s/%s container %s: %s %s",
                        follow.namespace,
                        follow.pod,
                        follow.container,
                        exc.status,
                        (exc.body or "")[:200] if isinstance(exc.body, str) else exc.reason,
                    )
                    return
                time.sleep(min(10.0, 0.5 * 2**failures))
            except (ReadTimeoutError, ProtocolError) as exc:  # a quiet or broken stream
                logger.debug("log stream of %s/%s ended: %s", follow.pod, follow.container, exc)
            except Exception as exc:
                failures += 1
                if failures >= MAX_OPEN_FAILURES:
                    logger.warning(
                        "giving up on the log of %s/%s container %s: %s",
                        follow.namespace,
                        follow.pod,
                        follow.container,
                        exc,
                    )
                    return
                time.sleep(min(10.0, 0.5 * 2**failures))
            else:
                if ended:
                    return  # the stream was opened after the container ended: it is all read
                self._stopping.wait(0.5)
            # In this process the skipping state is exact: reach back past the last line only.
            if last is not None:
                age = (dt.datetime.now(dt.UTC) - last).total_seconds()
                since = max(1, int(age) + REOPEN_MARGIN_SECONDS)

    def _lines(
        self, follow: _Follow, since: int | None
    ) -> Iterator[tuple[dt.datetime | None, str]]:
        """(kubelet timestamp, text) of each line of one stream."""
        kwargs: dict[str, Any] = {"since_seconds": since} if since else {}
        response: Any = self._core().read_namespaced_pod_log(
            follow.pod,
            follow.namespace,
            container=follow.container,
            follow=True,
            timestamps=True,
            _preload_content=False,
            _request_timeout=(10.0, READ_TIMEOUT_SECONDS),
            **kwargs,
        )
        with self._responses_lock:
            self._responses.add(response)
        try:
            for line in split_lines(response.stream(65536, decode_content=True)):
                yield line
                if self._stopping.is_set():
                    return
        finally:
            with self._responses_lock:
                self._responses.discard(response)
            response.release_conn()

    def _emit(
        self,
        template: obs_repo.LogRecord,
        stamp: dt.datetime | None,
        text: str,
        seq: int,
        budget: _Budget,
    ) -> bool:
        """Queue one line (waiting while the buffer is full); False once the bound is hit."""
        size = len(text.encode())
        with budget.lock:
            if budget.truncated:
                return False
            cut = size > budget.left
            if cut:
                text = text.encode()[: max(0, budget.left)].decode(errors="ignore")
                budget.truncated = True
            budget.left -= len(text.encode())
        when = stamp or dt.datetime.now(dt.UTC)
        attributes = {**template.attributes, "seq": seq}
        if text or not cut:
            self._put(dataclasses.replace(template, time=when, message=text, attributes=attributes))
        if cut:
            metrics.TASK_LOG_TRUNCATIONS.inc()
            limit = self.settings.task_log_max_bytes
            self._put(
                dataclasses.replace(
                    template,
                    time=when,
                    level=LogLevel.WARNING,
                    logger="plait.task_execution.logs",
                    message=f"[output truncated: this attempt printed more than {limit} bytes "
                    "(PLAIT_TASK_LOG_MAX_BYTES); the rest was not collected]",
                    attributes={**attributes, "seq": seq + 1, "truncated": True},
                )
            )
            return False
        return True

    def _put(self, record: obs_repo.LogRecord) -> None:
        """Append to the buffer; while it is full, wait (the node keeps the log meanwhile)."""
        while len(self.buffer) >= self.buffer.capacity and not self._stopping.is_set():
            time.sleep(0.05)
        self.buffer.put(record)


def split_lines(
    chunks: Iterable[bytes], max_line: int = MAX_LINE_BYTES
) -> Iterator[tuple[dt.datetime | None, str]]:
    """(kubelet timestamp, text) of each line of a ``timestamps=true`` log stream.

    A line longer than ``max_line`` bytes comes out in pieces of that size, each with the
    line's timestamp, so a process printing without newlines cannot fill the memory; the
    pieces of a line are cut at the same places whenever the log is read again.
    """
    pending = b""
    carry: dt.datetime | None = None  # the timestamp of a line cut into pieces
    cut = False
    for chunk in chunks:
        pending += chunk
        while True:
            end = pending.find(b"\n")
            if end < 0 and len(pending) <= max_line:
                break
            if end < 0 or end > max_line:
                piece, pending = pending[:max_line], pending[max_line:]
                stamp, text = (carry, _text(piece)) if cut else _parse(piece)
                carry, cut = stamp, True
                yield stamp, text
                continue
            piece, pending = pending[:end], pending[end + 1 :]
            yield (carry, _text(piece)) if cut else _parse(piece)
            carry, cut = None, False
    if pending:
        yield (carry, _text(pending)) if cut else _parse(pending)


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _text(raw: bytes) -> str:
    # PostgreSQL's text cannot hold NUL: it would make the whole batch's COPY fail.
    return raw.decode(errors="replace").removesuffix("\r").replace("\x00", "\ufffd")


def _parse(raw: bytes) -> tuple[dt.datetime | None, str]:
    """``<RFC 3339 time> <text>`` as the kubelet sends it with ``timestamps=true``."""
    stamp, _, text = raw.partition(b" ")
    try:
        when = dt.datetime.fromisoformat(stamp.decode()).astimezone(dt.UTC)
    except (ValueError, UnicodeDecodeError):
        return None, _text(raw)
    return when, _text(text)
