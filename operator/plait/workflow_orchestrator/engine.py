"""The DAG engine's decisions, as a pure function of what is recorded.

:func:`plan` looks at a definition, the run's arguments and every task attempt recorded so
far, and says what must happen next: which attempts to start (with their evaluated
inputs), which tasks to skip and why, when a retry falls due, and whether the run is over
(its phase, outputs and failure reason). It does no I/O, so the same records always give
the same plan: any number of operator processes, before or after a crash, agree on it, and
the idempotent writes that carry it out (attempt rows keyed by task and attempt number,
Jobs named after them) make repeating a plan harmless.

CEL sees ``params`` (arguments over parameter defaults), ``tasks.<name>.outputs`` and
``tasks.<name>.phase`` of finished upstream tasks, and, in the exit task,
``workflow.phase``.

A task that names a TaskDefinition takes from it, through :class:`TaskDefaults`, the retry
policy and input defaults it does not set itself. A failed attempt is retried when its
policy's ``retryOn`` covers the attempt's :class:`FailureCause` (OnFailure: the task's own
failure, OnError: an error around it, Always: both); an attempt that could not start
because an expression could not be evaluated is never retried.

A "wait for event" task is planned like any other: its attempt is launched (the runtime
subscribes instead of creating a Job), stays unfinished while it waits, and ends Succeeded
(the event's data as outputs) or TimedOut, which its retry policy treats as a failure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plait.errors import ValidationError
from plait.kernel import expressions
from plait.resources.common import Backoff, RetryPolicy
from plait.resources.foreach import MAX_ITEMS, item_names, split_item_name
from plait.resources.task import TaskDefinitionSpec
from plait.resources.workflow import Task, WorkflowDefinitionSpec
from plait.task_execution.states import FINAL_STATES, FailureCause, TaskState
from plait.workflow_orchestrator.states import WorkflowPhase

__all__ = [
    "Attempt",
    "Failure",
    "Launch",
    "Plan",
    "Skip",
    "TaskDefaults",
    "attempt_names",
    "backoff_seconds",
    "fan_out_items",
    "parameters_with_defaults",
    "plan",
]

#: Attempt states after which a retry may follow (when the policy allows it).
RETRYABLE = frozenset({TaskState.FAILED, TaskState.TIMED_OUT})
#: Upstream states that let a dependent task run.
SATISFIED = frozenset({TaskState.SUCCEEDED, TaskState.SKIPPED})
#: The largest activation (as JSON characters) whose fan-out list is kept between plans.
MAX_KEPT_ACTIVATION = 256 * 1024
#: The launch budget of a workflow without ``parallelism``: more than any run can use.
UNBOUNDED = 1 << 40
#: The failure causes each ``retryOn`` retries (an Invalid attempt never is).
RETRIED_CAUSES: Mapping[str, frozenset[FailureCause]] = {
    "OnFailure": frozenset({FailureCause.FAILURE}),
    "OnError": frozenset({FailureCause.ERROR}),
    "Always": frozenset({FailureCause.FAILURE, FailureCause.ERROR}),
}


@dataclass(frozen=True)
class Attempt:
    """What the engine needs to know of one recorded task attempt."""

    task: str
    attempt: int
    state: TaskState
    outputs: Mapping[str, Any] | None = None
    exit_code: int | None = None
    message: str | None = None
    finished_at: dt.datetime | None = None
    cause: FailureCause | None = None
    """Why a Failed or TimedOut attempt did not succeed, as recorded."""

    @property
    def failure_cause(self) -> FailureCause:
        """The recorded cause; for a row recorded without one, what its state and exit
        code say (a timeout or a non-zero exit is the task's own failure)."""
        if self.cause is not None:
            return self.cause
        if self.state is TaskState.TIMED_OUT or self.exit_code not in (None, 0):
            return FailureCause.FAILURE
        return FailureCause.ERROR


@dataclass(frozen=True)
class TaskDefaults:
    """What the engine takes from a TaskDefinition for the workflow tasks that name it,
    unless they set it themselves: a retry policy and input values. (Its attempt timeout
    goes to the Job, which the runtime builds.)"""

    definition: str
    retries: RetryPolicy | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """Declared inputs with a default, and those defaults."""
    required: frozenset[str] = frozenset()
    """Declared inputs without a default: a task must give them."""

    @classmethod
    def of(cls, name: str, spec: TaskDefinitionSpec) -> TaskDefaults:
        return cls(
            definition=name,
            retries=spec.retries,
            inputs={p.name: p.default for p in spec.inputs if p.default is not None},
            required=frozenset(p.name for p in spec.inputs if p.default is None),
        )


@dataclass(frozen=True)
class Launch:
    """Start attempt ``attempt`` of ``task`` with these evaluated inputs.

    For a "wait for event" task, ``wait_bindings`` holds what its correlation may read
    besides the event (``params`` and the finished upstream ``tasks``), to be frozen into
    its subscription; None for a container task.
    """

    task: str
    attempt: int
    inputs: Mapping[str, Any]
    wait_bindings: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Skip:
    """Record attempt ``attempt`` of ``task`` as skipped (or, with ``failed``, as failed
    before it could start)."""

    task: str
    reason: str
    failed: bool = False
    attempt: int = 1


@dataclass(frozen=True)
class Failure:
    """Why a run failed: which task and attempt, with the exit code and message."""

    task: str | None
    attempt: int | None
    exit_code: int | None
    message: str

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"message": self.message[:1024]}
        if self.task is not None:
            status["task"] = self.task
        if self.attempt is not None:
            status["attempt"] = self.attempt
        if self.exit_code is not None:
            status["exitCode"] = self.exit_code
        return status


