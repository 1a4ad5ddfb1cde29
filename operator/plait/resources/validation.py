"""Semantic validation: what OpenAPI and CEL rules in the CRDs cannot check.

The apiserver checks each field against the CRD schema; this module checks the resource as
a whole: the task graph is a DAG, every expression parses as CEL and refers only to things
that exist and are upstream, references to other objects resolve. Each finding is a
:class:`Problem` with the field path and a message that tells the author what to fix.

Cluster access belongs to the caller (the reconciler, the admission webhook): objects a
resource refers to are found through a ``lookup(kind, name)`` callback that returns the
referenced object's ``spec`` or None. :func:`references` lists what will be looked up, so an
async caller can fetch it all first and pass a dict-backed lookup. Problems with reason
``NotFound`` are exactly the other objects that do not exist (yet): admission warns about
them and the reconciler waits for them (objects applied together arrive in any order).
"""

from __future__ import annotations

import graphlib
import heapq
import re
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from plait import API_GROUP, API_VERSION
from plait.errors import ValidationError
from plait.kernel import expressions
from plait.resources.cache import CACHE_KEY_VARIABLES
from plait.resources.common import Parameter, PlaitModel
from plait.resources.event import EventDefinitionSpec
from plait.resources.integration import IntegrationSpec
from plait.resources.schedules import schedule_problem
from plait.resources.schemas import schema_problems
from plait.resources.synchronization import RUN_LOCK_VARIABLES, TASK_LOCK_VARIABLES
from plait.resources.task import TaskDefinitionSpec
from plait.resources.test import WorkflowTestSpec
from plait.resources.trigger import EventTriggerSpec
from plait.resources.workflow import (
    MAX_WORKFLOW_DEPTH,
    Task,
    WorkflowDefinitionSpec,
    WorkflowInstanceSpec,
)

__all__ = [
    "SPEC_MODELS",
    "InvalidResourceError",
    "Lookup",
    "Problem",
    "Reason",
    "check_arguments",
    "check_event_definition",
    "check_event_trigger",
    "check_instance_update",
    "check_integration",
    "check_resource",
    "check_spec",
    "check_task_definition",
    "check_workflow_definition",
    "check_workflow_instance",
    "find_cycle",
    "parse_spec",
    "references",
    "validate_resource",
    "validate_spec",
]

Reason = Literal["Invalid", "Required", "Duplicate", "NotFound", "NotSupported"]

#: Looks up a referenced object in the resource's namespace: kind, name -> spec or None.
Lookup = Callable[[str, str], Mapping[str, Any] | PlaitModel | None]

#: Kind -> the model of its spec.
SPEC_MODELS: dict[str, type[PlaitModel]] = {
    "WorkflowDefinition": WorkflowDefinitionSpec,
    "WorkflowInstance": WorkflowInstanceSpec,
    "TaskDefinition": TaskDefinitionSpec,
    "EventTrigger": EventTriggerSpec,
    "Integration": IntegrationSpec,
    "EventDefinition": EventDefinitionSpec,
    "WorkflowTest": WorkflowTestSpec,
}

