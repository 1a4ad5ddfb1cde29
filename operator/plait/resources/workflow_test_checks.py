"""Semantic validation of a WorkflowTest, for the admission webhook and ``plait test run``.

Beyond the schema: case names are unique, every CEL assertion compiles and reads only
``workflow``, ``tasks`` and ``params``, and, when the workflow under test is known, every
mock, expectation, order entry and assertion names one of its tasks, the arguments fit its
parameters and each event's type is one a wait-for-event task waits for. A workflow pinned
to a version is known only at run time (its old versions live in PostgreSQL), so those
checks wait for the run.
"""

from __future__ import annotations

from plait.resources.test import ASSERTION_VARIABLES, MOCK_VARIABLES, WorkflowTestSpec
from plait.resources.trigger import EventTriggerSpec
from plait.resources.validation import (
    Lookup,
    Problem,
    _check_expression,
    _lookup_spec,
    check_arguments,
)
from plait.resources.workflow import WorkflowDefinitionSpec

__all__ = ["check_workflow_test", "problems_against"]


def check_workflow_test(spec: WorkflowTestSpec, lookup: Lookup | None = None) -> list[Problem]:
    """Every problem of a WorkflowTest's spec, its workflow found through ``lookup``."""
    problems: list[Problem] = []
    workflow: WorkflowDefinitionSpec | None = None
    if spec.workflow_ref.version is None:
        found = _lookup_spec(
            lookup,
            "WorkflowDefinition",
            spec.workflow_ref.name,
            "spec.workflowRef.name",
            problems,
        )
        workflow = found if isinstance(found, WorkflowDefinitionSpec) else None
    return problems + problems_against(spec, workflow, lookup)


def problems_against(
    spec: WorkflowTestSpec, workflow: WorkflowDefinitionSpec | None, lookup: Lookup | None = None
) -> list[Problem]:
    """The problems of a test's cases, checked against ``workflow`` when it is known (and
    the EventTriggers of their triggers through ``lookup``)."""
    problems: list[Problem] = []
    every = workflow.all_tasks() if workflow else []
    tasks = [t.name for t in every]
    waited = {t.wait_for_event.event_type for t in every if t.wait_for_event is not None}
    names = ", ".join(tasks)
    what = f"WorkflowDefinition {spec.workflow_ref.name!r}"

    def task_problem(name: str, path: str, role: str) -> None:
        if workflow is not None and name not in tasks:
            problems.append(
                Problem(
                    path, f"{role} task {name!r}, which is not a task of {what} (tasks: {names})"
                )
            )

    seen: set[str] = set()
    for i, case in enumerate(spec.cases):
        base = f"spec.cases[{i}]"
        if case.name in seen:
            problems.append(
                Problem(f"{base}.name", f"case {case.name!r} is defined twice", "Duplicate")
            )
        seen.add(case.name)
        for name, mock in case.mocks.items():
            task_problem(name, f"{base}.mocks.{name}", "mocks")
            for key, expression in mock.output_expressions.items():
                _check_expression(
                    expression,
                    f"{base}.mocks.{name}.outputExpressions.{key}",
                    "output expression",
                    problems,
                    variables=MOCK_VARIABLES,
                )
        expect = case.expect
        for name in expect.tasks:
            task_problem(name, f"{base}.expect.tasks.{name}", "expects")
        for j, name in enumerate(expect.order or ()):
            task_problem(name, f"{base}.expect.order[{j}]", "orders")
        if expect.failure is not None and expect.failure.task is not None:
            task_problem(expect.failure.task, f"{base}.expect.failure.task", "expects a failure of")
        for j, assertion in enumerate(expect.assertions):
            _check_expression(
                assertion,
                f"{base}.expect.assertions[{j}]",
                "assertion",
                problems,
                variables=ASSERTION_VARIABLES,
                parameters={p.name: p for p in workflow.parameters} if workflow else None,
                tasks=set(tasks) if workflow is not None else None,
            )
        if case.trigger is not None:
            if case.arguments:
                problems.append(
                    Problem(
                        f"{base}.arguments",
                        "a case with a trigger takes its arguments "
                        "from the trigger: leave arguments empty",
                    )
                )
            trigger = _lookup_spec(
                lookup,
                "EventTrigger",
                case.trigger.event_trigger,
                f"{base}.trigger.eventTrigger",
                problems,
            )
            if isinstance(trigger, EventTriggerSpec):
                problems += _trigger_problems(spec, trigger, case.trigger.event_trigger, base)
        if workflow is None:
            continue
        if case.trigger is None:
            problems += check_arguments(workflow.parameters, case.arguments, f"{base}.arguments")
        for j, event in enumerate(case.events):
            if event.type not in waited:
                known = ", ".join(sorted(waited)) or "none"
                problems.append(
                    Problem(
                        f"{base}.events[{j}].type",
                        f"no task of {what} waits for events of type {event.type!r} "
                        f"(types waited for: {known})",
                    )
                )
    return problems


def _trigger_problems(
    spec: WorkflowTestSpec, trigger: EventTriggerSpec, name: str, base: str
) -> list[Problem]:
    """A case's trigger must start the workflow under test, on an event."""
    path = f"{base}.trigger.eventTrigger"
    if trigger.workflow_ref.name != spec.workflow_ref.name:
        return [
            Problem(
                path,
                f"EventTrigger {name!r} starts WorkflowDefinition "
                f"{trigger.workflow_ref.name!r}, not {spec.workflow_ref.name!r}",
            )
        ]
    if trigger.event_type is None:
        return [Problem(path, f"EventTrigger {name!r} runs on a schedule, not on events")]
    return []