@dataclass(frozen=True)
class Plan:
    """Everything that should happen now; empty lists mean "nothing to do yet"."""

    launches: list[Launch] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    retry_at: dt.datetime | None = None
    phase: WorkflowPhase | None = None
    """The final phase when the run is over, else None."""
    outputs: Mapping[str, Any] | None = None
    failure: Failure | None = None
    fan_outs: Mapping[str, int] = field(default_factory=dict)
    """The fan-outs whose list is known, with their number of items."""


def parameters_with_defaults(
    spec: WorkflowDefinitionSpec, arguments: Mapping[str, Any]
) -> dict[str, Any]:
    """The values CEL sees as ``params``: defaults, overridden by the run's arguments."""
    values = {p.name: p.default for p in spec.parameters if p.default is not None}
    values.update(arguments)
    return values


def backoff_seconds(backoff: Backoff | None, failed_attempt: int) -> float:
    """Delay before the attempt that follows ``failed_attempt`` (1-based)."""
    policy = backoff or Backoff()
    delay = policy.initial_seconds * policy.factor ** (failed_attempt - 1)
    return float(min(delay, policy.max_seconds))


def retry_policy(task: Task, defaults: TaskDefaults | None) -> RetryPolicy | None:
    """The task's own retry policy, else its TaskDefinition's."""
    return task.retries or (defaults.retries if defaults is not None else None)


def retry_due(
    policy: RetryPolicy | None, failed: Attempt, earlier: int, now: dt.datetime
) -> dt.datetime | None:
    """When the retry of a failed attempt falls due; None when its policy does not retry
    its cause, or its retries are used up. ``earlier`` attempts (set aside by a retry of
    the run) do not count against the limit."""
    if policy is None or failed.failure_cause not in RETRIED_CAUSES[policy.retry_on]:
        return None
    number = failed.attempt - earlier
    if number > policy.limit:
        return None
    delay = backoff_seconds(policy.backoff, number)
    return (failed.finished_at or now) + dt.timedelta(seconds=delay)


def _latest(attempts: Iterable[Attempt]) -> dict[str, Attempt]:
    latest: dict[str, Attempt] = {}
    for a in attempts:
        if a.task not in latest or a.attempt > latest[a.task].attempt:
            latest[a.task] = a
    return latest


