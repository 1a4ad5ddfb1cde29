"""WorkflowTest: cases that run a WorkflowDefinition against mocked tasks and check the result.

A case gives the run's arguments, the events that arrive while it runs, a mock per task
(its outputs, exit code and message, failing attempts, duration, timeout) and what must be
true at the end (phase, each task's state and attempts, outputs, the failure, the order
of tasks, a bound on the run's duration, CEL assertions). ``plait test run`` runs the
cases on the real engine with a simulated clock (see :mod:`plait.testing_framework.local`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from plait.resources.common import (
    AGE_COLUMN,
    MAX_MAP_ENTRIES,
    READY_COLUMN,
    CelExpression,
    DnsLabel,
    Identifier,
    KindInfo,
    PlaitModel,
    PrinterColumn,
    Status,
)
from plait.resources.workflow import Phase, WorkflowReference

__all__ = [
    "ASSERTION_VARIABLES",
    "MAX_CASES",
    "MOCK_VARIABLES",
    "WORKFLOW_TEST",
    "CaseEvent",
    "CaseTrigger",
    "Expectations",
    "FailureExpectation",
    "Mock",
    "TaskExpectation",
    "TestCase",
    "TestRunSummary",
    "TriggeringEvent",
    "WorkflowTestSpec",
    "WorkflowTestStatus",
]

#: Most cases in one WorkflowTest.
MAX_CASES = 200
#: What a case's CEL assertions may read.
ASSERTION_VARIABLES = frozenset({"params", "tasks", "workflow"})
#: What a mock's outputExpressions may read.
MOCK_VARIABLES = frozenset({"inputs", "attempt"})

_ANY = Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
AnyMap = Annotated[
    dict[Identifier, Annotated[Any, _ANY]],
    Field(
        max_length=MAX_MAP_ENTRIES, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    ),
]
TaskState = Literal["Succeeded", "Failed", "Skipped", "Cancelled", "TimedOut", "Running", "Waiting"]
Text = Annotated[str, StringConstraints(max_length=4096)]


class Mock(PlaitModel):
    """What a task does in a test instead of running: each attempt succeeds with its
    outputs after durationSeconds, unless it is made to fail."""

    outputs: AnyMap = Field(default_factory=dict)
    """Outputs of a successful attempt, as tasks.<name>.outputs."""
    output_expressions: Annotated[dict[str, CelExpression], Field(max_length=MAX_MAP_ENTRIES)] = (
        Field(default_factory=dict)
    )
    """Outputs computed per attempt: output name -> CEL over inputs (the attempt's
    evaluated inputs) and attempt (its number); they override outputs of the same name."""
    exit_code: Annotated[int, Field(ge=0, le=255)] = 0
    """Exit code of a failing attempt; non-zero with failAttempts unset: every attempt fails."""
    message: Text | None = None
    """Message of each attempt (a failing attempt's reason)."""
    fail_attempts: Annotated[int, Field(ge=0, le=100)] = 0
    """The first N attempts fail (with exitCode, 1 when that is 0), later ones succeed."""
    timed_out: bool = False
    """Failing attempts run past the task's timeoutSeconds (TimedOut) instead of exiting
    non-zero; with failAttempts unset, every attempt does."""
    duration_seconds: Annotated[float, Field(ge=0, le=31536000)] = 0
    """Simulated time each attempt runs; an attempt that runs longer than the task's
    timeoutSeconds times out at it."""


class CaseEvent(PlaitModel):
    """An event that arrives while the case runs; it completes the waits for events of its
    type that are waiting at that moment and whose correlation is true for it."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    """CloudEvents type."""
    after_seconds: Annotated[float, Field(ge=0, le=31536000)] = 0
    """When it arrives, in seconds from the start of the run: simulated in a local run,
    real (from the run's creation) in the cluster."""
    data: Annotated[Any, _ANY] = None
    """The event's data (event.data in CEL); a JSON object becomes the task's outputs."""
    source: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = "plait-test"
    """CloudEvents source (event.source)."""
    subject: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """CloudEvents subject (event.subject)."""


class TriggeringEvent(PlaitModel):
    """The event an EventTrigger receives (its type is the trigger's eventType)."""

    data: Annotated[Any, _ANY] = None
    """The event's data (event.data in the trigger's CEL)."""
    source: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = "plait-test"
    """CloudEvents source (event.source)."""
    subject: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """CloudEvents subject (event.subject)."""


class CaseTrigger(PlaitModel):
    """Start the case's run as an EventTrigger would on an event: the trigger's filter
    must hold, and its arguments become the run's."""

    event_trigger: DnsLabel
    """Name of an EventTrigger (of an eventType) that starts the workflow under test."""
    event: TriggeringEvent = Field(default_factory=TriggeringEvent)
    """The event it receives."""


class TaskExpectation(PlaitModel):
    """What must be true of one task at the end of the run."""

    state: TaskState | None = None
    """State of its last attempt: Succeeded, Failed, Skipped, Cancelled, TimedOut (or
    Running, Waiting when the run never ended)."""
    attempts: Annotated[int, Field(ge=0, le=1000)] | None = None
    """Number of attempts recorded (a skipped task has one)."""
    outputs: AnyMap | None = None
    """Each output named here equals this value (others are not compared)."""
    message_contains: Text | None = None
    """Its last attempt's message contains this text (a skip or failure reason)."""


class FailureExpectation(PlaitModel):
    """What must be true of the failure that decided a failed run."""

    task: DnsLabel | None = None
    """The task it names."""
    attempt: Annotated[int, Field(ge=1)] | None = None
    """Its attempt number."""
    exit_code: int | None = None
    """Its exit code."""
    message_contains: Text | None = None
    """Its message contains this text."""


class Expectations(PlaitModel):
    """What must be true when the case's run is over; unset fields are not checked."""

    phase: Phase | None = None
    """Final phase: Succeeded or Failed (Running: the run never ends, e.g. it waits for an
    event that never comes)."""
    tasks: Annotated[dict[str, TaskExpectation], Field(max_length=2000)] = Field(
        default_factory=dict
    )
    """Task name -> what must be true of it; the admission webhook refuses a name that
    is not a task of the workflow."""
    outputs: AnyMap | None = None
    """Each workflow output named here equals this value."""
    failure: FailureExpectation | None = None
    """The failure of a failed run."""
    order: Annotated[list[DnsLabel], Field(max_length=5000)] | None = None
    """These tasks started (their first attempt) in this order; tasks not listed are free."""
    max_duration_seconds: Annotated[float, Field(ge=0)] | None = None
    """The run took at most this many simulated seconds."""
    assertions: Annotated[list[CelExpression], Field(max_length=64)] = Field(default_factory=list)
    """CEL expressions that must be true, over workflow (phase, outputs, failure,
    durationSeconds), tasks (tasks.<name>.phase, .attempts, .outputs, .message) and params."""


class TestCase(PlaitModel):
    """One run of the workflow under test, with its mocks and what it must end with."""

    __test__ = False  # not a pytest test class

    name: DnsLabel
    """Name of the case, unique in the test."""
    description: Text | None = None
    """What the case proves."""
    arguments: AnyMap = Field(default_factory=dict)
    """Parameter name -> value, as a WorkflowInstance's arguments."""
    trigger: CaseTrigger | None = None
    """Start the run from an event through an EventTrigger instead (arguments must then be
    empty)."""
    mocks: Annotated[dict[str, Mock], Field(max_length=2000)] = Field(default_factory=dict)
    """Task name -> its mock (a fan-out's mock is every item's); the admission webhook
    refuses a name that is not a task of the workflow."""
    events: Annotated[list[CaseEvent], Field(max_length=100)] = Field(default_factory=list)
    """Events that arrive during the run, for its wait-for-event tasks."""
    expect: Expectations = Field(default_factory=Expectations)
    """What must be true at the end."""


class WorkflowTestSpec(PlaitModel):
    """Cases that prove a workflow's paths: mocked tasks, and the outcome each must give."""

    __test__ = False

    workflow_ref: WorkflowReference
    """The WorkflowDefinition under test."""
    description: Text | None = None
    """What the test covers."""
    cases: Annotated[
        list[TestCase],
        Field(
            min_length=1,
            max_length=MAX_CASES,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ]
    """The cases; each runs on its own."""
    run_on_definition_change: bool = False
    """Run the test in the cluster whenever its workflow gets a new version (and once for
    the version current when the test is applied); the result is on status.lastRun."""


class TestRunSummary(PlaitModel):
    """The outcome of the last run of a WorkflowTest."""

    __test__ = False

    result: Literal["Running", "Passed", "Failed", "Error"]
    """Running until every case has ended; then Passed when every case passed, Failed
    when one failed, Error when one could not run (or the run could not start)."""
    run_id: Annotated[str, StringConstraints(max_length=36)] | None = None
    """Id of the run (test_runs.id): its cases' results are the test_case_results rows of it."""
    total: Annotated[int, Field(ge=0)] = 0
    """Cases in the run."""
    passed: Annotated[int, Field(ge=0)] = 0
    """Cases that passed."""
    failed: Annotated[int, Field(ge=0)] = 0
    """Cases that failed or could not run."""
    message: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """Why the run could not start, or which cases failed."""
    definition_version: Annotated[int, Field(ge=1)] | None = None
    """Version of the WorkflowDefinition tested."""
    start_time: dt.datetime | None = None
    """When the run was requested."""
    completion_time: dt.datetime | None = None
    """When the run ended."""


class WorkflowTestStatus(Status):
    """Observed state of a WorkflowTest: its last run."""

    __test__ = False

    last_run: TestRunSummary | None = None
    """The last run of the test."""


WORKFLOW_TEST = KindInfo(
    kind="WorkflowTest",
    plural="workflowtests",
    short_names=("wft",),
    spec=WorkflowTestSpec,
    status=WorkflowTestStatus,
    description="Test cases of a WorkflowDefinition: mocked tasks and the expected outcome.",
    printer_columns=(
        PrinterColumn("Workflow", ".spec.workflowRef.name", description="WorkflowDefinition"),
        PrinterColumn("Result", ".status.lastRun.result", description="Result of the last run"),
        PrinterColumn("Passed", ".status.lastRun.passed", "integer", "Cases passed"),
        PrinterColumn("Failed", ".status.lastRun.failed", "integer", "Cases failed"),
        READY_COLUMN,
        AGE_COLUMN,
    ),
)
