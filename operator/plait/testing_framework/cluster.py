"""Run WorkflowTests in the cluster: each case a real WorkflowInstance with mocked tasks.

A run is a row of ``test_runs``, requested Pending by ``plait test run NAME`` or
(``spec.runOnDefinitionChange``) by a new version of the workflow under test. The
operator carries it out (:class:`ClusterTests`, one loop per replica; each run is carried
out by the replica that owns it, as runs of workflows are): it pins the workflow version,
creates one WorkflowInstance per case with the case's arguments and its mocks in
``spec.mocks`` (a mocked task starts no Job: the operator records each attempt as
:func:`plait.workflow_orchestrator.mocks.mock_outcome` says, the function local runs use;
tasks left unmocked run for real; the case's ``events`` are delivered to that run alone at
their ``afterSeconds``), and once every case's run has ended judges each case
with :func:`plait.testing_framework.results.compare`, the checker of local runs, on what
PostgreSQL recorded. Results go to ``test_case_results``, the summary and the coverage to
``test_runs``, and the last run to the WorkflowTest's ``status.lastRun``.

Every step is idempotent (instances have deterministic names; a case's result and a run's
end are recorded once), so a restarted operator picks up a run where it stands. Which
case events were delivered is kept in memory only: after a restart an event whose time
has passed is delivered again, which completes nothing its first delivery completed (the
event's id is the same) but does complete a matching wait that started since.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from plait import API_GROUP, API_VERSION
from plait.event_processing.repository import EventInstance
from plait.kernel.conditions import Condition, merge_conditions
from plait.kernel.database import Database
from plait.kernel.kube import Kube
from plait.resources.test import CaseEvent, TestCase, WorkflowTestSpec
from plait.resources.trigger import EventTriggerSpec
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.task_execution.repository import TaskInstance, tasks_of_instance
from plait.testing_framework import repository
from plait.testing_framework.gating import TestGate
from plait.testing_framework.local import CaseError, Record, RunResult, case_arguments
from plait.testing_framework.results import CaseResult, Coverage, compare
from plait.testing_framework.states import CaseOutcome, TestRunStatus
from plait.workflow_orchestrator import repository as workflows
from plait.workflow_orchestrator.engine import Failure, parameters_with_defaults
from plait.workflow_orchestrator.repository import WorkflowInstance
from plait.workflow_orchestrator.states import FINAL_PHASES, WorkflowPhase

__all__ = [
    "CASE_TIMEOUT_SECONDS",
    "LABEL_TEST_CASE",
    "LABEL_TEST_RUN",
    "ClusterTests",
    "case_bound",
    "case_instance_name",
    "run_of_instance",
]

logger = logging.getLogger(__name__)
COMPONENT = "testing_framework"
#: On each case's WorkflowInstance: the id of the test run (test_runs.id) it belongs to.
LABEL_TEST_RUN = "plait.dev/test-run"
#: On each case's WorkflowInstance: the case's name.
LABEL_TEST_CASE = "plait.dev/test-case"
#: A case whose run has not ended this long after it was created is judged as it stands
#: (phase Running) and its run cancelled, unless the case or its workflow bounds it
#: (:func:`case_bound`).
CASE_TIMEOUT_SECONDS = 600.0
#: Added to a case's own bound (its maxDurationSeconds, its workflow's timeoutSeconds), so
#: that a run that ends a little late is judged on how it ended.
BOUND_GRACE_SECONDS = 60.0
#: How often the loop looks for runs to carry out and workflow versions to test.
POLL_SECONDS = 1.0


class DeliverEvent(Protocol):
    """The orchestrator's delivery of an event to the waits of one run
    (:meth:`plait.workflow_orchestrator.runtime.Orchestrator.deliver_event`)."""

    def __call__(self, event: EventInstance, *, run: uuid.UUID | None = None) -> Awaitable[int]: ...


def case_event(
    run_id: uuid.UUID, case: TestCase, index: int, number: int, event: CaseEvent, namespace: str
) -> EventInstance:
    """Event ``number`` of case ``index`` of a run, as its case's run receives it: its id
    is the same every time (a redelivery after a restart is recognised), its CloudEvents
    id is ``<case>-<number>`` (as in a local run), its time now."""
    now = dt.datetime.now(dt.UTC)
    return EventInstance(
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"plait-test-run:{run_id}/{index}/{number}"),
        namespace=namespace,
        source=event.source,
        event_id=f"{case.name}-{number}",
        type=event.type,
        spec_version="1.0",
        subject=event.subject,
        time=now,
        data_content_type="application/json",
        data_schema=None,
        data=event.data,
        data_base64=None,
        extensions={},
        partition_key=None,
        sequence_id=None,
        sequence_position=None,
        received_at=now,
    )


def case_instance_name(test: str, run_id: uuid.UUID, index: int) -> str:
    """The WorkflowInstance of case ``index`` of a run: deterministic, so creating it
    again after a crash finds the one created before."""
    return f"{test[:200]}-{run_id.hex[:10]}-{index}"


def case_bound(case: TestCase, workflow: WorkflowDefinitionSpec, default: float) -> float:
    """How long a case's run may take before it is judged as it stands: the case's
    ``expect.maxDurationSeconds`` (it fails beyond that anyway) or its workflow's
    ``timeoutSeconds`` (the run is over by then but for its exit task), whichever is less,
    plus :data:`BOUND_GRACE_SECONDS`; ``default`` when neither is set."""
    bounds = [
        b for b in (case.expect.max_duration_seconds, workflow.timeout_seconds) if b is not None
    ]
    return min(bounds) + BOUND_GRACE_SECONDS if bounds else default


def _seconds(moment: dt.datetime | None, base: dt.datetime) -> float | None:
    return None if moment is None else max((moment - base).total_seconds(), 0.0)


def run_of_instance(
    spec: WorkflowDefinitionSpec,
    instance: WorkflowInstance,
    attempts: Sequence[TaskInstance],
    *,
    now: dt.datetime,
    bound: float = CASE_TIMEOUT_SECONDS,
) -> RunResult:
    """A case's run as recorded in PostgreSQL, in the form the checker of local runs
    reads: times in seconds from the run's creation, a run not ended yet (within
    ``bound`` seconds) in phase Running. An attempt recorded with an empty message has
    none (a mocked attempt is recorded Running with an empty message, and keeps it when
    its mock gives none)."""
    base = instance.created_at
    records = [
        Record(
            task=a.task_name,
            attempt=a.attempt,
            state=a.state,
            started=_seconds(a.started_at, base),
            finished=_seconds(a.finished_at, base),
            inputs=a.inputs or {},
            outputs=a.outputs,
            exit_code=a.exit_code,
            message=a.message or None,
            cause=a.failure_cause,
        )
        for a in sorted(attempts, key=lambda a: (a.created_at, a.task_name, a.attempt))
        if a.superseded_at is None
    ]
    ended = instance.phase in FINAL_PHASES
    failure = None
    if ended and instance.failure:
        f = instance.failure
        failure = Failure(
            f.get("task"), f.get("attempt"), f.get("exitCode"), str(f.get("message", ""))
        )
    elif ended and instance.phase is not WorkflowPhase.SUCCEEDED:
        failure = Failure(None, None, None, instance.message or instance.phase.value)
    end = instance.finished_at if ended and instance.finished_at else now
    return RunResult(
        phase=instance.phase.value if ended else "Running",
        outputs=instance.outputs if ended else None,
        failure=failure,
        records=records,
        duration=(end - base).total_seconds(),
        params=parameters_with_defaults(spec, instance.inputs),
        stuck=None if ended else f"the run did not end within {bound:g}s: it was cancelled",
    )


class ClusterTests:
    """Carries out the requested runs of WorkflowTests; one per operator process."""

    def __init__(
        self,
        db: Database,
        kube: Kube,
        *,
        owns: Callable[[uuid.UUID], bool] = lambda _: True,
        namespaces: Sequence[str] | None = None,
        case_timeout: float = CASE_TIMEOUT_SECONDS,
        deliver_event: DeliverEvent | None = None,
    ) -> None:
        """``owns``: which runs this replica carries out (replicas share them as they
        share workflow runs); ``namespaces``: the watched ones (None: all);
        ``case_timeout``: how long a case's run may take when neither the case nor its
        workflow bounds it (:func:`case_bound`); ``deliver_event``: how a case's
        ``events`` reach its run (None: a case with events is an error)."""
        self._db = db
        self._kube = kube
        self._owns = owns
        self._namespaces = tuple(namespaces) if namespaces is not None else None
        self._case_timeout = case_timeout
        self._deliver_event = deliver_event
        self._delivered: set[uuid.UUID] = set()
        """The case events this process has delivered."""
        self._gate = TestGate(db, kube, owns=owns, namespaces=namespaces)

    async def run(self, stop: asyncio.Event, *, interval: float = POLL_SECONDS) -> None:
        """Step every ``interval`` seconds until ``stop``."""
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                logger.exception("carrying out WorkflowTest runs failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def step(self) -> None:
        """Request the runs new workflow versions call for (``runOnDefinitionChange``, the
        test gate), move every unfinished run this replica owns as far as it can go now,
        and decide the gated versions whose runs have ended."""
        await self.follow_definitions()
        await self._gate.step()
        async with self._db.connection(COMPONENT) as conn:
            runs = await repository.unfinished_test_runs(conn, self._namespaces)
        for run in runs:
            if not self._owns(run.id):
                continue
            try:
                await self.drive(run)
            except Exception:
                logger.exception(
                    "test run %s of %s/%s failed; trying again", run.id, run.namespace,
                    run.test_name,
                )  # fmt: skip

    async def follow_definitions(self) -> int:
        """For each test with ``runOnDefinitionChange``, request a run of the workflow's
        current version unless it has one; returns how many were requested."""
        async with self._db.connection(COMPONENT) as conn:
            following = await repository.workflow_following_tests(conn, self._namespaces)
        requested = 0
        for test in following:
            spec = WorkflowTestSpec.model_validate(test.spec)
            ref = spec.workflow_ref
            async with self._db.connection("workflow_orchestrator") as conn:
                if ref.version is not None:
                    definition = await workflows.get_workflow_definition(
                        conn, test.namespace, ref.name, ref.version
                    )
                else:
                    definition = await workflows.latest_workflow_definition(
                        conn, test.namespace, ref.name
                    )
            if definition is None or definition.deleted_at is not None:
                continue
            async with self._db.connection(COMPONENT) as conn:
                run = await repository.request_test_run(
                    conn,
                    test.namespace,
                    test.name,
                    requested_by="definition-change",
                    workflow_version=definition.version,
                )
            if run is not None:
                requested += 1
                logger.info("%s/%s: testing version %d of WorkflowDefinition %s (run %s)",
                            test.namespace, test.name, definition.version, ref.name,
                            run.id)  # fmt: skip
        return requested

    async def drive(self, run: repository.TestRun) -> repository.TestRun:
        """Move one run forward: start it, create its cases' runs, judge them once they
        have all ended. Returns the run as it now stands."""
        async with self._db.connection(COMPONENT) as conn:
            stored = await repository.get_test_definition(
                conn, run.namespace, run.test_name, run.test_version
            )
        assert stored is not None  # the foreign key pins it
        test = WorkflowTestSpec.model_validate(stored.spec)
        if run.status is TestRunStatus.PENDING:
            started = await self._begin(run, test)
            if started is None:
                return await self._reread(run)
            run = started
            await self._publish(run)
        assert run.workflow_version is not None  # set when the run began
        async with self._db.connection("workflow_orchestrator") as conn:
            definition = await workflows.get_workflow_definition(
                conn, run.namespace, test.workflow_ref.name, run.workflow_version
            )
        assert definition is not None  # versions are never removed
        spec = WorkflowDefinitionSpec.model_validate(definition.spec)
        instances, errors = await self._start_cases(run, test, stored.k8s_uid)
        await self._send_events(run, test, instances)
        now = dt.datetime.now(dt.UTC)
        bounds = [case_bound(case, spec, self._case_timeout) for case in test.cases]
        waiting = [
            index
            for index, i in instances.items()
            if i is None
            or (
                i.phase not in FINAL_PHASES and (now - i.created_at).total_seconds() < bounds[index]
            )
        ]
        if waiting:
            return run
        coverage = Coverage(spec)
        verdicts: list[CaseResult] = []
        for index, case in enumerate(test.cases):
            if case.name in errors:
                verdicts.append(CaseResult(case.name, CaseOutcome.ERROR, error=errors[case.name]))
                continue
            instance = instances[index]
            assert instance is not None
            async with self._db.connection("task_execution") as conn:
                attempts = await tasks_of_instance(conn, instance.id)
            result = run_of_instance(spec, instance, attempts, now=now, bound=bounds[index])
            if instance.phase not in FINAL_PHASES:
                await self._kube.patch_instance_spec(run.namespace, instance.name, {"cancel": True})
            coverage.add(result)
            mismatches = compare(spec, case, result)
            outcome = CaseOutcome.FAILED if mismatches else CaseOutcome.PASSED
            verdicts.append(CaseResult(case.name, outcome, mismatches, run=result))
        async with self._db.connection(COMPONENT) as conn:
            for index, verdict in enumerate(verdicts):
                instance = instances.get(index)
                await repository.record_case(
                    conn,
                    run.id,
                    verdict.case,
                    verdict.outcome,
                    message=_message(verdict),
                    details=verdict.details(),
                    workflow_instance_id=instance.id if instance is not None else None,
                    duration_ms=int(verdict.run.duration * 1000) if verdict.run else None,
                )
            failing = [v.case for v in verdicts if v.outcome is not CaseOutcome.PASSED]
            finished = await repository.finish_test_run(
                conn,
                run.id,
                message=("cases not passed: " + ", ".join(failing))[:1024] if failing else None,
                coverage=coverage.lines(),
            )
        run = finished or await self._reread(run)
        await self._publish(run)
        return run

    async def _reread(self, run: repository.TestRun) -> repository.TestRun:
        async with self._db.connection(COMPONENT) as conn:
            found = await repository.get_test_run(conn, run.id)
        assert found is not None
        return found

    async def _begin(
        self, run: repository.TestRun, test: WorkflowTestSpec
    ) -> repository.TestRun | None:
        """Pin the workflow version (the run's, the test's, else the newest) and start the
        run; a workflow not stored ends it in Error. None when it did not start."""
        ref = test.workflow_ref
        version = run.workflow_version or ref.version
        async with self._db.connection("workflow_orchestrator") as conn:
            if version is not None:
                definition = await workflows.get_workflow_definition(
                    conn, run.namespace, ref.name, version
                )
            else:
                definition = await workflows.latest_workflow_definition(
                    conn, run.namespace, ref.name
                )
        async with self._db.connection(COMPONENT) as conn:
            if definition is None or definition.deleted_at is not None:
                message = f"WorkflowDefinition {ref.name!r}" + (
                    f" version {version}" if version is not None else ""
                ) + " is not stored: apply it, then run the test again"  # fmt: skip
                ended = await repository.finish_test_run(conn, run.id, error=True, message=message)
                if ended is not None:
                    await self._publish(ended)
                return None
            return await repository.begin_test_run(
                conn, run.id, workflow_version=definition.version, total_cases=len(test.cases)
            )

    async def _start_cases(
        self, run: repository.TestRun, test: WorkflowTestSpec, owner_uid: uuid.UUID | None
    ) -> tuple[dict[int, WorkflowInstance | None], dict[str, str]]:
        """Each case's run (None: created, not stored yet), created where missing; and the
        cases that cannot run (case name -> why)."""
        instances: dict[int, WorkflowInstance | None] = {}
        errors: dict[str, str] = {}
        for index, case in enumerate(test.cases):
            name = case_instance_name(run.test_name, run.id, index)
            async with self._db.connection("workflow_orchestrator") as conn:
                instance = await workflows.instance_by_name(conn, run.namespace, name)
            if instance is not None:
                instances[index] = instance
                continue
            try:
                arguments = await self._arguments(run.namespace, case)
            except CaseError as exc:
                errors[case.name] = str(exc)
                continue
            if case.events and self._deliver_event is None:
                errors[case.name] = (
                    "a case with events cannot run here: this operator delivers no events "
                    "to test runs; run it with plait test run -f"
                )
                continue
            await self._kube.create_instance(
                _instance_manifest(run, test, case, name, arguments, owner_uid)
            )
            instances[index] = None
        return instances, errors

    async def _send_events(
        self,
        run: repository.TestRun,
        test: WorkflowTestSpec,
        instances: Mapping[int, WorkflowInstance | None],
    ) -> None:
        """Deliver each case event whose time has come (``afterSeconds`` after its run was
        created) to the waits of its case's run alone, once: no other run and no
        EventTrigger sees it. An event that finds no wait waiting is lost, as locally."""
        if self._deliver_event is None:
            return
        now = dt.datetime.now(dt.UTC)
        for index, case in enumerate(test.cases):
            instance = instances.get(index)
            if instance is None or instance.phase in FINAL_PHASES:
                continue
            for number, event in enumerate(case.events):
                due = instance.created_at + dt.timedelta(seconds=event.after_seconds)
                sent = case_event(run.id, case, index, number, event, run.namespace)
                if due > now or sent.id in self._delivered:
                    continue
                completed = await self._deliver_event(sent, run=instance.id)
                self._delivered.add(sent.id)
                logger.info("%s/%s: case %s: event %s (%s) completed %d wait(s)",
                            run.namespace, run.test_name, case.name, sent.event_id, event.type,
                            completed)  # fmt: skip

    async def _arguments(self, namespace: str, case: TestCase) -> Mapping[str, Any]:
        """The case's arguments, or those its trigger gives for its event (the code of
        local runs, with the EventTrigger as stored)."""
        triggers: dict[str, EventTriggerSpec] = {}
        if case.trigger is not None:
            async with self._db.connection("workflow_orchestrator") as conn:
                found = await workflows.event_trigger_by_name(
                    conn, namespace, case.trigger.event_trigger
                )
            if found is not None:
                triggers[found.name] = EventTriggerSpec.model_validate(found.spec)
        arguments = case_arguments(case, triggers)
        if case.trigger is not None and not triggers:
            raise CaseError(f"EventTrigger {case.trigger.event_trigger!r} is not stored")
        return arguments

    async def _publish(self, run: repository.TestRun) -> None:
        """Show the run on the WorkflowTest: ``status.lastRun`` and the ``Tested``
        condition (True when it passed). A run older than the one shown is not shown."""
        for _ in range(5):
            obj = await self._kube.get_test(run.namespace, run.test_name)
            if obj is None:
                return
            status = obj.get("status") or {}
            shown = status.get("lastRun") or {}
            if shown.get("runId") not in (None, str(run.id)) and _newer(shown, run):
                return
            final = run.status is not TestRunStatus.RUNNING and run.finished_at is not None
            result = run.status.value if final else "Running"
            if run.status is TestRunStatus.CANCELLED:
                result = "Error"
            last: dict[str, Any] = {
                "result": result,
                "runId": str(run.id),
                "total": run.total_cases,
                "passed": run.passed_cases,
                "failed": run.failed_cases,
                "definitionVersion": run.workflow_version,
                "startTime": _rfc3339(run.created_at),
                "completionTime": _rfc3339(run.finished_at),
                "message": (run.message or None) and run.message[:1024],
            }
            condition = Condition(
                "Tested",
                "True" if result == "Passed" else "Unknown" if result == "Running" else "False",
                result,
                run.message
                or (
                    f"{run.passed_cases}/{run.total_cases} cases passed"
                    if final
                    else f"running {run.total_cases} cases"
                ),
                obj["metadata"].get("generation", 0),
            )
            desired = {
                "lastRun": {k: v for k, v in last.items() if v is not None},
                "conditions": merge_conditions(status.get("conditions"), [condition]),
            }
            if await self._kube.patch_test_status(
                run.namespace,
                run.test_name,
                desired,
                resource_version=obj["metadata"]["resourceVersion"],
            ):
                return


def _newer(shown: Mapping[str, Any], run: repository.TestRun) -> bool:
    """Whether the run shown started after ``run`` was requested."""
    started = shown.get("startTime")
    return isinstance(started, str) and started > (_rfc3339(run.created_at) or "")


def _rfc3339(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _message(verdict: CaseResult) -> str | None:
    if verdict.error is not None:
        return verdict.error[:4096]
    if verdict.mismatches:
        return "; ".join(str(m) for m in verdict.mismatches)[:4096]
    return None


def _instance_manifest(
    run: repository.TestRun,
    test: WorkflowTestSpec,
    case: TestCase,
    name: str,
    arguments: Mapping[str, Any],
    owner_uid: uuid.UUID | None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": run.namespace,
        "labels": {LABEL_TEST_RUN: str(run.id), LABEL_TEST_CASE: case.name},
    }
    if owner_uid is not None:
        # Deleting the test deletes its cases' runs.
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": "WorkflowTest",
                "name": run.test_name,
                "uid": str(owner_uid),
            }
        ]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "WorkflowInstance",
        "metadata": metadata,
        "spec": {
            "workflowRef": {"name": test.workflow_ref.name, "version": run.workflow_version},
            "arguments": dict(arguments),
            "mocks": {
                task: mock.model_dump(mode="json", by_alias=True, exclude_defaults=True)
                for task, mock in case.mocks.items()
            },
        },
    }