def _topological(tasks: Sequence[Task]) -> list[Task]:
    """Dependencies first (the definition was validated acyclic); stable by position."""
    by_name = {t.name: t for t in tasks}
    ordered: list[Task] = []
    seen: set[str] = set()

    def visit(task: Task) -> None:
        stack = [(task, iter(task.dependencies))]
        while stack:
            current, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                stack.pop()
                if current.name not in seen:
                    seen.add(current.name)
                    ordered.append(current)
            elif dep not in seen and dep in by_name:
                stack.append((by_name[dep], iter(by_name[dep].dependencies)))

    for task in tasks:
        if task.name not in seen:
            visit(task)
    return ordered


def _evaluate(expression: str, activation: Mapping[str, Any]) -> Any:
    return expressions.evaluate(expressions.compile(expression), activation)


def _task_view(attempt: Attempt) -> dict[str, Any]:
    return {"phase": attempt.state.value, "outputs": dict(attempt.outputs or {})}


def plan(
    spec: WorkflowDefinitionSpec,
    arguments: Mapping[str, Any],
    attempts: Iterable[Attempt],
    *,
    now: dt.datetime,
    suspended: bool = False,
    deadline: dt.datetime | None = None,
    attempt_base: Mapping[str, int] | None = None,
    task_defaults: Mapping[str, TaskDefaults] | None = None,
) -> Plan:
    """What to do next for one run; see the module docstring. Past ``deadline`` (the
    workflow's timeout) the run fails, and its running attempts are to be cancelled.
    ``task_defaults`` holds, by task name, what the TaskDefinitions named by ``taskRef``
    give their tasks.

    After a retry of the run, ``attempts`` holds only the attempts since, and
    ``attempt_base`` the number of earlier ones per task: numbering goes on from there
    (so Job names never repeat) while the retry limit counts afresh.
    """
    if deadline is not None and now >= deadline:
        return Plan(
            phase=WorkflowPhase.FAILED,
            failure=Failure(
                None, None, None, f"the workflow timed out after {spec.timeout_seconds}s"
            ),
        )
    planning = _Planning.of(
        spec,
        parameters_with_defaults(spec, arguments),
        _latest(attempts),
        now=now,
        suspended=suspended,
        base=attempt_base or {},
        defaults=task_defaults or {},
    )
    for task in _topological(spec.tasks):
        planning.visit(task)
    return planning.result()


