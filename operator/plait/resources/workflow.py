"""WorkflowDefinition (a DAG of tasks) and WorkflowInstance (one run of it).

The instance's status is a bounded summary on purpose: which task is where lives in
PostgreSQL, so a 10,000-task run never grows the object past etcd's size limit.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from plait.resources.cache import TaskCache
from plait.resources.common import (
    AGE_COLUMN,
    MAX_MAP_ENTRIES,
    READY_COLUMN,
    CelExpression,
    ContainerTemplate,
    DnsLabel,
    Identifier,
    KindInfo,
    LocalObjectReference,
    NodeSelector,
    Parameters,
    PlaitModel,
    PrinterColumn,
    RetryPolicy,
    SecurityContext,
    Status,
    Tolerations,
    artifact_path_problem,
    cel_rule,
)
from plait.resources.foreach import ForEach
from plait.resources.http_task import HttpTask
from plait.resources.synchronization import Synchronization

__all__ = [
    "ARTIFACT_FROM",
    "MAX_TASKS",
    "MAX_WORKFLOW_DEPTH",
    "WORKFLOW_DEFINITION",
    "WORKFLOW_INSTANCE",
    "ArtifactRepository",
    "Failure",
    "InputArtifact",
    "Phase",
    "Task",
    "TaskCounts",
    "WaitForEvent",
    "WorkflowDefinitionSpec",
    "WorkflowDefinitionStatus",
    "WorkflowInstanceSpec",
    "WorkflowInstanceStatus",
    "WorkflowReference",
]

#: Most tasks in one workflow: large fan-outs are a supported use, not an accident.
MAX_TASKS = 5000

ExpressionMap = Annotated[dict[Identifier, CelExpression], Field(max_length=MAX_MAP_ENTRIES)]


class WaitForEvent(PlaitModel):
    """Pause the task until a matching event arrives, instead of running a container."""

    event_type: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    """CloudEvents type to wait for."""
    correlation: CelExpression
    """CEL over event, params and tasks; the first event for which it is true completes the
    task, and the event's data becomes the task's outputs."""
    timeout_seconds: Annotated[int, Field(ge=1, le=31536000)] | None = None
    """Seconds to wait before failing; unset: the task's timeoutSeconds, then the workflow's."""


#: ``tasks.<task>.artifacts.<name>``: which upstream artifact an input artifact is.
ARTIFACT_FROM = r"^tasks\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.artifacts\.([A-Za-z_][A-Za-z0-9_]*)$"


class InputArtifact(PlaitModel):
    """An upstream task's output artifact, as a file in this task's container."""

    name: Identifier
    """Name of the input artifact in this task."""
    from_: Annotated[str, StringConstraints(max_length=200, pattern=ARTIFACT_FROM)] = Field(
        alias="from"
    )
    """The artifact to read: tasks.<task>.artifacts.<name>, of a task this one depends on
    (directly or not)."""
    path: Annotated[str, StringConstraints(min_length=2, max_length=4096, pattern=r"^/.*[^/]$")]
    """Absolute path where the file appears (read-only) in the task's container."""

    @model_validator(mode="after")
    def _path(self) -> Self:
        problem = artifact_path_problem(self.path)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def source(self) -> tuple[str, str]:
        """(task, artifact name) of ``from``."""
        _, task, rest = self.from_.split(".", 2)
        return task, rest.removeprefix("artifacts.")


class ArtifactRepository(PlaitModel):
    """Where the tasks' artifacts are stored."""

    integration: DnsLabel
    """An Integration of type s3 in the workflow's namespace."""


