"""Tasks of kind ``http``: the operator makes the request itself, with no Pod.

An attempt is recorded ``Running`` (message :data:`IN_FLIGHT`) before the request is sent,
and finished (Succeeded, Failed, TimedOut) with the outputs when the answer is in, as a
Job's attempt is: same row, span and metrics (``Orchestrator._attempt_finished``), and the
task's ``timeoutSeconds`` and ``retries`` apply.

Crash safety: an attempt still ``Running`` with :data:`IN_FLIGHT` whose sending replica
(named in the message) is no longer a live member was in flight when an operator
stopped. The replica that owns its run, at start-up (:func:`register_http_tasks`) and
when it takes runs over from a replica that left (``Orchestrator.resume_owned``), sends
each such attempt again when its task says
``idempotent: true``, and otherwise fails (cause ``Error``, so ``retryOn: OnFailure`` does
not send it again either) with :data:`LOST_MESSAGE`: the request may or may not have
reached the server, and only an idempotent request may be sent twice.

Guard: :mod:`plait.integration.guard` refuses internal addresses unless the Integration
sets ``allowInternal: true``. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from kubernetes.client.exceptions import ApiException

from plait.integration.credentials import IntegrationUnavailable, for_task
from plait.integration.guard import InternalAddress, check_url, connector
from plait.kernel import expressions
from plait.resources.http_task import HttpTask
from plait.resources.workflow import Task, WorkflowDefinitionSpec
from plait.task_execution.states import FailureCause, TaskState
from plait.workflow_orchestrator import repository
from plait.workflow_orchestrator.members import MembershipSettings

if TYPE_CHECKING:
    from plait.workflow_orchestrator.engine import Launch
    from plait.workflow_orchestrator.repository import WorkflowInstance
    from plait.workflow_orchestrator.runtime import Orchestrator

__all__ = ["IN_FLIGHT", "LOST_MESSAGE", "HttpTasks", "http_tasks", "register_http_tasks"]

logger = logging.getLogger(__name__)

COMPONENT = "workflow_orchestrator"
IN_FLIGHT = "http request in flight"
#: Then the operator replica sending it, and ")": a request of a replica still alive is
#: not an orphan, whoever owns its run now.
SENDER = " (sent by "
LOST_MESSAGE = (
    "the operator stopped while this HTTP request was in flight, so whether the server "
    "received it is unknown; it is not sent again because the task is not idempotent "
    "(set http.idempotent: true for a request that may be sent twice)"
)
#: Largest outputs of an http task, as JSON (a container task's termination message limit).
MAX_OUTPUT_BYTES = 4096
DEFAULT_TIMEOUT_SECONDS = 60
_DEFAULT_BASE = {"github": "https://api.github.com", "slack": "https://slack.com/api"}
_BASE_SETTING = {"http": "baseUrl", "github": "apiUrl", "slack": "apiUrl"}


class _Refused(Exception):
    """The request is refused before it is sent (a data problem: never retried)."""


class _Unavailable(Exception):
    """The Integration or its Secret cannot be used (cause Error, like an unbuildable Job)."""


@dataclass(frozen=True)
class _Outcome:
    state: TaskState
    message: str
    outputs: dict[str, Any] | None = None
    cause: FailureCause | None = None


def _masked(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _as_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Refused(f"{what} must be a string, got {json.dumps(value)[:80]}")
    return value


class HttpTasks:
    """The http attempts of one orchestrator: started, in flight, settled after a crash."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator
        self._running: dict[tuple[uuid.UUID, str, int], asyncio.Task[None]] = {}

    async def start(self, instance: WorkflowInstance, task: Task, launch: Launch) -> None:
        """Record the attempt Running, then send the request in the background."""
        orchestrator = self._orchestrator
        http = task.http
        assert http is not None
        await orchestrator._tasks.record_without_job(
            namespace=instance.namespace,
            instance_name=instance.name,
            instance_uid=str(instance.id),
            task=launch.task,
            attempt=launch.attempt,
            state=TaskState.RUNNING,
            reason=f"{IN_FLIGHT}: {http.method} via Integration {http.integration}"
            f"{SENDER}{orchestrator.ownership.me})",
            inputs=launch.inputs,
        )
        self._spawn(instance.id, instance.namespace, instance.name, task, launch.task,
                    launch.attempt, dict(launch.inputs))  # fmt: skip

    def _spawn(
        self,
        uid: uuid.UUID,
        namespace: str,
        name: str,
        task: Task,
        task_name: str,
        attempt: int,
        inputs: Mapping[str, Any],
    ) -> None:
        key = (uid, task_name, attempt)
        if key in self._running and not self._running[key].done():
            return
        runner = asyncio.ensure_future(
            self._run(uid, namespace, name, task, task_name, attempt, inputs)
        )
        self._running[key] = runner
        runner.add_done_callback(lambda _: self._running.pop(key, None))

    async def _run(
        self,
        uid: uuid.UUID,
        namespace: str,
        name: str,
        task: Task,
        task_name: str,
        attempt: int,
        inputs: Mapping[str, Any],
    ) -> None:
        assert task.http is not None
        try:
            outcome = await self._perform(namespace, task.http, inputs, task.timeout_seconds)
        except Exception as exc:  # never lose the attempt: record why it failed
            logger.exception(
                "http task %s of %s/%s failed unexpectedly", task_name, namespace, name
            )
            outcome = _Outcome(
                TaskState.FAILED, f"the request failed: {type(exc).__name__}", None,
                FailureCause.ERROR,
            )  # fmt: skip
        await self._finish(uid, namespace, name, task_name, attempt, outcome)

    async def _finish(
        self, uid: uuid.UUID, namespace: str, name: str, task: str, attempt: int, outcome: _Outcome
    ) -> None:
        orchestrator = self._orchestrator
        changed = await orchestrator._tasks.update_without_job(
            uid,
            task,
            attempt,
            outcome.state,
            outputs=outcome.outputs,
            message=outcome.message,
            cause=outcome.cause,
        )
        orchestrator.records_changed(uid)  # before anything else can advance the run
        if changed is not None:
            await orchestrator._attempt_finished(changed)
        orchestrator.kick(uid, namespace, name)

    async def _credentials(
        self, namespace: str, http: HttpTask
    ) -> tuple[str, dict[str, Any], str | None]:
        """(type, settings, token) of the Integration; raises _Unavailable."""
        orchestrator = self._orchestrator
        try:
            [integration] = await for_task(orchestrator._db, namespace, [http.integration])
        except IntegrationUnavailable as exc:
            raise _Unavailable(str(exc)) from None
        if integration.type not in _BASE_SETTING:
            raise _Refused(
                f"Integration {http.integration!r} is of type {integration.type!r}; an http "
                "task uses one of type http, github or slack"
            )
        token = None
        items = {i.type_key: i.secret_key for i in integration.secret_items}
        if integration.secret_name and "token" in items:
            try:
                data = await orchestrator._kube.read_secret(namespace, integration.secret_name)
            except ApiException as exc:
                raise _Unavailable(
                    f"Secret {integration.secret_name!r} cannot be read: {exc.status} {exc.reason}"
                ) from None
            if data is None:
                raise _Unavailable(f"Secret {integration.secret_name!r} does not exist")
            if items["token"] not in data:
                raise _Unavailable(
                    f"Secret {integration.secret_name!r} has no key {items['token']!r}"
                )
            token = data[items["token"]]
        return integration.type, integration.settings, token

    async def _perform(
        self,
        namespace: str,
        http: HttpTask,
        inputs: Mapping[str, Any],
        timeout_seconds: int | None,
    ) -> _Outcome:
        token: str | None = None
        try:
            kind, settings, token = await self._credentials(namespace, http)
            activation = {"inputs": dict(inputs)}
            base = str(settings.get(_BASE_SETTING[kind]) or _DEFAULT_BASE.get(kind, ""))
            path = ""
            if http.path is not None:
                path = _as_text(_eval(http.path, activation, "path"), "http.path")
            url = base.rstrip("/") + ("/" + path.lstrip("/") if path else "")
            headers: dict[str, str] = dict(settings.get("headers") or {})
            if token:
                headers["Authorization"] = f"Bearer {token}"
            for header, source in http.headers.items():
                headers[header] = _as_text(_eval(source, activation, f"headers.{header}"),
                                           f"http.headers.{header}")  # fmt: skip
            data: bytes | None = None
            if http.body is not None:
                body = _eval(http.body, activation, "body")
                if isinstance(body, str):
                    data = body.encode()
                else:
                    data = json.dumps(body).encode()
                    headers.setdefault("Content-Type", "application/json; charset=utf-8")
            allow_internal = bool(settings.get("allowInternal"))
            limit = timeout_seconds or int(
                settings.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS
            )
            check_url(url, allow_internal)
            return await self._send(http, url, headers, data, activation, limit, allow_internal,
                                    token)  # fmt: skip
        except (_Refused, InternalAddress) as exc:
            return _Outcome(TaskState.FAILED, _masked(f"refused: {exc}", token), None,
                            FailureCause.INVALID)  # fmt: skip
        except _Unavailable as exc:
            return _Outcome(TaskState.FAILED, f"the task cannot start: {exc}", None,
                            FailureCause.ERROR)  # fmt: skip

    async def _send(
        self,
        http: HttpTask,
        url: str,
        headers: Mapping[str, str],
        data: bytes | None,
        activation: dict[str, Any],
        limit: int,
        allow_internal: bool,
        token: str | None,
    ) -> _Outcome:
        what = f"{http.method} {url}"
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector(allow_internal),
                    timeout=aiohttp.ClientTimeout(total=limit),
                ) as session,
                session.request(
                    http.method, url, headers=dict(headers), data=data, allow_redirects=False
                ) as response,
            ):
                raw = await response.content.read(http.max_response_bytes + 1)
                if len(raw) > http.max_response_bytes:
                    return _Outcome(TaskState.FAILED, f"{what}: the response is over "
                                    f"{http.max_response_bytes} bytes (http.maxResponseBytes)",
                                    None, FailureCause.FAILURE)  # fmt: skip
                status = response.status
                answer_headers = {k.lower(): v for k, v in response.headers.items()}
        except TimeoutError:
            return _Outcome(TaskState.TIMED_OUT, f"{what}: no answer within {limit} s", None,
                            FailureCause.FAILURE)  # fmt: skip
        except aiohttp.ClientError as exc:
            message = _masked(f"{what}: {type(exc).__name__}: {exc}", token)
            return _Outcome(TaskState.FAILED, message, None, FailureCause.FAILURE)
        text = raw.decode(errors="replace")
        body: Any = text
        if answer_headers.get("content-type", "").split(";")[0].strip().endswith("json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = text
        response_value = {"status": status, "headers": answer_headers, "body": body}
        scope = {**activation, "response": response_value}
        try:
            if http.success_condition is not None:
                ok = _eval(http.success_condition, scope, "successCondition")
                if not isinstance(ok, bool):
                    raise _Refused("http.successCondition must be true or false")
            else:
                ok = status < 400
            if not ok:
                return _Outcome(TaskState.FAILED, _masked(f"{what} answered {status}: "
                                f"{text[:200]}", token), None, FailureCause.FAILURE)  # fmt: skip
            outputs = {k: _eval(v, scope, f"outputs.{k}") for k, v in http.outputs.items()}
        except _Refused as exc:
            return _Outcome(TaskState.FAILED, _masked(str(exc), token), None, FailureCause.INVALID)
        size = len(json.dumps(outputs).encode())
        if size > MAX_OUTPUT_BYTES:
            return _Outcome(TaskState.FAILED, f"the outputs are {size} bytes, over "
                            f"{MAX_OUTPUT_BYTES}", None, FailureCause.INVALID)  # fmt: skip
        return _Outcome(TaskState.SUCCEEDED, f"{what} answered {status}", outputs)

    async def settle_orphans(self) -> int:
        """Attempts left Running by a stopped operator: sent again when idempotent, else
        failed with :data:`LOST_MESSAGE`. Returns how many were found."""
        from plait.workflow_orchestrator.runtime import _task

        orchestrator = self._orchestrator
        namespaces = orchestrator._namespaces
        async with orchestrator._db.connection(COMPONENT) as conn:
            runs = await repository.unfinished_runs(conn, namespaces)
        found = 0
        live = set(orchestrator.ownership.members)
        for run in runs:
            if not orchestrator.ownership.owns(run.id):
                continue
            attempts = [
                a
                for a in await orchestrator._tasks.attempts(run.id)
                if a.state is TaskState.RUNNING
                and (a.message or "").startswith(IN_FLIGHT)
                and (run.id, a.task_name, a.attempt) not in self._running
                and _sender(a.message or "") not in live
            ]
            if not attempts:
                continue
            loaded = await orchestrator._load(run.id)
            if loaded is None:
                continue
            spec: WorkflowDefinitionSpec = loaded[1]
            for a in attempts:
                found += 1
                task = _task(spec, a.task_name)
                if task.http is not None and task.http.idempotent:
                    logger.info("sending http task %s of %s/%s again (idempotent)",
                                a.task_name, run.namespace, run.name)  # fmt: skip
                    self._spawn(run.id, run.namespace, run.name, task, a.task_name, a.attempt,
                                a.inputs or {})  # fmt: skip
                else:
                    await self._finish(run.id, run.namespace, run.name, a.task_name, a.attempt,
                                       _Outcome(TaskState.FAILED, LOST_MESSAGE, None,
                                                FailureCause.ERROR))  # fmt: skip
        return found


def _sender(message: str) -> str | None:
    """The replica named in an in-flight attempt's message (None in one without)."""
    _, found, rest = message.partition(SENDER)
    return rest.removesuffix(")") if found else None


def _eval(source: str, activation: Mapping[str, Any], field: str) -> Any:
    try:
        return expressions.evaluate(expressions.compile(source), activation)
    except expressions.ExpressionError as exc:
        raise _Refused(f"http.{field}: {exc}") from None


_BY_ORCHESTRATOR: weakref.WeakKeyDictionary[Orchestrator, HttpTasks] = weakref.WeakKeyDictionary()


def http_tasks(orchestrator: Orchestrator) -> HttpTasks:
    """The orchestrator's http tasks (one per orchestrator, made on first use)."""
    found = _BY_ORCHESTRATOR.get(orchestrator)
    if found is None:
        found = _BY_ORCHESTRATOR[orchestrator] = HttpTasks(orchestrator)
    return found


def register_http_tasks(
    registry: Any, orchestrator: Orchestrator, logged_in: asyncio.Event | None
) -> None:
    """At start-up, once credentials are loaded, settle the http attempts a stopped
    operator left in flight (see the module's docstring)."""
    import kopf

    async def settle() -> None:
        if logged_in is not None:
            await logged_in.wait()
        # Once now, and once more when a replica killed just before this one started has
        # left the members (its lease run out): its requests are orphans only then.
        for delay in (
            0.0,
            MembershipSettings().lease_seconds + 2 * MembershipSettings().heartbeat_seconds,
        ):
            await asyncio.sleep(delay)
            try:
                found = await http_tasks(orchestrator).settle_orphans()
            except Exception:
                logger.exception("settling the http requests left in flight failed")
                continue
            if found:
                logger.info(
                    "settled %d http request(s) left in flight by a stopped operator", found
                )

    pending: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def _settle_http_tasks(**_: Any) -> None:
        pending.append(asyncio.ensure_future(settle()))

    @kopf.on.cleanup(registry=registry)
    async def _stop_settling(**_: Any) -> None:
        # Not left for Kopf to wait for at exit: a stopped operator's own requests are
        # settled by the next one.
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