@dataclass
class _Planning:
    """One pass of :func:`plan` over the tasks, dependencies first: what it has decided so
    far, and the named steps that decide for one task."""

    spec: WorkflowDefinitionSpec
    params: Mapping[str, Any]
    latest: Mapping[str, Attempt]
    now: dt.datetime
    suspended: bool
    base: Mapping[str, int]
    defaults: Mapping[str, TaskDefaults]
    finished: dict[str, dict[str, Any]]
    """What CEL sees as ``tasks``: finished whole tasks (and fan-outs, as a whole)."""
    states: dict[str, Attempt]
    """Where each task stands for its dependents: its latest attempt, or for a fan-out
    the state of the whole (unfinished while any item is)."""
    budget: int
    """Launches the workflow's ``parallelism`` still allows."""
    pending_work: bool
    """Something is running, due to run or waiting for an upstream task."""
    launches: list[Launch] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    retry_at: dt.datetime | None = None
    failed: list[Attempt] = field(default_factory=list)
    """Tasks that failed for good, in order of finishing."""
    blocked: set[str] = field(default_factory=set)
    """Failed for good, or skipped because something upstream was."""
    fan_outs: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        spec: WorkflowDefinitionSpec,
        params: Mapping[str, Any],
        latest: dict[str, Attempt],
        **context: Any,
    ) -> _Planning:
        # A fan-out's items are not tasks of the definition (expressions cannot name them)
        # and would make every evaluation convert them all: CEL sees whole tasks only, and
        # a fan-out's own view, its items' outputs as a list, is added when it finishes.
        finished = {
            name: _task_view(a)
            for name in (t.name for t in spec.all_tasks())  # the only names CEL can see
            if (a := latest.get(name)) is not None and a.state in FINAL_STATES
        }
        active = sum(1 for a in latest.values() if a.state not in FINAL_STATES)
        return cls(
            spec,
            params,
            latest,
            finished=finished,
            states=dict(latest),
            budget=(spec.parallelism or UNBOUNDED) - active,
            pending_work=active > 0,
            **context,
        )

    def visit(self, task: Task) -> None:
        """Decide for one task, its dependencies having been visited."""
        mine = self.latest.get(task.name)
        if mine is None:
            self._first_attempt(task)
        elif mine.state not in FINAL_STATES:
            return  # running (or about to): wait for it
        elif mine.state in RETRYABLE and task.for_each is None:
            self._retry(task, mine)
        else:
            self._settled(task, mine)

    def _retry(self, task: Task, failed: Attempt) -> None:
        """A failed attempt: retried when its policy allows (now, or once due), else the
        task has failed for good."""
        defaults = self.defaults.get(task.name)
        due = retry_due(retry_policy(task, defaults), failed, self.base.get(task.name, 0), self.now)
        if due is None:
            self._fail(task, failed)
            return
        self.pending_work = True
        if due > self.now:
            self._retry_later(due)
        elif not self.suspended and self.budget > 0:
            decision = _launch(task, failed.attempt + 1, self.params, self.finished, defaults)
            self._decide(decision, blocks=False)

    def _settled(self, task: Task, mine: Attempt) -> None:
        """A task that ended and will not be attempted again."""
        if mine.state in (TaskState.CANCELLED, *RETRYABLE):
            self._fail(task, mine)  # a fan-out that could not start fails as a whole
        elif mine.state is TaskState.SKIPPED and any(d in self.blocked for d in task.dependencies):
            self.blocked.add(task.name)

    def _first_attempt(self, task: Task) -> None:
        """A task never attempted: does it run, wait, or get skipped?"""
        attempt = self.base.get(task.name, 0) + 1
        if task.depends is not None:
            gate = _depends(task, self.states, self.blocked, self.params, self.finished, attempt)
            if gate is None:
                self.pending_work = True  # a dependency is unfinished, or waits for its retry
                return
            if isinstance(gate, Skip):
                self._decide(gate, blocks=True)
                return
        else:
            # A dependency that failed for good means this task can never run: skip it now.
            upstream_failed = [d for d in task.dependencies if d in self.blocked]
            if upstream_failed:
                reason = f"upstream task {upstream_failed[0]} did not succeed"
                self.skips.append(Skip(task.name, reason, attempt=attempt))
                self.blocked.add(task.name)
                return
        deps = [self.states.get(d) for d in task.dependencies]
        if any(d is None or d.state not in FINAL_STATES for d in deps):
            self.pending_work = True
            return
        if task.depends is None and any(d is not None and d.state not in SATISFIED for d in deps):
            return  # an upstream task failed and waits for its retry
        if task.for_each is not None:
            self._fan_out(task)
            return
        self.pending_work = True
        if self.suspended or self.budget <= 0:
            return
        defaults = self.defaults.get(task.name)
        self._decide(_launch(task, attempt, self.params, self.finished, defaults), blocks=True)

    def _fan_out(self, task: Task) -> None:
        """A fan-out whose upstream tasks are done: its items' launches and skips, and the
        state of the whole once every item has ended."""
        fan = _plan_fan_out(
            task,
            self.params,
            self.latest,
            self.finished,
            self.base,
            now=self.now,
            suspended=self.suspended,
            budget=self.budget,
            defaults=self.defaults.get(task.name),
        )
        self.launches += fan.launches
        self.skips += fan.skips
        self.budget -= len(fan.launches)
        if fan.retry_at is not None:
            self._retry_later(fan.retry_at)
        if fan.size is not None:
            self.fan_outs[task.name] = fan.size
        if fan.outcome is None:
            self.pending_work = True
            self.states[task.name] = Attempt(task.name, 0, TaskState.RUNNING)
            return
        self.states[task.name] = fan.outcome
        self.finished[task.name] = {"phase": fan.outcome.state.value, "outputs": fan.outputs}
        if fan.failed is not None:
            self._fail(task, fan.failed)

    def _decide(self, decision: Launch | Skip, *, blocks: bool) -> None:
        """Take a launch (it spends the budget) or a skip; with ``blocks``, a skip that
        fails the task blocks its dependents at once."""
        if isinstance(decision, Skip):
            self.skips.append(decision)
            if blocks and decision.failed:
                self.blocked.add(decision.task)
        else:
            self.launches.append(decision)
            self.budget -= 1

    def _fail(self, task: Task, attempt: Attempt) -> None:
        """``task`` failed for good (``attempt`` says how: its own, or a fan-out item's)."""
        self.failed.append(attempt)
        self.blocked.add(task.name)

    def _retry_later(self, due: dt.datetime) -> None:
        self.retry_at = due if self.retry_at is None else min(self.retry_at, due)

    def result(self) -> Plan:
        """The plan: what to do now, or, when nothing is left to do, how the run ends (its
        exit task first, when it has one)."""
        if self.pending_work or self.launches or self.skips:
            return Plan(
                launches=self.launches,
                skips=self.skips,
                retry_at=self.retry_at,
                fan_outs=self.fan_outs,
            )
        spec = self.spec
        handled = _handled_failures(spec, self.states)
        failed = [a for a in self.failed if split_item_name(a.task)[0] not in handled]
        outcome = _finish(spec, self.params, self.finished, failed)
        if spec.on_exit is not None:
            outcome = _exit_task(
                spec.on_exit,
                outcome,
                self.params,
                self.latest,
                self.finished,
                suspended=self.suspended,
                now=self.now,
                base=self.base.get(spec.on_exit.name, 0),
                defaults=self.defaults.get(spec.on_exit.name),
            )
        return dataclasses.replace(outcome, fan_outs=self.fan_outs)


