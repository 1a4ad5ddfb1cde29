"""Semantic validation: precise problems for what the schema cannot check."""

from __future__ import annotations

import itertools
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.errors import ValidationError
from plait.resources import TaskDefinitionSpec, WorkflowDefinitionSpec
from plait.resources.validation import (
    InvalidResourceError,
    Problem,
    check_arguments,
    check_resource,
    check_spec,
    find_cycle,
    validate_resource,
    validate_spec,
)
from tests.resources.helpers import ExampleLookup


def _task(name: str, deps: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    return {"name": name, "dependencies": deps or [], "template": {"image": "busybox"}, **fields}


def _workflow(*tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"tasks": list(tasks), **fields}


def _messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


# --- the DAG ---------------------------------------------------------------------------------


def test_cycle_is_reported_with_its_path() -> None:
    spec = _workflow(_task("a", ["c"]), _task("b", ["a"]), _task("c", ["b"]), _task("d", ["a"]))
    [problem] = check_spec("WorkflowDefinition", spec)
    assert problem.path == "spec.tasks[0].dependencies"
    assert "dependency cycle: a -> c -> b -> a" in problem.message


def test_self_dependency() -> None:
    [problem] = check_spec("WorkflowDefinition", _workflow(_task("a", ["a"])))
    assert str(problem) == "spec.tasks[0].dependencies[0]: task 'a' depends on itself"


def test_missing_and_duplicate_dependencies() -> None:
    spec = _workflow(_task("a"), _task("b", ["a", "ghost", "a"]))
    assert _messages(check_spec("WorkflowDefinition", spec)) == [
        "spec.tasks[1].dependencies[1]: task 'b' depends on 'ghost', "
        "which is not a task of this workflow",
        "spec.tasks[1].dependencies[2]: dependency 'a' is listed twice",
    ]


def test_duplicate_task_names() -> None:
    problems = check_spec("WorkflowDefinition", _workflow(_task("a"), _task("a")))
    assert [(p.path, p.reason) for p in problems] == [("spec.tasks[1].name", "Duplicate")]


def test_five_thousand_task_chain_validates_quickly() -> None:
    tasks = [_task("t0")]
    tasks += [
        _task(
            f"t{i}", [f"t{i - 1}"], inputs={"x": f"tasks.t{i - 1}.outputs.x + tasks.t0.outputs.y"}
        )
        for i in range(1, 5000)
    ]
    assert check_spec("WorkflowDefinition", _workflow(*tasks)) == []
    tasks[0]["dependencies"] = ["t4999"]
    [problem] = check_spec("WorkflowDefinition", _workflow(*tasks))
    assert problem.message.startswith("dependency cycle: t0 -> t4999 -> t4998")


# --- expressions -----------------------------------------------------------------------------


def test_cel_syntax_error_names_task_field_and_parser_message() -> None:
    spec = _workflow(_task("a", when="params.x >"))
    [problem] = check_spec("WorkflowDefinition", spec)
    assert problem.path == "spec.tasks[0].when"
    assert problem.message.startswith("task 'a' when: not a valid CEL expression: at 1:")
    assert "Syntax error" in problem.message


def test_input_must_refer_to_a_known_parameter() -> None:
    spec = _workflow(_task("a", inputs={"n": "params.count + 1"}), parameters=[{"name": "size"}])
    [problem] = check_spec("WorkflowDefinition", spec)
    assert str(problem) == (
        "spec.tasks[0].inputs.n: task 'a' input 'n': params.count is not a parameter "
        "(parameters: size)"
    )


def test_input_must_refer_to_an_upstream_task() -> None:
    spec = _workflow(
        _task("a"),
        _task("b", ["a"]),
        _task("c", ["a"], inputs={"ok": "tasks.a.outputs.x", "bad": "tasks.b.outputs.x"}),
        _task("d", ["c"], when="tasks['a'].outputs.ok && tasks.b.outputs.y"),
    )
    problems = check_spec("WorkflowDefinition", spec)
    assert _messages(problems) == [
        "spec.tasks[2].inputs.bad: task 'c' input 'bad': refers to task 'b', which is not "
        "upstream; add it (or a task after it) to dependencies",
        "spec.tasks[3].when: task 'd' when: refers to task 'b', which is not upstream; add it "
        "(or a task after it) to dependencies",
    ]


def test_unknown_task_and_dashed_name_hint() -> None:
    spec = _workflow(
        _task("fetch-data"), _task("b", ["fetch-data"], inputs={"u": "tasks.fetch-data.outputs"})
    )
    messages = _messages(check_spec("WorkflowDefinition", spec))
    assert any(
        "tasks.fetch is not a task of this workflow; for a name with a dash write "
        "tasks['fetch-data']" in m
        for m in messages
    )


def test_unknown_variable_but_macro_variables_are_fine() -> None:
    spec = _workflow(
        _task("a", inputs={"x": "[1, 2].map(v, v * 2)", "y": "env.HOME"}),
    )
    assert _messages(check_spec("WorkflowDefinition", spec)) == [
        "spec.tasks[0].inputs.y: task 'a' input 'y': unknown variable 'env' "
        "(available: params, tasks, workflow)"
    ]


def test_outputs_and_exit_task_may_read_every_task() -> None:
    spec = _workflow(
        _task("a"),
        _task("b"),
        outputs={"both": "[tasks.a.outputs.x, tasks.b.outputs.x]", "bad": "tasks.c.outputs"},
        onExit=_task("report", inputs={"phase": "workflow.phase", "a": "tasks.a.outputs"}),
    )
    assert _messages(check_spec("WorkflowDefinition", spec)) == [
        "spec.outputs.bad: output 'bad': tasks.c is not a task of this workflow"
    ]


def test_wait_for_event_correlation_reads_event() -> None:
    wait = {"eventType": "approved", "correlation": "event.data.id == params.id && )"}
    spec = _workflow(
        {"name": "w", "waitForEvent": wait}, parameters=[{"name": "id", "type": "string"}]
    )
    [problem] = check_spec("WorkflowDefinition", spec)
    assert problem.path == "spec.tasks[0].waitForEvent.correlation"
    wait["correlation"] = "event.data.id == params.id"
    assert check_spec("WorkflowDefinition", spec) == []


def test_exactly_one_task_kind_is_a_problem_not_a_crash() -> None:
    spec = _workflow({"name": "a"})
    [problem] = check_spec("WorkflowDefinition", spec)
    assert problem.path == "spec.tasks[0]"
    assert "exactly one of taskRef, template, waitForEvent, workflowRef or http" in problem.message


def test_for_each_reads_item_and_index_and_its_list_is_checked() -> None:
    spec = _workflow(
        _task("list"),
        _task(
            "each",
            ["list"],
            forEach={"expression": "tasks.list.outputs.files + tasks.other.outputs"},
            inputs={"file": "item", "n": "index"},
        ),
        _task("after", ["each"], inputs={"all": "tasks.each.outputs", "bad": "item"}),
    )
    assert _messages(check_spec("WorkflowDefinition", spec)) == [
        "spec.tasks[1].forEach.expression: task 'each' forEach: "
        "tasks.other is not a task of this workflow",
        "spec.tasks[2].inputs.bad: task 'after' input 'bad': unknown variable 'item' "
        "(available: params, tasks, workflow)",
    ]


def test_for_each_needs_one_list_and_is_refused_where_it_cannot_run() -> None:
    both = _workflow(_task("each", forEach={"items": [1], "expression": "params.x"}))
    [problem] = check_spec("WorkflowDefinition", both)
    assert "exactly one of items or expression must be set" in problem.message
    ratio = _workflow(_task("each", forEach={"items": [1], "minSuccessRatio": 0.5}))
    [problem] = check_spec("WorkflowDefinition", ratio)
    assert "minSuccessRatio needs failurePolicy Continue" in problem.message
    at_exit = _workflow(_task("a"), onExit=_task("report", forEach={"items": [1]}))
    assert _messages(check_spec("WorkflowDefinition", at_exit)) == [
        "spec.onExit.forEach: the exit task runs once and cannot have forEach; "
        "make the fan-out a task of the DAG instead"
    ]


def test_depends_reads_its_dependencies_and_needs_some() -> None:
    spec = _workflow(
        _task("a"),
        _task("b"),
        _task("on-a", ["a"], depends="tasks.a.phase == 'Failed' || tasks.b.phase == 'Failed'"),
        _task("lonely", depends="true"),
    )
    assert _messages(check_spec("WorkflowDefinition", spec)) == [
        "spec.tasks[2].depends: task 'on-a' depends: refers to task 'b', which is not "
        "upstream; add it (or a task after it) to dependencies",
        "spec.tasks[3].depends: task 'lonely': depends is evaluated over the tasks in "
        "dependencies, and it has none",
    ]


def test_a_cache_key_reads_inputs_and_definition_only() -> None:
    spec = _workflow(
        _task("a", cache={"key": "inputs.url + params.size", "ttlSeconds": 60}),
        {
            "name": "w",
            "waitForEvent": {"eventType": "x", "correlation": "true"},
            "cache": {"key": "definition.version"},
        },
    )
    assert _messages(check_spec("WorkflowDefinition", spec)) == [
        "spec.tasks[0].cache.key: task 'a' cache key: unknown variable 'params' "
        "(available: definition, inputs)",
        "spec.tasks[1].cache: task 'w': a wait for an event has no result to cache",
    ]


def test_lock_keys_read_params_and_a_tasks_inputs() -> None:
    spec = _workflow(
        _task("push", synchronization={"key": "'registry-' + inputs.region + tasks.x"}),
        parameters=[{"name": "env", "type": "string"}],
        synchronization={"key": "'deploy-' + params.env + params.nope"},
    )
    assert _messages(check_spec("WorkflowDefinition", spec)) == [
        "spec.tasks[0].synchronization.key: task 'push' synchronization key: unknown "
        "variable 'tasks' (available: inputs, params)",
        "spec.synchronization.key: synchronization key: params.nope is not a parameter "
        "(parameters: env)",
    ]


# --- references ------------------------------------------------------------------------------


def _lookup(objects: dict[tuple[str, str], dict[str, Any]]) -> Any:
    return lambda kind, name: objects.get((kind, name))


def test_missing_task_definition_and_integration_are_not_found() -> None:
    spec = _workflow(
        {"name": "a", "taskRef": {"name": "nope"}},
        _task("b", template={"image": "x", "integrations": [{"name": "gone"}]}),
    )
    problems = check_spec("WorkflowDefinition", spec, _lookup({}))
    assert [(p.path, p.reason) for p in problems] == [
        ("spec.tasks[0].taskRef.name", "NotFound"),
        ("spec.tasks[1].template.integrations[0].name", "NotFound"),
    ]
    assert problems[0].message == "TaskDefinition 'nope' not found in this namespace"
    assert check_spec("WorkflowDefinition", spec) == []  # no lookup: references not checked


def test_task_ref_inputs_are_checked_against_the_definition() -> None:
    definition = TaskDefinitionSpec.model_validate(
        {
            "inputs": [{"name": "msg"}, {"name": "level", "default": "info"}],
            "template": {"image": "x"},
        }
    )
    spec = _workflow({"name": "a", "taskRef": {"name": "echo"}, "inputs": {"typo": "1"}})
    problems = check_spec(
        "WorkflowDefinition", spec, _lookup({("TaskDefinition", "echo"): definition.to_dict()})
    )
    assert [(p.path, p.reason) for p in problems] == [
        ("spec.tasks[0].inputs.typo", "NotSupported"),
        ("spec.tasks[0].inputs", "Required"),
    ]


def test_instance_arguments_against_parameters() -> None:
    definition = {
        "parameters": [
            {"name": "n", "type": "integer"},
            {"name": "mode", "enum": ["fast", "slow"], "default": "fast"},
            {"name": "flag", "type": "boolean", "default": False},
        ],
        "tasks": [_task("a")],
    }
    lookup = _lookup({("WorkflowDefinition", "w"): definition})
    spec = {"workflowRef": {"name": "w"}, "arguments": {"mode": "medium", "flag": 1, "x": 2}}
    assert _messages(check_spec("WorkflowInstance", spec, lookup)) == [
        "spec.arguments.mode: 'medium' is not one of fast, slow",
        "spec.arguments.flag: flag must be of type boolean, got integer",
        "spec.arguments.x: unknown parameter (parameters: n, mode, flag)",
        "spec.arguments.n: required parameter has no value",
    ]
    spec["arguments"] = {"n": 3}
    assert check_spec("WorkflowInstance", spec, lookup) == []
    assert [p.reason for p in check_spec("WorkflowInstance", spec, _lookup({}))] == ["NotFound"]


def test_instance_mocks_must_name_tasks_of_the_definition() -> None:
    definition = {"tasks": [_task("a"), _task("b")], "onExit": _task("notify")}
    lookup = _lookup({("WorkflowDefinition", "w"): definition})
    spec: dict[str, Any] = {
        "workflowRef": {"name": "w"},
        "mocks": {"a": {}, "notify": {"exitCode": 1}, "c": {"outputs": {"x": 1}}},
    }
    problems = check_spec("WorkflowInstance", spec, lookup)
    assert [(str(p), p.reason) for p in problems] == [
        (
            "spec.mocks.c: mocks task 'c', which is not a task of WorkflowDefinition 'w' "
            "(tasks: a, b, notify)",
            "Invalid",
        )
    ]
    # A run pinned to a version may run other tasks than the newest spec has.
    spec["workflowRef"] = {"name": "w", "version": 1}
    assert check_spec("WorkflowInstance", spec, lookup) == []
    spec["workflowRef"] = {"name": "w"}
    spec["mocks"] = {"a": {}, "b": {}}
    assert check_spec("WorkflowInstance", spec, lookup) == []


def test_parameter_defaults_must_match_their_type() -> None:
    spec = _workflow(
        _task("a"),
        parameters=[
            {"name": "n", "type": "integer", "default": "3"},
            {"name": "n", "type": "number", "default": 2.5, "enum": ["x"]},
        ],
    )
    assert _messages(check_spec("WorkflowDefinition", spec)) == [
        "spec.parameters[0].default: n must be of type integer, got string",
        "spec.parameters[1].name: duplicate name 'n'",
        "spec.parameters[1].enum: enum is only supported for string parameters",
    ]


def test_check_arguments_accepts_integers_for_numbers_but_not_booleans() -> None:
    params = WorkflowDefinitionSpec.model_validate(
        _workflow(_task("a"), parameters=[{"name": "x", "type": "number"}])
    ).parameters
    assert check_arguments(params, {"x": 3}) == []
    assert check_arguments(params, {"x": 2.5}) == []
    assert len(check_arguments(params, {"x": True})) == 1


# --- triggers, integrations, event definitions ------------------------------------------------


def test_trigger_expressions_schedule_and_workflow() -> None:
    definition = {"parameters": [{"name": "id"}, {"name": "other"}], "tasks": [_task("a")]}
    lookup = _lookup({("WorkflowDefinition", "w"): definition})
    spec = {
        "eventType": "order.created",
        "filter": "event.data.amount >",
        "workflowRef": {"name": "w"},
        "arguments": {"id": "event.data.id", "nope": "params.x"},
    }
    problems = check_spec("EventTrigger", spec, lookup)
    assert [p.path for p in problems] == [
        "spec.filter",
        "spec.arguments.nope",
        "spec.arguments.nope",
        "spec.arguments",
    ]
    assert "unknown variable 'params' (available: event)" in problems[1].message
    assert "parameter 'other' is required" in problems[3].message


@pytest.mark.parametrize(
    ("cron", "zone", "problem"),
    [
        ("*/5 * * * *", "Europe/Paris", None),
        ("0 9 * * MON-FRI", "UTC", None),
        ("@hourly", "UTC", None),
        ("0 9 * *", "UTC", "Wrong number of fields"),
        ("61 * * * *", "UTC", "Bad minute"),
        ("0 0 * FOO *", "UTC", "Bad month"),
        ("*/0 * * * *", "UTC", "Bad minute"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_schedules(cron: str, zone: str, problem: str | None) -> None:
    spec = {
        "schedule": {"cron": cron, "timeZone": zone, "catchUp": "Latest"},
        "workflowRef": {"name": "w"},
        "arguments": {"at": "schedule.time"},
    }
    problems = check_spec("EventTrigger", spec)
    if problem is None:
        assert problems == []
    else:
        [found] = problems
        assert problem in found.message


def test_integration_settings_must_not_hold_credentials() -> None:
    spec = {
        "type": "slack",
        "settings": {
            "channel": "#ops",
            "tokenUrl": "https://x",
            "botToken": "xoxb-1",
            "auth": {"client_secret": "s"},
            "certs": ["-----BEGIN PRIVATE KEY-----"],
        },
        "secretRef": {"name": "slack"},
    }
    assert [p.path for p in check_spec("Integration", spec)] == [
        "spec.settings.botToken",
        "spec.settings.auth.client_secret",
        "spec.settings.certs[0]",
    ]


def test_event_definition_schema_is_checked() -> None:
    spec = {
        "type": "x",
        "schema": {"type": "object", "properties": {"a": {"type": "strnig"}}, "required": "a"},
    }
    assert _messages(check_spec("EventDefinition", spec)) == [
        "spec.schema.properties.a.type: 'strnig' is not valid under any of the given schemas",
        "spec.schema.required: 'a' is not of type 'array'",
    ]


# --- entry points ----------------------------------------------------------------------------


def test_schema_errors_come_back_as_problems_with_paths() -> None:
    spec = {"tasks": [{"name": "a", "template": {}, "timeoutSeconds": 0, "bogus": 1}]}
    problems = check_spec("WorkflowDefinition", spec)
    assert {(p.path, p.reason) for p in problems} == {
        ("spec.tasks[0].template.image", "Required"),
        ("spec.tasks[0].timeoutSeconds", "Invalid"),
        ("spec.tasks[0].bogus", "NotSupported"),
    }


def test_check_resource_checks_api_version_and_kind() -> None:
    assert check_resource({"apiVersion": "v1", "kind": "Pod"})[0].path == "apiVersion"
    assert check_resource({"apiVersion": "plait.dev/v1alpha1", "kind": "Nope"})[0].path == "kind"
    obj = {"apiVersion": "plait.dev/v1alpha1", "kind": "WorkflowDefinition"}
    assert check_resource(obj)[0].reason == "Required"


def test_validate_raises_a_plait_validation_error_listing_problems() -> None:
    spec = _workflow(_task("a", ["b"]), _task("b", ["a"]))
    obj: dict[str, Any] = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "loop"},
        "spec": spec,
    }
    with pytest.raises(
        ValidationError, match=r"WorkflowDefinition 'loop' is invalid: .*a -> b -> a"
    ):
        validate_resource(obj)
    with pytest.raises(InvalidResourceError) as caught:
        validate_spec("WorkflowDefinition", spec, name="loop")
    assert len(caught.value.problems) == 1
    obj["spec"] = _workflow(_task("a"))
    assert isinstance(validate_resource(obj), WorkflowDefinitionSpec)


# --- properties ------------------------------------------------------------------------------


def _reference_has_cycle(graph: dict[str, list[str]]) -> bool:
    """Plain recursive DFS with colours: the textbook definition to compare against."""
    colour = dict.fromkeys(graph, 0)

    def visit(node: str) -> bool:
        colour[node] = 1
        for dep in graph[node]:
            if dep in graph and (colour[dep] == 1 or (colour[dep] == 0 and visit(dep))):
                return True
        colour[node] = 2
        return False

    return any(colour[n] == 0 and visit(n) for n in graph)


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    size = draw(st.integers(min_value=1, max_value=12))
    names = [f"t{i}" for i in range(size)]
    return {
        name: draw(st.lists(st.sampled_from([*names, "missing"]), max_size=4, unique=True))
        for name in names
    }


@given(graphs())
def test_find_cycle_agrees_with_reference(graph: dict[str, list[str]]) -> None:
    cycle = find_cycle(graph)
    assert (cycle is not None) == _reference_has_cycle(graph)
    if cycle is not None:
        assert cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1  # a simple cycle
        for node, dep in itertools.pairwise(cycle):
            assert dep in graph[node]


@given(graphs())
def test_validator_reports_a_cycle_exactly_when_there_is_one(graph: dict[str, list[str]]) -> None:
    spec = _workflow(*(_task(n, deps) for n, deps in graph.items()))
    messages = _messages(check_spec("WorkflowDefinition", spec))
    real = {n: [d for d in deps if d != n] for n, deps in graph.items()}
    assert any("dependency cycle" in m for m in messages) == _reference_has_cycle(real)


_names = st.sampled_from(["a", "b", "c", "d-e", "A", "", "x" * 70])
_expressions = st.one_of(
    st.sampled_from(
        [
            "true",
            "params.p",
            "tasks.a.outputs.x",
            "tasks['d-e'].outputs",
            "tasks.d-e.outputs",
            "event.data",
            "schedule.time",
            "[1].map(x, x)",
            "1 +",
            "'unterminated",
            "tasks[",
            "params",
        ]
    ),
    st.text(alphabet=string.printable, max_size=30),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_tasks = st.fixed_dictionaries(
    {"name": _names},
    optional={
        "dependencies": st.lists(_names, max_size=3),
        "when": _expressions,
        "inputs": st.dictionaries(st.sampled_from(["i", "j", "bad-key"]), _expressions, max_size=3),
        "template": st.fixed_dictionaries({"image": st.just("busybox")}),
        "taskRef": st.fixed_dictionaries({"name": _names}),
        "waitForEvent": st.fixed_dictionaries(
            {"eventType": st.just("e"), "correlation": _expressions}
        ),
        "timeoutSeconds": st.integers(min_value=-1, max_value=10),
        "bogus": _json,
    },
)
_specs = st.one_of(
    st.tuples(
        st.just("WorkflowDefinition"),
        st.fixed_dictionaries(
            {"tasks": st.lists(_tasks, max_size=6)},
            optional={
                "parameters": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["p", "q", "p-q"])},
                        optional={
                            "type": st.sampled_from(["string", "integer", "weird"]),
                            "default": _json,
                        },
                    ),
                    max_size=3,
                ),
                "outputs": st.dictionaries(st.sampled_from(["o", "p"]), _expressions, max_size=2),
                "onExit": _tasks,
            },
        ),
    ),
    st.tuples(
        st.just("EventTrigger"),
        st.fixed_dictionaries(
            {"workflowRef": st.fixed_dictionaries({"name": _names})},
            optional={
                "eventType": st.just("e"),
                "schedule": st.fixed_dictionaries(
                    {"cron": st.text(alphabet="0123456789*/-, ABCMON@hourly", max_size=20)},
                    optional={"timeZone": st.sampled_from(["UTC", "Nowhere/X", "../etc"])},
                ),
                "filter": _expressions,
                "arguments": st.dictionaries(st.sampled_from(["p", "z"]), _expressions, max_size=2),
            },
        ),
    ),
    st.tuples(
        st.sampled_from(["WorkflowInstance", "Integration", "EventDefinition", "TaskDefinition"]),
        st.dictionaries(
            st.sampled_from(["workflowRef", "arguments", "type", "settings", "schema", "template"]),
            _json,
            max_size=4,
        ),
    ),
    st.tuples(st.just("WorkflowDefinition"), _json),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_specs)