class WorkflowReference(PlaitModel):
    """A WorkflowDefinition in the same namespace, optionally pinned to one version."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    """Name of the WorkflowDefinition."""
    version: Annotated[int, Field(ge=1)] | None = None
    """Version to run; the current one when unset."""


_ONE_KIND = cel_rule(
    "(has(self.taskRef) ? 1 : 0) + (has(self.template) ? 1 : 0)"
    " + (has(self.waitForEvent) ? 1 : 0) + (has(self.workflowRef) ? 1 : 0)"
    " + (has(self.http) ? 1 : 0) == 1",
    "exactly one of taskRef, template, waitForEvent, workflowRef or http must be set",
)
#: Most levels of sub-workflows: a run, its children, theirs, and so on.
MAX_WORKFLOW_DEPTH = 5


class Task(PlaitModel):
    """One node of the DAG: what runs (taskRef, template, waitForEvent, workflowRef or
    http) and when."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_ONE_KIND]})

    name: DnsLabel
    """Unique name of the task within the workflow; read in CEL as tasks.<name> (or
    tasks['<name>'] when it contains a dash)."""
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """What the task does."""
    dependencies: Annotated[
        list[DnsLabel],
        Field(max_length=MAX_TASKS, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=list)
    """Names of the tasks that must finish before this one starts."""
    when: CelExpression | None = None
    """CEL over params and upstream tasks; the task is skipped when it is false."""
    depends: CelExpression | None = None
    """CEL over params and the tasks in dependencies (their phase and outputs), evaluated
    once they have all finished, whatever their outcome: the task runs when it is true
    (e.g. tasks.build.phase == 'Failed'), and is skipped when it is false. Unset: the task
    runs only when each dependency succeeded or was skipped by its when."""
    task_ref: LocalObjectReference | None = None
    """Run the TaskDefinition of this name."""
    template: ContainerTemplate | None = None
    """Run this container."""
    wait_for_event: WaitForEvent | None = None
    """Wait for an event instead of running a container."""
    workflow_ref: WorkflowReference | None = None
    """Run another WorkflowDefinition of the namespace as a child WorkflowInstance (a
    sub-workflow), its inputs as the child's arguments; its outputs become this task's."""
    http: HttpTask | None = None
    """Make one HTTP request with an Integration's base URL and credentials, from the
    operator (no Pod); see docs/integrations.md."""
    for_each: ForEach | None = None
    """Run the task once per item of a list (a fan-out); see forEach."""
    cache: TaskCache | None = None
    """Reuse the outputs of an earlier successful attempt with the same key instead of
    running a Job (each item of a fan-out evaluates the key over its own inputs)."""
    synchronization: Synchronization | None = None
    """A lock each attempt holds while it runs (its Job starts once it has it)."""
    inputs: ExpressionMap = Field(default_factory=dict)
    """Input name -> CEL over params and upstream tasks' outputs (e.g. tasks.fetch.outputs.url)."""
    retries: RetryPolicy | None = None
    """Retry policy; the TaskDefinition's, or none, when unset."""
    timeout_seconds: Annotated[int, Field(ge=1, le=604800)] | None = None
    """Deadline of one attempt, in seconds (the Job's activeDeadlineSeconds)."""
    input_artifacts: (
        Annotated[
            list[InputArtifact],
            Field(
                max_length=16,
                json_schema_extra={
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
            ),
        ]
        | None
    ) = None
    """Upstream tasks' output artifacts, downloaded before the container starts and
    mounted read-only at their paths."""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        chosen = [self.task_ref, self.template, self.wait_for_event, self.workflow_ref, self.http]
        if sum(x is not None for x in chosen) != 1:
            raise ValueError(str(_ONE_KIND["message"]))
        return self


class WorkflowDefinitionSpec(PlaitModel):
    """A workflow: typed parameters, a DAG of tasks, declared outputs and an exit task."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.onExit) || !has(self.onExit.dependencies)"
                    " || size(self.onExit.dependencies) == 0",
                    "onExit runs after every task; it cannot have dependencies",
                    ".onExit.dependencies",
                ),
                cel_rule(
                    "!has(self.onExit) || !self.tasks.exists(t, t.name == self.onExit.name)",
                    "onExit.name must differ from every task's name",
                    ".onExit.name",
                ),
            ]
        }
    )

    description: Annotated[str, StringConstraints(max_length=4096)] | None = None
    """What the workflow does."""
    parameters: Parameters = Field(default_factory=list)
    """Parameters the workflow is started with; read in CEL as params.<name>."""
    tasks: Annotated[
        list[Task],
        Field(
            min_length=1,
            max_length=MAX_TASKS,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ]
    """The tasks; dependencies between them must form a DAG."""
    outputs: ExpressionMap = Field(default_factory=dict)
    """Output name -> CEL over params and tasks, evaluated when the workflow succeeds."""
    on_exit: Task | None = None
    """Task run once after the workflow finishes, whatever its outcome; it reads
    workflow.phase and every task's outputs."""
    timeout_seconds: Annotated[int, Field(ge=1, le=31536000)] | None = None
    """Deadline of the whole run, in seconds; unfinished tasks are cancelled after it."""
    parallelism: Annotated[int, Field(ge=1, le=10000)] | None = None
    """Most tasks running at once; unlimited when unset."""
    synchronization: Synchronization | None = None
    """A lock the whole run holds: its first task starts once it has it, and it is let go
    when the run ends (succeeded, failed, cancelled or deleted)."""
    security_context: SecurityContext | None = None
    """Default securityContext of every task's Pod: a field a task's template leaves unset
    is taken from here, and one unset here keeps Plait's restricted-compliant default."""
    automount_service_account_token: bool | None = None
    """Default of the tasks' automountServiceAccountToken (a task's own value wins); false
    when unset."""
    node_selector: NodeSelector | None = None
    """Default nodeSelector of every task's Pod (a task's own nodeSelector replaces it
    whole)."""
    tolerations: Tolerations | None = None
    """Default tolerations of every task's Pod (a task's own tolerations replace them
    whole)."""
    artifact_repository: ArtifactRepository | None = None
    """Where the tasks' outputArtifacts are stored (an s3 Integration); needed by a
    workflow whose tasks have outputArtifacts or inputArtifacts."""
    test_gate: bool | None = None
    """When true, a new version of this spec is a candidate: the operator runs the
    WorkflowTests whose workflowRef names this workflow (and no version) on it, and runs
    that name no version keep getting the previous current version until every test
    passed (a version no WorkflowTest names becomes current untested, 10 seconds after it
    was stored). A version whose tests fail is never used by them; status.currentVersion
    and the TestsPassed condition say which version runs and why. A run pinned to a
    version runs it regardless."""

    @model_validator(mode="after")
    def _artifacts(self) -> Self:
        problems = artifact_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _exit_task(self) -> Self:
        if self.on_exit is not None:
            if self.on_exit.dependencies:
                raise ValueError("onExit runs after every task; it cannot have dependencies")
            if any(t.name == self.on_exit.name for t in self.tasks):
                raise ValueError("onExit.name must differ from every task's name")
        return self

    def all_tasks(self) -> list[Task]:
        """The tasks, the exit task last: every task a run of this workflow can have."""
        return [*self.tasks, *([self.on_exit] if self.on_exit is not None else [])]


def artifact_problems(spec: WorkflowDefinitionSpec) -> list[str]:
    """What is wrong with the artifacts of a workflow: an input artifact must come from a
    task this one depends on (directly or not) that declares it (when its template is
    inline), paths must differ, and artifacts need an artifactRepository."""
    tasks = {t.name: t for t in spec.tasks}
    if spec.on_exit is not None:
        tasks[spec.on_exit.name] = spec.on_exit
    problems: list[str] = []
    uses = False
    for task in tasks.values():
        produces = bool(task.template and task.template.output_artifacts)
        uses = uses or produces
        if produces and task.cache is not None:
            problems.append(
                f"task {task.name!r}: a task with outputArtifacts cannot have cache yet "
                "(a cached result would have no artifacts to hand down)"
            )
        if not task.input_artifacts:
            continue
        uses = True
        upstream = _upstream(spec, task)
        paths: set[str] = set()
        for artifact in task.input_artifacts:
            where = f"task {task.name!r} inputArtifacts {artifact.name!r}"
            source, name = artifact.source
            if source not in upstream:
                problems.append(
                    f"{where}: task {source!r} is not one this task depends on"
                    " (directly or through others)"
                )
            elif tasks[source].for_each is not None:
                problems.append(
                    f"{where}: task {source!r} fans out (forEach); reading its items' "
                    "artifacts is not supported yet"
                )
            else:
                template = tasks[source].template
                if template is not None and name not in {
                    a.name for a in template.output_artifacts or ()
                }:
                    problems.append(
                        f"{where}: task {source!r} declares no outputArtifacts {name!r}"
                    )
            if artifact.path in paths:
                problems.append(f"{where}: path {artifact.path} is used twice")
            paths.add(artifact.path)
    if uses and spec.artifact_repository is None:
        problems.append(
            "tasks have outputArtifacts or inputArtifacts: set artifactRepository.integration"
            " (an Integration of type s3)"
        )
    return problems


def _upstream(spec: WorkflowDefinitionSpec, task: Task) -> set[str]:
    """Every task ``task`` waits for: its dependencies and theirs (all tasks for onExit)."""
    if spec.on_exit is not None and task.name == spec.on_exit.name:
        return {t.name for t in spec.tasks}
    deps = {t.name: t.dependencies for t in spec.tasks}
    seen: set[str] = set()
    todo = list(task.dependencies)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(deps.get(name, ()))
    return seen


class WorkflowDefinitionStatus(Status):
    """Observed state of a WorkflowDefinition."""

    version: Annotated[int, Field(ge=1)] | None = None
    """Version number of the current spec in Plait's history; grows with each change."""
    current_version: Annotated[int, Field(ge=1)] | None = None
    """The version runs that name no version get: the newest one, except with testGate,
    where it is the newest version whose tests passed (or that has none, or was stored
    without the gate). Unset while no version may be used."""


class WorkflowInstanceSpec(PlaitModel):
    """A run of a workflow: which definition, with which arguments, and its controls."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "self.workflowRef == oldSelf.workflowRef",
                    "workflowRef is immutable",
                    ".workflowRef",
                ),
                cel_rule(
                    "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
                    "a cancelled run cannot be resumed",
                    ".cancel",
                ),
            ]
        }
    )

    workflow_ref: WorkflowReference
    """The WorkflowDefinition to run."""
    arguments: Annotated[
        dict[Identifier, Any],
        Field(
            max_length=MAX_MAP_ENTRIES,
            json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        ),
    ] = Field(default_factory=dict)
    """Parameter name -> value (any JSON value of the parameter's type)."""
    cancel: bool = False
    """Set to true to cancel the run: running tasks are Cancelled, the rest Skipped. Final."""
    suspend: bool = False
    """Set to true to hold new tasks back; running ones finish. Set back to resume."""
    retry: Annotated[int, Field(ge=0, le=1000)] = 0
    """Raise by one to retry a Failed run from its unsuccessful tasks on (successful tasks
    keep their results); `plait instances retry` does it."""
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    """Among runs waiting for the same lock, higher priorities are granted it first."""
    bypass_cache: bool = False
    """Run every task, reusing no cached result; what the run's tasks produce is still
    stored for later runs."""
    mocks: Annotated[
        dict[
            str,
            Annotated[
                dict[str, Any],
                Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
            ],
        ],
        Field(max_length=2000),
    ] = Field(default_factory=dict)
    """Task name -> mock (a WorkflowTest case's mock: outputs, outputExpressions, exitCode,
    message, failAttempts, timedOut, durationSeconds): a mocked task starts no Job, each
    of its attempts ends as the mock says. Set by in-cluster runs of WorkflowTests;
    read when the run is created. A run that names no version is refused when a mock
    names a task its WorkflowDefinition does not have."""

    @model_validator(mode="after")
    def _mocks_are_mocks(self) -> Self:
        from plait.resources.test import Mock  # resources.test builds on this module

        for name, mock in self.mocks.items():
            try:
                Mock.model_validate(mock)
            except ValueError as exc:
                raise ValueError(f"mocks.{name}: {exc}") from None
        return self


Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled", "Error"]


class TaskCounts(PlaitModel):
    """How many tasks are in each state."""

    total: Annotated[int, Field(ge=0)] = 0
    """Tasks in the workflow, the exit task included."""
    pending: Annotated[int, Field(ge=0)] = 0
    """Tasks waiting for their dependencies or a free slot."""
    running: Annotated[int, Field(ge=0)] = 0
    """Tasks with an attempt in progress or waiting for an event."""
    succeeded: Annotated[int, Field(ge=0)] = 0
    """Tasks that finished successfully."""
    failed: Annotated[int, Field(ge=0)] = 0
    """Tasks that failed after their last attempt."""
    skipped: Annotated[int, Field(ge=0)] = 0
    """Tasks whose when was false or whose upstream failed, or not started as the run ended."""
    cancelled: Annotated[int, Field(ge=0)] = 0
    """Tasks stopped by cancellation or the workflow timeout."""


class Failure(PlaitModel):
    """Why the run did not succeed: the first task failure that decided it, or the reason
    when no task is to blame (a cancellation, the workflow's timeout)."""

    task: Annotated[str, StringConstraints(max_length=63)] | None = None
    """Name of the failed task."""
    attempt: Annotated[int, Field(ge=1)] | None = None
    """Number of the failed attempt, from 1."""
    exit_code: int | None = None
    """Exit code of the container, when it ran."""
    message: Annotated[str, StringConstraints(max_length=1024)] = ""
    """What went wrong, truncated."""


class WorkflowInstanceStatus(Status):
    """A bounded summary of the run; the details live in PostgreSQL."""

    phase: Phase | None = None
    """Pending, Running, Suspended, Succeeded, Failed, Cancelled or Error (Plait failed)."""
    progress: Annotated[str, StringConstraints(max_length=32)] | None = None
    """Finished tasks over all tasks, e.g. 3/5."""
    counts: TaskCounts | None = None
    """Tasks per state."""
    definition_version: Annotated[int, Field(ge=1)] | None = None
    """Version of the WorkflowDefinition this run executes."""
    start_time: dt.datetime | None = None
    """When the first task was started."""
    completion_time: dt.datetime | None = None
    """When the run reached a final phase."""
    duration: Annotated[str, StringConstraints(max_length=32)] | None = None
    """Time from start to completion (or to the last status update while running), e.g. 1m23s."""
    failure: Failure | None = None
    """The failure that decided the outcome, when the run failed."""
    waiting_for: Annotated[str, StringConstraints(max_length=512)] | None = None
    """What the run waits for before it can go on, e.g. lock deploy-prod (2 ahead)."""


WORKFLOW_DEFINITION = KindInfo(
    kind="WorkflowDefinition",
    plural="workflowdefinitions",
    short_names=("wfd", "wfdef"),
    spec=WorkflowDefinitionSpec,
    status=WorkflowDefinitionStatus,
    description="A workflow: typed parameters and a DAG of tasks, with outputs and an exit task.",
    printer_columns=(
        PrinterColumn("Version", ".status.version", "integer", "Newest stored version"),
        PrinterColumn(
            "Current", ".status.currentVersion", "integer", "Version runs naming none get"
        ),
        READY_COLUMN,
        AGE_COLUMN,
    ),
)

WORKFLOW_INSTANCE = KindInfo(
    kind="WorkflowInstance",
    plural="workflowinstances",
    short_names=("wfi", "wfrun"),
    spec=WorkflowInstanceSpec,
    status=WorkflowInstanceStatus,
    description="One run of a WorkflowDefinition with argument values.",
    printer_columns=(
        PrinterColumn("Definition", ".spec.workflowRef.name", description="WorkflowDefinition"),
        PrinterColumn("Phase", ".status.phase", description="Phase of the run"),
        PrinterColumn("Progress", ".status.progress", description="Finished/total tasks"),
        AGE_COLUMN,
        PrinterColumn("Duration", ".status.duration", description="Run time"),
    ),
    root_validations=(
        cel_rule(
            "self.metadata.name.size() <= 63",
            "a WorkflowInstance name is used as a label value: at most 63 characters",
        ),
    ),
)