def attempt_names(spec: WorkflowDefinitionSpec, fan_outs: Mapping[str, int]) -> list[str]:
    """Every task of a run by the name its attempts have: each item of a fan-out whose
    list is known (``fan_outs``, from a plan), else the task's own name."""
    names: list[str] = []
    for task in spec.all_tasks():
        size = fan_outs.get(task.name) if task.for_each is not None else None
        if size is None:
            names.append(task.name)
        else:
            names += item_names(task.name, size)
    return names


def _exit_task(
    task: Task,
    outcome: Plan,
    params: Mapping[str, Any],
    latest: Mapping[str, Attempt],
    finished: Mapping[str, Any],
    *,
    suspended: bool,
    now: dt.datetime,
    base: int = 0,
    defaults: TaskDefaults | None = None,
) -> Plan:
    """Run the exit task once the DAG is over; the run ends when the exit task does.

    It sees ``workflow.phase`` (the DAG's outcome) and is retried by its own policy like
    any task. Its failure for good fails a run that had succeeded, and never hides the
    failure of one that had not.
    """
    assert outcome.phase is not None
    activation_extra = {"workflow": {"phase": outcome.phase.value}}
    mine = latest.get(task.name)
    if mine is None or mine.state in RETRYABLE:
        if mine is None:
            due: dt.datetime | None = now
            number = base + 1
        else:
            due = retry_due(retry_policy(task, defaults), mine, base, now)
            number = mine.attempt + 1
        if due is not None:
            if due > now:
                return Plan(retry_at=due)
            if suspended:
                return Plan()
            decision = _launch(task, number, params, finished, defaults, activation_extra)
            if isinstance(decision, Skip):
                return Plan(skips=[decision])
            return Plan(launches=[decision])
    if mine is None or mine.state not in FINAL_STATES:
        return Plan()
    if mine.state in (TaskState.SUCCEEDED, TaskState.SKIPPED) or outcome.failure is not None:
        return outcome
    return Plan(
        phase=WorkflowPhase.FAILED,
        failure=Failure(
            task.name,
            mine.attempt,
            mine.exit_code,
            f"exit task {task.name} attempt {mine.attempt} failed"
            + (f": {mine.message}" if mine.message else ""),
        ),
    )