# Variables each kind of expression may read.
_TASK_VARS = frozenset({"params", "tasks", "workflow"})
_ITEM_VARS = _TASK_VARS | {"item", "index"}
_WAIT_VARS = _TASK_VARS | {"event"}
_EVENT_VARS = frozenset({"event"})
_SCHEDULE_VARS = frozenset({"schedule"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a resource: where (field path) and what."""

    path: str
    message: str
    reason: Reason = "Invalid"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidResourceError(ValidationError):
    """A resource failed validation; ``problems`` lists every finding."""

    def __init__(self, what: str, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        shown = "; ".join(str(p) for p in self.problems[:10])
        more = len(self.problems) - 10
        super().__init__(f"{what} is invalid: {shown}" + (f"; and {more} more" if more > 0 else ""))


# --- parsing ------------------------------------------------------------------------------


def _loc_path(base: str, loc: Iterable[int | str]) -> str:
    path = base
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path += f".{part}"
    return path


def _pydantic_problems(error: pydantic.ValidationError, base: str) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        kind = item["type"]
        if kind == "missing":
            problems.append(Problem(_loc_path(base, loc), "required field is missing", "Required"))
        elif kind == "extra_forbidden":
            problems.append(Problem(_loc_path(base, loc), "unknown field", "NotSupported"))
        elif "[key]" in loc:
            problems.append(Problem(_loc_path(base, loc), f"invalid key: {item['msg']}"))
        elif kind in ("literal_error", "enum"):
            problems.append(Problem(_loc_path(base, loc), item["msg"], "NotSupported"))
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(Problem(_loc_path(base, loc), message))
    return problems


def _parse(kind: str, spec: object, path: str = "spec") -> tuple[PlaitModel | None, list[Problem]]:
    model = SPEC_MODELS.get(kind)
    if model is None:
        return None, [Problem("kind", f"unknown kind {kind!r}", "NotSupported")]
    if isinstance(spec, model):
        return spec, []
    if isinstance(spec, PlaitModel):
        spec = spec.to_dict()
    if not isinstance(spec, Mapping):
        return None, [Problem(path, f"must be an object, not {type(spec).__name__}")]
    try:
        return model.model_validate(dict(spec)), []
    except pydantic.ValidationError as exc:
        return None, _pydantic_problems(exc, path)


def parse_spec(kind: str, spec: Mapping[str, Any] | PlaitModel) -> PlaitModel:
    """The typed spec of a ``kind``; raises :class:`InvalidResourceError` on schema errors."""
    parsed, problems = _parse(kind, spec)
    if parsed is None:
        raise InvalidResourceError(kind, problems)
    return parsed


def _lookup_spec(
    lookup: Lookup | None, kind: str, name: str, path: str, problems: list[Problem]
) -> PlaitModel | None:
    """The referenced object's typed spec; a NotFound problem when it does not exist."""
    if lookup is None:
        return None
    found = lookup(kind, name)
    if found is None:
        problems.append(Problem(path, f"{kind} {name!r} not found in this namespace", "NotFound"))
        return None
    parsed, errors = _parse(kind, found)
    return parsed if not errors else None


# --- expressions --------------------------------------------------------------------------


def _check_expression(
    expression: str,
    path: str,
    what: str,
    problems: list[Problem],
    *,
    variables: frozenset[str],
    parameters: Mapping[str, Parameter] | None = None,
    tasks: Set[str] | None = None,
    upstream: Callable[[str], bool] | None = None,
) -> None:
    """Parse one expression and check the names it reads; append findings to ``problems``.

    ``upstream(name)`` says whether task ``name`` has finished whenever this expression runs;
    when None, any task of the workflow may be referred to.
    """
    try:
        program = expressions.compile(expression)
    except expressions.ExpressionError as exc:
        problems.append(Problem(path, f"{what}: not a valid CEL expression: {exc.detail}"))
        return
    for name in sorted(program.variables - variables):
        problems.append(
            Problem(
                path,
                f"{what}: unknown variable {name!r} (available: {', '.join(sorted(variables))})",
            )
        )
    if parameters is not None and "params" in variables:
        for ref in expressions.member_references(expression, "params"):
            if ref != "*" and ref not in parameters:
                known = ", ".join(parameters) or "none declared"
                problems.append(
                    Problem(path, f"{what}: params.{ref} is not a parameter (parameters: {known})")
                )
    if tasks is not None and "tasks" in variables:
        for ref in expressions.member_references(expression, "tasks"):
            if ref == "*":
                continue
            if ref not in tasks:
                hint = min((t for t in tasks if t.startswith(ref + "-")), default=None)
                extra = f"; for a name with a dash write tasks['{hint}']" if hint else ""
                problems.append(
                    Problem(path, f"{what}: tasks.{ref} is not a task of this workflow{extra}")
                )
            elif upstream is not None and not upstream(ref):
                problems.append(
                    Problem(
                        path,
                        f"{what}: refers to task {ref!r}, which is not upstream; "
                        f"add it (or a task after it) to dependencies",
                    )
                )


# --- graphs -------------------------------------------------------------------------------


def find_cycle(dependencies: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as a path ``[a, b, c, a]`` (each depends on the next), or None.

    Found by :mod:`graphlib`, the standard library's topological sorter. Edges to names
    that are not keys are ignored; the path starts at the first (in key order) task on it.
    """
    known = set(dependencies)
    graph = {n: [d for d in deps if d in known] for n, deps in dependencies.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the one depending on it: reverse for our reading.
        cycle = list(reversed(exc.args[1][:-1]))
        order = {n: i for i, n in enumerate(dependencies)}
        first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
        cycle = cycle[first:] + cycle[:first]
        return [*cycle, cycle[0]]
    return None


def _ancestors(order: Sequence[str], edges: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Task -> bitset of every task upstream of it; ``order`` is topological."""
    bit = {name: 1 << i for i, name in enumerate(order)}
    result: dict[str, int] = {}
    for name in order:
        acc = 0
        for d in edges[name]:
            acc |= result[d] | bit[d]
        result[name] = acc
    return result


def _topological(edges: Mapping[str, Sequence[str]]) -> list[str]:
    """Dependencies first; ties broken by name so the order is stable. Assumes a DAG."""
    remaining = {n: len(set(deps)) for n, deps in edges.items()}
    dependents: dict[str, list[str]] = {n: [] for n in edges}
    for n, deps in edges.items():
        for d in set(deps):
            dependents[d].append(n)
    heap = [n for n, count in remaining.items() if count == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        n = heapq.heappop(heap)
        order.append(n)
        for m in dependents[n]:
            remaining[m] -= 1
            if remaining[m] == 0:
                heapq.heappush(heap, m)
    return order


# --- parameters and arguments -------------------------------------------------------------

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
}


def _json_type(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "object", "array"):
        if _JSON_TYPES[name](value):
            return name
    return "null" if value is None else type(value).__name__


def _check_value(param: Parameter, value: Any, path: str, problems: list[Problem]) -> None:
    if not _JSON_TYPES[param.type](value):
        problems.append(
            Problem(path, f"{param.name} must be of type {param.type}, got {_json_type(value)}")
        )
    elif param.type == "string" and param.enum is not None and value not in param.enum:
        problems.append(
            Problem(path, f"{value!r} is not one of {', '.join(param.enum)}", "NotSupported")
        )


def _check_parameters(parameters: Sequence[Parameter], path: str, problems: list[Problem]) -> None:
    seen: set[str] = set()
    for i, param in enumerate(parameters):
        here = f"{path}[{i}]"
        if param.name in seen:
            problems.append(Problem(f"{here}.name", f"duplicate name {param.name!r}", "Duplicate"))
        seen.add(param.name)
        if param.enum is not None and param.type != "string":
            problems.append(Problem(f"{here}.enum", "enum is only supported for string parameters"))
        if param.default is not None:
            _check_value(param, param.default, f"{here}.default", problems)


def check_arguments(
    parameters: Sequence[Parameter], arguments: Mapping[str, Any], path: str = "spec.arguments"
) -> list[Problem]:
    """Arguments against a definition's parameters: names, required ones, types, enums."""
    problems: list[Problem] = []
    by_name = {p.name: p for p in parameters}
    for name, value in arguments.items():
        param = by_name.get(name)
        if param is None:
            known = ", ".join(by_name) or "none"
            problems.append(
                Problem(
                    f"{path}.{name}", f"unknown parameter (parameters: {known})", "NotSupported"
                )
            )
        else:
            _check_value(param, value, f"{path}.{name}", problems)
    for param in parameters:
        if param.default is None and param.name not in arguments:
            problems.append(
                Problem(f"{path}.{param.name}", "required parameter has no value", "Required")
            )
    return problems


# --- kinds --------------------------------------------------------------------------------


def _check_integrations(
    template_integrations: Sequence[Any] | None,
    path: str,
    lookup: Lookup | None,
    problems: list[Problem],
) -> None:
    for i, ref in enumerate(template_integrations or ()):
        _lookup_spec(lookup, "Integration", ref.name, f"{path}[{i}].name", problems)


def _check_task(
    task: Task,
    path: str,
    problems: list[Problem],
    *,
    parameters: Mapping[str, Parameter],
    tasks: Set[str],
    upstream: Callable[[str], bool] | None,
    lookup: Lookup | None,
) -> None:
    what = f"task {task.name!r}"
    context: dict[str, Any] = {"parameters": parameters, "tasks": tasks, "upstream": upstream}
    task_vars = _TASK_VARS
    if task.for_each is not None:
        task_vars = _ITEM_VARS  # inputs and when run once per item
        _check_for_each(task, path, problems, context)
    if task.when is not None:
        _check_expression(
            task.when, f"{path}.when", f"{what} when", problems, variables=task_vars, **context
        )
    if task.synchronization is not None:
        _check_expression(
            task.synchronization.key,
            f"{path}.synchronization.key",
            f"{what} synchronization key",
            problems,
            variables=TASK_LOCK_VARIABLES,
            parameters=parameters,
        )
        if task.wait_for_event is not None:
            problems.append(
                Problem(
                    f"{path}.synchronization",
                    f"{what}: a wait for an event runs nothing to hold a lock for; "
                    "put synchronization on the workflow or on the task after it",
                    "NotSupported",
                )
            )
    if task.cache is not None:
        _check_expression(
            task.cache.key,
            f"{path}.cache.key",
            f"{what} cache key",
            problems,
            variables=CACHE_KEY_VARIABLES,
        )
        if task.wait_for_event is not None:
            problems.append(
                Problem(
                    f"{path}.cache",
                    f"{what}: a wait for an event has no result to cache",
                    "NotSupported",
                )
            )
    if task.depends is not None:
        _check_expression(
            task.depends,
            f"{path}.depends",
            f"{what} depends",
            problems,
            variables=frozenset({"params", "tasks"}),
            **context,
        )
        if not task.dependencies:
            problems.append(
                Problem(
                    f"{path}.depends",
                    f"{what}: depends is evaluated over the tasks in dependencies, and it has none",
                    "Required",
                )
            )
    for name, expression in task.inputs.items():
        _check_expression(
            expression,
            f"{path}.inputs.{name}",
            f"{what} input {name!r}",
            problems,
            variables=task_vars,
            **context,
        )
    if task.wait_for_event is not None:
        _check_expression(
            task.wait_for_event.correlation,
            f"{path}.waitForEvent.correlation",
            f"{what} correlation",
            problems,
            variables=_WAIT_VARS,
            **context,
        )
    if task.template is not None:
        _check_integrations(
            task.template.integrations, f"{path}.template.integrations", lookup, problems
        )
    if task.workflow_ref is not None:
        for field, value in (("cache", task.cache), ("synchronization", task.synchronization)):
            if value is not None:
                problems.append(
                    Problem(
                        f"{path}.{field}",
                        f"{what}: a sub-workflow task cannot have {field}; "
                        f"set it on the tasks (or the workflow) it runs",
                        "NotSupported",
                    )
                )
        called = _lookup_spec(
            lookup,
            "WorkflowDefinition",
            task.workflow_ref.name,
            f"{path}.workflowRef.name",
            problems,
        )
        if isinstance(called, WorkflowDefinitionSpec):
            _check_given(
                task,
                {p.name: p for p in called.parameters},
                f"WorkflowDefinition {task.workflow_ref.name!r}",
                "parameter",
                path,
                problems,
            )
    if task.task_ref is not None:
        found = _lookup_spec(
            lookup, "TaskDefinition", task.task_ref.name, f"{path}.taskRef.name", problems
        )
        if isinstance(found, TaskDefinitionSpec):
            _check_given(
                task,
                {p.name: p for p in found.inputs},
                f"TaskDefinition {task.task_ref.name!r}",
                "input",
                path,
                problems,
            )


def _check_given(
    task: Task,
    declared: Mapping[str, Parameter],
    owner: str,
    noun: str,
    path: str,
    problems: list[Problem],
) -> None:
    """A task's inputs against what the definition it runs declares (a TaskDefinition's
    inputs, a sub-workflow's parameters): no unknown name, every required one given."""
    what = f"task {task.name!r}"
    for name in task.inputs:
        if name not in declared:
            problems.append(
                Problem(
                    f"{path}.inputs.{name}",
                    f"{what}: {owner} has no {noun} {name!r} "
                    f"({noun}s: {', '.join(declared) or 'none'})",
                    "NotSupported",
                )
            )
    for name, param in declared.items():
        if param.default is None and name not in task.inputs:
            problems.append(
                Problem(f"{path}.inputs", f"{what}: {owner} requires {noun} {name!r}", "Required")
            )


def _check_for_each(
    task: Task, path: str, problems: list[Problem], context: Mapping[str, Any]
) -> None:
    """A fan-out runs containers, once per item, of a task in the DAG."""
    assert task.for_each is not None
    if task.wait_for_event is not None:
        problems.append(
            Problem(
                f"{path}.forEach",
                f"task {task.name!r}: forEach runs a template or taskRef once per item; "
                "it cannot wait for events",
                "NotSupported",
            )
        )
    if task.for_each.expression is not None:
        _check_expression(
            task.for_each.expression,
            f"{path}.forEach.expression",
            f"task {task.name!r} forEach",
            problems,
            variables=_TASK_VARS,
            **context,
        )


def check_workflow_definition(
    spec: WorkflowDefinitionSpec, lookup: Lookup | None = None
) -> list[Problem]:
    """The DAG, every expression and every reference of a WorkflowDefinition."""
    problems: list[Problem] = []
    _check_parameters(spec.parameters, "spec.parameters", problems)
    parameters = {p.name: p for p in spec.parameters}
    names = frozenset(t.name for t in spec.tasks)
    index: dict[str, int] = {}
    for i, task in enumerate(spec.tasks):
        if task.name in index:
            problems.append(
                Problem(f"spec.tasks[{i}].name", f"duplicate task name {task.name!r}", "Duplicate")
            )
        else:
            index[task.name] = i
    edges: dict[str, list[str]] = {n: [] for n in index}
    for i, task in enumerate(spec.tasks):
        seen: set[str] = set()
        for j, dep in enumerate(task.dependencies):
            here = f"spec.tasks[{i}].dependencies[{j}]"
            if dep == task.name:
                problems.append(Problem(here, f"task {task.name!r} depends on itself"))
            elif dep not in index:
                problems.append(
                    Problem(
                        here,
                        f"task {task.name!r} depends on {dep!r}, "
                        "which is not a task of this workflow",
                    )
                )
            elif dep in seen:
                problems.append(Problem(here, f"dependency {dep!r} is listed twice", "Duplicate"))
            elif index[task.name] == i:
                edges[task.name].append(dep)
            seen.add(dep)
    cycle = find_cycle({n: [d for d in deps if d != n] for n, deps in edges.items()})
    upstream_of: dict[str, int] | None = None
    if cycle is not None:
        problems.append(
            Problem(
                f"spec.tasks[{index[cycle[0]]}].dependencies",
                f"dependency cycle: {' -> '.join(cycle)} (each task depends on the next)",
            )
        )
    else:
        order = _topological(edges)
        upstream_of = _ancestors(order, edges)
        bit = {name: 1 << i for i, name in enumerate(order)}

    for i, task in enumerate(spec.tasks):
        upstream: Callable[[str], bool] | None = None
        if upstream_of is not None and task.name in upstream_of:
            mask = upstream_of[task.name]
            upstream = lambda name, mask=mask: bool(mask & bit.get(name, 0))  # noqa: E731
        _check_task(
            task,
            f"spec.tasks[{i}]",
            problems,
            parameters=parameters,
            tasks=names,
            upstream=upstream,
            lookup=lookup,
        )
    if spec.synchronization is not None:
        _check_expression(
            spec.synchronization.key,
            "spec.synchronization.key",
            "synchronization key",
            problems,
            variables=RUN_LOCK_VARIABLES,
            parameters=parameters,
        )
    for name, expression in spec.outputs.items():
        _check_expression(
            expression,
            f"spec.outputs.{name}",
            f"output {name!r}",
            problems,
            variables=_TASK_VARS,
            parameters=parameters,
            tasks=names,
        )
    if spec.on_exit is not None and spec.on_exit.for_each is not None:
        problems.append(
            Problem(
                "spec.onExit.forEach",
                "the exit task runs once and cannot have forEach; "
                "make the fan-out a task of the DAG instead",
                "NotSupported",
            )
        )
    if spec.on_exit is not None:
        _check_task(
            spec.on_exit,
            "spec.onExit",
            problems,
            parameters=parameters,
            tasks=names,
            upstream=None,
            lookup=lookup,
        )
    return problems


def check_task_definition(spec: TaskDefinitionSpec, lookup: Lookup | None = None) -> list[Problem]:
    """Inputs, outputs and integrations of a TaskDefinition."""
    problems: list[Problem] = []
    _check_parameters(spec.inputs, "spec.inputs", problems)
    seen: set[str] = set()
    for i, output in enumerate(spec.outputs):
        if output.name in seen:
            problems.append(
                Problem(f"spec.outputs[{i}].name", f"duplicate name {output.name!r}", "Duplicate")
            )
        seen.add(output.name)
    _check_integrations(spec.template.integrations, "spec.template.integrations", lookup, problems)
    return problems


def check_workflow_instance(
    spec: WorkflowInstanceSpec, lookup: Lookup | None = None
) -> list[Problem]:
    """The definition exists, the arguments fit its parameters, and each mock names one of
    its tasks. A run pinned to a version is checked for its arguments only: ``lookup``
    knows the definition's newest spec, and the version it pins may have other tasks."""
    problems: list[Problem] = []
    definition = _lookup_spec(
        lookup, "WorkflowDefinition", spec.workflow_ref.name, "spec.workflowRef.name", problems
    )
    if isinstance(definition, WorkflowDefinitionSpec):
        problems += check_arguments(definition.parameters, spec.arguments)
        if spec.workflow_ref.version is None:
            problems += _mock_problems(spec, definition)
    return problems


def _mock_problems(spec: WorkflowInstanceSpec, definition: WorkflowDefinitionSpec) -> list[Problem]:
    """A mock of a task the definition does not have would never be used: refused."""
    every = definition.all_tasks()
    tasks = [t.name for t in every]
    return [
        Problem(
            f"spec.mocks.{name}",
            f"mocks task {name!r}, which is not a task of WorkflowDefinition "
            f"{spec.workflow_ref.name!r} (tasks: {', '.join(tasks)})",
        )
        for name in spec.mocks
        if name not in tasks
    ]


def check_instance_update(old: WorkflowInstanceSpec, new: WorkflowInstanceSpec) -> list[Problem]:
    """What may not change once a run exists: its definition, its arguments, cancellation."""
    problems: list[Problem] = []
    if old.workflow_ref != new.workflow_ref:
        problems.append(Problem("spec.workflowRef", "workflowRef is immutable"))
    if old.arguments != new.arguments:
        problems.append(Problem("spec.arguments", "arguments are immutable once a run exists"))
    if old.cancel and not new.cancel:
        problems.append(Problem("spec.cancel", "a cancelled run cannot be resumed"))
    return problems


def check_event_trigger(spec: EventTriggerSpec, lookup: Lookup | None = None) -> list[Problem]:
    """The filter and argument expressions, the schedule, and the workflow it starts."""
    problems: list[Problem] = []
    variables = _SCHEDULE_VARS if spec.schedule is not None else _EVENT_VARS
    if spec.filter is not None:
        _check_expression(spec.filter, "spec.filter", "filter", problems, variables=_EVENT_VARS)
    for name, expression in spec.arguments.items():
        _check_expression(
            expression,
            f"spec.arguments.{name}",
            f"argument {name!r}",
            problems,
            variables=variables,
        )
    if spec.schedule is not None:
        # Exactly what the scheduler does: the next tick by cronsim, in the time zone.
        reason = schedule_problem(spec.schedule.cron, spec.schedule.time_zone)
        if reason is not None:
            field = "timeZone" if reason.startswith("unknown time zone") else "cron"
            problems.append(Problem(f"spec.schedule.{field}", reason))
    definition = _lookup_spec(
        lookup, "WorkflowDefinition", spec.workflow_ref.name, "spec.workflowRef.name", problems
    )
    if isinstance(definition, WorkflowDefinitionSpec):
        declared = {p.name: p for p in definition.parameters}
        for name in spec.arguments:
            if name not in declared:
                problems.append(
                    Problem(
                        f"spec.arguments.{name}",
                        f"workflow {spec.workflow_ref.name!r} has no parameter "
                        f"{name!r} (parameters: {', '.join(declared) or 'none'})",
                        "NotSupported",
                    )
                )
        for name, param in declared.items():
            if param.default is None and name not in spec.arguments:
                problems.append(
                    Problem(
                        "spec.arguments",
                        f"workflow parameter {name!r} is required and has no "
                        "default: map a value to it",
                        "Required",
                    )
                )
    return problems


_CREDENTIAL_SUFFIXES = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "accesskey",
    "credentials",
    "passphrase",
)


def _credential_paths(value: Any, path: str) -> Iterable[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            normalized = re.sub(r"[^a-z]", "", str(key).lower())
            here = f"{path}.{key}"
            if normalized.endswith(_CREDENTIAL_SUFFIXES) and not isinstance(item, Mapping | list):
                yield here
            else:
                yield from _credential_paths(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _credential_paths(item, f"{path}[{i}]")
    elif isinstance(value, str) and "-----BEGIN" in value:
        yield path


def check_integration(spec: IntegrationSpec, lookup: Lookup | None = None) -> list[Problem]:
    """Settings hold no credentials: those belong in the Secret named by secretRef."""
    del lookup  # Secrets are the caller's business: they may legitimately arrive later.
    return [
        Problem(path, "looks like a credential; store it in the Secret named by secretRef")
        for path in _credential_paths(spec.settings, "spec.settings")
    ]


def check_event_definition(
    spec: EventDefinitionSpec, lookup: Lookup | None = None
) -> list[Problem]:
    """The data schema compiles exactly as the event API compiles it (meta-schema, formats,
    references), so no event of the type can meet a broken schema."""
    del lookup
    return [
        Problem(path, message) for path, message in schema_problems(spec.schema_, "spec.schema")
    ]


def _check_workflow_test(spec: WorkflowTestSpec, lookup: Lookup | None) -> list[Problem]:
    """A WorkflowTest's own checks (imported here: they import this module)."""
    from plait.resources.workflow_test_checks import check_workflow_test

    return check_workflow_test(spec, lookup)


_CHECKS: dict[type[PlaitModel], Callable[[Any, Lookup | None], list[Problem]]] = {
    WorkflowDefinitionSpec: check_workflow_definition,
    WorkflowInstanceSpec: check_workflow_instance,
    TaskDefinitionSpec: check_task_definition,
    EventTriggerSpec: check_event_trigger,
    IntegrationSpec: check_integration,
    EventDefinitionSpec: check_event_definition,
    WorkflowTestSpec: _check_workflow_test,
}


def check_spec(
    kind: str, spec: Mapping[str, Any] | PlaitModel, lookup: Lookup | None = None
) -> list[Problem]:
    """Every problem of a ``kind``'s spec: schema errors, else semantic ones. Never raises."""
    parsed, problems = _parse(kind, spec)
    if parsed is None:
        return problems
    return _CHECKS[type(parsed)](parsed, lookup)


def check_resource(obj: Mapping[str, Any], lookup: Lookup | None = None) -> list[Problem]:
    """Every problem of a whole resource (apiVersion, kind, spec) as a user wrote it."""
    expected = f"{API_GROUP}/{API_VERSION}"
    if obj.get("apiVersion") != expected:
        return [
            Problem(
                "apiVersion", f"expected {expected}, got {obj.get('apiVersion')!r}", "NotSupported"
            )
        ]
    kind = obj.get("kind")
    if kind not in SPEC_MODELS:
        return [
            Problem(
                "kind", f"unknown kind {kind!r} (kinds: {', '.join(SPEC_MODELS)})", "NotSupported"
            )
        ]
    if "spec" not in obj:
        return [Problem("spec", "required field is missing", "Required")]
    problems = check_spec(str(kind), obj["spec"], lookup)
    if kind == "WorkflowDefinition" and not problems and lookup is not None:
        metadata = obj.get("metadata")
        name = str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""
        problems = call_problems(name, parse_spec("WorkflowDefinition", obj["spec"]), lookup)
    return problems


def call_problems(name: str, spec: PlaitModel, lookup: Lookup) -> list[Problem]:
    """Sub-workflow calls that come back to ``name`` (a cycle), or nest deeper than
    MAX_WORKFLOW_DEPTH levels, through the definitions ``lookup`` knows."""
    assert isinstance(spec, WorkflowDefinitionSpec)
    problems: list[Problem] = []
    tasks = [(f"spec.tasks[{i}]", t) for i, t in enumerate(spec.tasks)]
    if spec.on_exit is not None:
        tasks.append(("spec.onExit", spec.on_exit))
    for path, task in tasks:
        if task.workflow_ref is None:
            continue
        chain = _deepest_call(name, [name, task.workflow_ref.name], lookup)
        where = f"{path}.workflowRef.name"
        if chain is not None and chain[-1] in chain[:-1]:
            problems.append(Problem(where, f"sub-workflow cycle: {' -> '.join(chain)}"))
        elif chain is not None:
            problems.append(
                Problem(
                    where,
                    f"sub-workflows nest deeper than {MAX_WORKFLOW_DEPTH} levels: "
                    f"{' -> '.join(chain)}",
                )
            )
    return problems


def _deepest_call(root: str, chain: list[str], lookup: Lookup) -> list[str] | None:
    """A call chain from ``chain`` that cycles or is too deep, or None."""
    if chain[-1] in chain[:-1]:
        return chain
    if len(chain) > MAX_WORKFLOW_DEPTH:
        return chain
    found = lookup("WorkflowDefinition", chain[-1])
    if found is None:
        return None
    parsed, errors = _parse("WorkflowDefinition", found)
    if errors or not isinstance(parsed, WorkflowDefinitionSpec):
        return None
    for task in parsed.all_tasks():
        if task.workflow_ref is not None:
            bad = _deepest_call(root, [*chain, task.workflow_ref.name], lookup)
            if bad is not None:
                return bad
    return None


def validate_spec(
    kind: str, spec: Mapping[str, Any] | PlaitModel, lookup: Lookup | None = None, name: str = ""
) -> PlaitModel:
    """The typed spec, or :class:`InvalidResourceError` listing every problem."""
    problems = check_spec(kind, spec, lookup)
    if problems:
        raise InvalidResourceError(f"{kind} {name!r}" if name else kind, problems)
    return parse_spec(kind, spec)


def validate_resource(obj: Mapping[str, Any], lookup: Lookup | None = None) -> PlaitModel:
    """The typed spec of a whole resource, or :class:`InvalidResourceError`."""
    problems = check_resource(obj, lookup)
    metadata = obj.get("metadata")
    name = metadata.get("name", "") if isinstance(metadata, Mapping) else ""
    if problems:
        raise InvalidResourceError(f"{obj.get('kind', 'resource')} {name!r}", problems)
    return parse_spec(str(obj["kind"]), obj["spec"])


def references(kind: str, spec: Mapping[str, Any] | PlaitModel) -> set[tuple[str, str]]:
    """The (kind, name) pairs the checks of this spec will look up; empty if it won't parse."""
    parsed, _ = _parse(kind, spec)
    found: set[tuple[str, str]] = set()
    if isinstance(parsed, WorkflowDefinitionSpec):
        for task in parsed.all_tasks():
            if task.task_ref is not None:
                found.add(("TaskDefinition", task.task_ref.name))
            if task.workflow_ref is not None:
                found.add(("WorkflowDefinition", task.workflow_ref.name))
            if task.template is not None:
                found |= {("Integration", i.name) for i in task.template.integrations or ()}
    elif isinstance(parsed, TaskDefinitionSpec):
        found |= {("Integration", i.name) for i in parsed.template.integrations or ()}
    elif isinstance(parsed, WorkflowInstanceSpec | EventTriggerSpec) or (
        isinstance(parsed, WorkflowTestSpec) and parsed.workflow_ref.version is None
    ):
        found.add(("WorkflowDefinition", parsed.workflow_ref.name))
    if isinstance(parsed, WorkflowTestSpec):
        found |= {("EventTrigger", c.trigger.event_trigger) for c in parsed.cases if c.trigger}
    return found