def test_random_specs_never_crash_the_validator(case: tuple[str, Any]) -> None:
    kind, spec = case
    definition = {"parameters": [{"name": "p"}], "tasks": [_task("a")]}
    lookup = _lookup({("WorkflowDefinition", "a"): definition, ("TaskDefinition", "b"): {}})
    problems = check_spec(kind, spec, lookup)
    for problem in problems:
        assert isinstance(problem, Problem)
        assert problem.path.startswith("spec")
        assert problem.message
    if not problems:
        validate_spec(kind, spec, lookup)  # agrees: no exception when nothing is wrong


def test_sub_workflow_calls_are_checked_for_arguments_cycles_and_depth() -> None:
    def calling(callee: str | None, **extra: Any) -> dict[str, Any]:
        tasks = [{"name": "call", "workflowRef": {"name": callee}, **extra}] if callee else []
        return {"tasks": tasks or [_task("leaf")], "parameters": [{"name": "n", "type": "integer"}]}

    defs = {("WorkflowDefinition", "b"): {"spec": calling("a", inputs={"n": "1"})}}
    lookup = ExampleLookup(defs)
    a = {"apiVersion": "plait.dev/v1alpha1", "kind": "WorkflowDefinition",
         "metadata": {"name": "a"}, "spec": calling("b", inputs={"n": "1", "m": "2"})}  # fmt: skip
    assert _messages(check_resource(a, lookup)) == [
        "spec.tasks[0].inputs.m: task 'call': WorkflowDefinition 'b' has no parameter 'm' "
        "(parameters: n)"
    ]
    a["spec"] = calling("b", inputs={"n": "1"})
    assert _messages(check_resource(a, lookup)) == [
        "spec.tasks[0].workflowRef.name: sub-workflow cycle: a -> b -> a"
    ]
    chain = {("WorkflowDefinition", f"d{i}"): {"spec": calling(f"d{i + 1}", inputs={"n": "1"})}
             for i in range(6)}  # fmt: skip
    chain[("WorkflowDefinition", "d6")] = {"spec": calling(None)}
    deep = {**a, "metadata": {"name": "top"}, "spec": calling("d0", inputs={"n": "1"})}
    assert _messages(check_resource(deep, ExampleLookup(chain))) == [
        "spec.tasks[0].workflowRef.name: sub-workflows nest deeper than 5 levels: "
        "top -> d0 -> d1 -> d2 -> d3 -> d4"
    ]
    a["spec"] = calling("b", inputs={"n": "1"}, cache={"key": "inputs.n"})
    assert "a sub-workflow task cannot have cache" in _messages(check_resource(a, lookup))[0]


def test_artifacts_are_refused_where_cache_or_a_fan_out_would_lose_them() -> None:
    produce = {
        "image": "busybox",
        "command": ["make"],
        "outputArtifacts": [{"name": "out", "path": "/tmp/out"}],
    }
    spec = _workflow(
        {"name": "a", "template": produce, "cache": {"key": "'k'"}},
        {"name": "b", "template": produce, "forEach": {"items": [1, 2]}},
        _task(
            "c",
            ["a", "b"],
            inputArtifacts=[{"name": "o", "from": "tasks.b.artifacts.out", "path": "/in/o"}],
        ),
        artifactRepository={"integration": "bucket"},
    )
    messages = _messages(check_spec("WorkflowDefinition", spec))
    assert any("task 'a': a task with outputArtifacts cannot have cache yet" in m for m in messages)
    assert any("task 'b' fans out (forEach)" in m for m in messages), messages