@dataclass
class _FanOutStep:
    """What planning one fan-out decided: its launches and skips now, when a retry of an
    item falls due, its number of items (None: its list could not be had), and, once
    over, its outcome (``failed``: the attempt that fails the run, if it does) and the
    items' outputs in item order."""

    launches: list[Launch] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    retry_at: dt.datetime | None = None
    size: int | None = None
    outcome: Attempt | None = None
    failed: Attempt | None = None
    outputs: list[Any] = field(default_factory=list)


def fan_out_items(
    task: Task, params: Mapping[str, Any], finished: Mapping[str, Any]
) -> Sequence[Any] | str:
    """A fan-out's list, or why it cannot be had (as the task's failure message).

    Every plan of a run asks again while the fan-out's items run, with the same upstream
    outputs: the lists evaluated lately are kept by expression and activation (a
    10,000-item list takes milliseconds to evaluate and convert). An activation larger
    than MAX_KEPT_ACTIVATION as JSON is evaluated each time instead, so that what is kept
    stays small whatever the upstream outputs."""
    assert task.for_each is not None
    if task.for_each.items is not None:
        return tuple(task.for_each.items)
    assert task.for_each.expression is not None
    activation = {"params": dict(params), "tasks": dict(finished)}
    try:
        key = json.dumps(activation, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON: evaluated as it is, and not kept
        return _fan_out_list(task.for_each.expression, activation)
    if len(key) > MAX_KEPT_ACTIVATION:
        return _fan_out_list(task.for_each.expression, activation)
    return _kept_fan_out_list(task.for_each.expression, key)


@functools.lru_cache(maxsize=8)
def _kept_fan_out_list(expression: str, activation: str) -> tuple[Any, ...] | str:
    return _fan_out_list(expression, json.loads(activation))


def _fan_out_list(expression: str, activation: Mapping[str, Any]) -> tuple[Any, ...] | str:
    try:
        value = _evaluate(expression, activation)
    except ValidationError as exc:
        return f"cannot start: forEach: {exc}"
    if not isinstance(value, list):
        kind = type(value).__name__
        return f"cannot start: forEach: {expression!r} gave a {kind}, not a list"
    if len(value) > MAX_ITEMS:
        return f"cannot start: forEach gave {len(value)} items, more than the limit of {MAX_ITEMS}"
    return tuple(value)


def _plan_fan_out(
    task: Task,
    params: Mapping[str, Any],
    latest: Mapping[str, Attempt],
    finished: Mapping[str, Any],
    base: Mapping[str, int],
    *,
    now: dt.datetime,
    suspended: bool,
    budget: int,
    defaults: TaskDefaults | None,
) -> _FanOutStep:
    """One fan-out whose dependencies are satisfied: each item is planned like a task of
    its own (named ``task[i]``, with its own attempts, retries and ``when``), at most
    ``forEach.parallelism`` at a time, and the failure policy decides the whole."""
    assert task.for_each is not None
    fe = task.for_each
    step = _FanOutStep()
    items = fan_out_items(task, params, finished)
    if isinstance(items, str):
        step.skips.append(Skip(task.name, items, failed=True, attempt=base.get(task.name, 0) + 1))
        return step
    step.size = len(items)
    policy = retry_policy(task, defaults)
    running = waiting = 0
    failures: list[Attempt] = []
    due_now: list[tuple[int, Attempt]] = []
    fresh: list[int] = []
    names = item_names(task.name, len(items))
    for i, name in enumerate(names):
        mine = latest.get(name)
        if mine is None:
            fresh.append(i)
        elif mine.state not in FINAL_STATES:
            running += 1
        elif mine.state in RETRYABLE:
            due = retry_due(policy, mine, base.get(name, 0), now)
            if due is None:
                failures.append(mine)
            elif due > now:
                waiting += 1
                step.retry_at = due if step.retry_at is None else min(step.retry_at, due)
            else:
                due_now.append((i, mine))
        elif mine.state is TaskState.CANCELLED:
            failures.append(mine)
    stopping = fe.failure_policy == "Stop" and bool(failures)
    if stopping:
        first = _first(failures)
        for i in fresh:
            name = names[i]
            step.skips.append(
                Skip(name, f"not started: {first.task} failed", attempt=base.get(name, 0) + 1)
            )
        fresh = []
        failures += [a for _, a in due_now]  # their retries are not started either
        due_now = []
    elif not suspended:
        room = min(budget, (fe.parallelism or len(items)) - running)
        starts = [(i, a.attempt + 1) for i, a in due_now]
        starts += [(i, base.get(names[i], 0) + 1) for i in fresh]
        for i, attempt in starts[: max(room, 0)]:
            extra = {"item": items[i], "index": i}
            decision = _launch(task, attempt, params, finished, defaults, extra, name=names[i])
            if isinstance(decision, Skip):
                step.skips.append(decision)
            else:
                step.launches.append(decision)
    if running or waiting or due_now or fresh or step.launches or step.skips:
        return step  # not over yet
    step.outcome, step.failed = _fan_out_outcome(task, len(items), failures)
    step.outputs = [_item_outputs(latest.get(name)) for name in names]
    return step


def _item_outputs(item: Attempt | None) -> dict[str, Any] | None:
    """What a finished fan-out hands down for one item: its outputs if it succeeded."""
    if item is None or item.state is not TaskState.SUCCEEDED:
        return None
    return dict(item.outputs or {})


def _depends(
    task: Task,
    states: Mapping[str, Attempt],
    blocked: set[str],
    params: Mapping[str, Any],
    finished: Mapping[str, Any],
    attempt: int,
) -> bool | Skip | None:
    """A task with ``depends`` once its dependencies have all finished for good (None
    until then): True to go on, or a Skip when it is false (failed when it cannot be
    evaluated)."""
    assert task.depends is not None
    for dep in task.dependencies:
        state = states.get(dep)
        if state is None or state.state not in FINAL_STATES:
            return None
        if state.state not in SATISFIED and dep not in blocked:
            return None  # failed, and its retry is still to come
    activation = {"params": dict(params), "tasks": dict(finished)}
    try:
        verdict = _evaluate(task.depends, activation)
    except ValidationError as exc:
        return Skip(task.name, f"cannot start: depends: {exc}", failed=True, attempt=attempt)
    if verdict is not True:
        return Skip(task.name, f"depends: {task.depends!r} is {_show(verdict)}", attempt=attempt)
    return True


def _handled_failures(spec: WorkflowDefinitionSpec, states: Mapping[str, Attempt]) -> set[str]:
    """Tasks whose failure a dependent's ``depends`` accepted (it ran): they do not fail
    the run, as in Argo, where a failure handled by ``depends`` does not fail the DAG."""
    handled: set[str] = set()
    for task in spec.tasks:
        mine = states.get(task.name)
        if task.depends is not None and mine is not None and mine.state is not TaskState.SKIPPED:
            handled.update(task.dependencies)
    return handled


def _first(attempts: Sequence[Attempt]) -> Attempt:
    """The attempt that finished first (by name among equals): the one a failure names."""
    return min(
        attempts,
        key=lambda a: (a.finished_at or dt.datetime.max.replace(tzinfo=dt.UTC), a.task),
    )


def _fan_out_outcome(
    task: Task, size: int, failures: Sequence[Attempt]
) -> tuple[Attempt, Attempt | None]:
    """The state of a finished fan-out, and the attempt that fails the run if it failed:
    with Stop the first item that failed, with Continue the whole, below its ratio."""
    assert task.for_each is not None
    done = Attempt(task.name, 1, TaskState.SUCCEEDED)
    if not failures:
        return done, None
    first = _first(failures)
    if task.for_each.failure_policy == "Stop":
        return dataclasses.replace(first, task=task.name), first
    ratio = task.for_each.min_success_ratio if task.for_each.min_success_ratio is not None else 1.0
    if size - len(failures) >= ratio * size:
        return done, None
    shown = ", ".join(a.task for a in sorted(failures, key=lambda a: a.task)[:5])
    more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
    whole = Attempt(
        task.name,
        1,
        TaskState.FAILED,
        message=(
            f"{len(failures)} of {size} items failed ({shown}{more}); "
            f"minSuccessRatio is {ratio:g}; first: {first.task}"
            + (f": {first.message}" if first.message else "")
        ),
        finished_at=first.finished_at,
        cause=FailureCause.FAILURE,
    )
    return whole, whole


def _launch(
    task: Task,
    attempt: int,
    params: Mapping[str, Any],
    finished: Mapping[str, Any],
    defaults: TaskDefaults | None = None,
    extra: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
) -> Launch | Skip:
    """The launch of an attempt, or a skip when ``when`` is false, or a failure when an
    expression cannot be evaluated or a required input is missing (a data problem no
    retry can fix). Inputs the task leaves out take their TaskDefinition's defaults.
    ``name``: the attempt's task name when it is not the task's (an item of a fan-out)."""
    name = name or task.name
    activation = {"params": dict(params), "tasks": dict(finished), **(extra or {})}
    try:
        if task.when is not None:
            verdict = _evaluate(task.when, activation)
            if verdict is not True:
                return Skip(name, f"when: {task.when!r} is {_show(verdict)}", attempt=attempt)
        given = {key: _evaluate(expr, activation) for key, expr in task.inputs.items()}
    except ValidationError as exc:
        return Skip(name, f"cannot start: {exc}", failed=True, attempt=attempt)
    inputs = given
    if defaults is not None:
        missing = sorted(defaults.required - given.keys())
        if missing:
            return Skip(
                name,
                f"cannot start: TaskDefinition {defaults.definition!r} requires input "
                f"{missing[0]!r}, which the task does not give",
                failed=True,
                attempt=attempt,
            )
        inputs = {**defaults.inputs, **given}
    if task.wait_for_event is not None:
        bindings = {"params": dict(params), "tasks": dict(finished)}
        return Launch(name, attempt, inputs, wait_bindings=bindings)
    return Launch(name, attempt, inputs)


def _show(value: Any) -> str:
    return "false" if value is False else f"{value!r}, not true"


def _finish(
    spec: WorkflowDefinitionSpec,
    params: Mapping[str, Any],
    finished: Mapping[str, Any],
    failed: list[Attempt],
) -> Plan:
    """Every task is final: the run's phase, outputs or failure."""
    if failed:
        first = _first(failed)
        verb = {TaskState.TIMED_OUT: "timed out", TaskState.CANCELLED: "was cancelled"}.get(
            first.state, "failed"
        )
        detail = f": {first.message}" if first.message else ""
        code = f" with exit code {first.exit_code}" if first.exit_code not in (None, 0) else ""
        return Plan(
            phase=WorkflowPhase.FAILED,
            failure=Failure(
                first.task,
                first.attempt,
                first.exit_code,
                f"task {first.task} attempt {first.attempt} {verb}{code}{detail}",
            ),
        )
    activation = {"params": dict(params), "tasks": dict(finished)}
    try:
        outputs = {name: _evaluate(expr, activation) for name, expr in spec.outputs.items()}
    except ValidationError as exc:
        return Plan(
            phase=WorkflowPhase.FAILED,
            failure=Failure(None, None, None, f"workflow outputs: {exc}"),
        )
    return Plan(phase=WorkflowPhase.SUCCEEDED, outputs=outputs)
