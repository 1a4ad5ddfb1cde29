"""The models parse specs as Kopf hands them over, and agree with the CRDs' CEL rules."""

from __future__ import annotations

import itertools
from typing import Any

import pydantic
import pytest

from plait.kernel import expressions
from plait.resources import (
    WORKFLOW_INSTANCE,
    Backoff,
    EnvVar,
    EventTriggerSpec,
    Task,
    WorkflowDefinitionSpec,
    WorkflowInstanceSpec,
    WorkflowInstanceStatus,
)
from plait.resources.crd import model_schema
from plait.resources.validation import check_instance_update
from plait.resources.workflow import MAX_TASKS


def _rules(model: type[pydantic.BaseModel]) -> list[str]:
    return [r["rule"] for r in model_schema(model).get("x-kubernetes-validations", [])]  # type: ignore[arg-type]


def _cel_accepts(rules: list[str], **variables: Any) -> bool:
    return all(expressions.evaluate(expressions.compile(rule), variables) is True for rule in rules)


def _pydantic_accepts(model: type[pydantic.BaseModel], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except pydantic.ValidationError:
        return False
    return True


def _task(name: str = "a", **fields: Any) -> dict[str, Any]:
    return {"name": name, "template": {"image": "busybox"}, **fields}


def test_spec_parses_camel_case_and_exposes_snake_case() -> None:
    spec = WorkflowDefinitionSpec.model_validate(
        {
            "tasks": [
                {
                    "name": "a",
                    "waitForEvent": {"eventType": "x", "correlation": "true"},
                    "timeoutSeconds": 5,
                }
            ],
            "onExit": _task("done"),
        }
    )
    assert spec.tasks[0].wait_for_event is not None
    assert spec.tasks[0].timeout_seconds == 5
    assert spec.on_exit is not None
    assert spec.on_exit.name == "done"
    wire = spec.to_dict()
    assert wire["tasks"][0]["waitForEvent"]["eventType"] == "x"
    assert "onExit" in wire
    assert "description" not in wire
    # Python code may build models with snake_case names.
    assert Task(name="b", template={"image": "x"}).template is not None  # type: ignore[arg-type]


def test_status_parses_what_the_reconciler_writes() -> None:
    status = WorkflowInstanceStatus.model_validate(
        {
            "phase": "Failed",
            "progress": "3/5",
            "counts": {"total": 5, "succeeded": 3, "failed": 1, "skipped": 1},
            "definitionVersion": 2,
            "startTime": "2025-01-01T00:00:00Z",
            "completionTime": "2025-01-01T00:01:23Z",
            "duration": "1m23s",
            "failure": {"task": "b", "attempt": 3, "exitCode": 1, "message": "boom"},
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "TaskFailed",
                    "message": "task b failed",
                    "lastTransitionTime": "2025-01-01T00:01:23Z",
                    "observedGeneration": 1,
                }
            ],
        }
    )
    assert status.failure is not None
    assert status.failure.exit_code == 1
    assert status.to_dict()["conditions"][0]["lastTransitionTime"] == "2025-01-01T00:01:23Z"


def test_five_thousand_tasks_are_allowed_and_no_more() -> None:
    tasks = [_task(f"t{i}") for i in range(MAX_TASKS)]
    assert len(WorkflowDefinitionSpec.model_validate({"tasks": tasks}).tasks) == 5000
    assert not _pydantic_accepts(WorkflowDefinitionSpec, {"tasks": [*tasks, _task("extra")]})


def test_strings_and_maps_are_bounded() -> None:
    assert not _pydantic_accepts(WorkflowDefinitionSpec, {"tasks": [_task(when="x" * 5000)]})
    inputs = {f"i{n}": "1" for n in range(129)}
    assert not _pydantic_accepts(WorkflowDefinitionSpec, {"tasks": [_task(inputs=inputs)]})
    assert not _pydantic_accepts(WorkflowDefinitionSpec, {"tasks": [_task(name="A")]})
    assert not _pydantic_accepts(WorkflowDefinitionSpec, {"tasks": [_task(bogus=1)]})


@pytest.mark.parametrize(
    "present", list(itertools.product([False, True], repeat=3)), ids=lambda p: str(p)
)
def test_task_kind_rule_agrees_with_model(present: tuple[bool, bool, bool]) -> None:
    kinds = {
        "taskRef": {"name": "t"},
        "template": {"image": "busybox"},
        "waitForEvent": {"eventType": "e", "correlation": "true"},
    }
    data = {"name": "a", **{k: v for (k, v), on in zip(kinds.items(), present, strict=True) if on}}
    expected = sum(present) == 1
    assert _pydantic_accepts(Task, data) is expected
    assert _cel_accepts(_rules(Task), self=data) is expected


@pytest.mark.parametrize(
    "present", list(itertools.product([False, True], repeat=3)), ids=lambda p: str(p)
)
def test_trigger_rules_agree_with_model(present: tuple[bool, bool, bool]) -> None:
    has_event, has_schedule, has_filter = present
    data: dict[str, Any] = {"workflowRef": {"name": "w"}}
    if has_event:
        data["eventType"] = "e"
    if has_schedule:
        data["schedule"] = {"cron": "@daily"}
    if has_filter:
        data["filter"] = "true"
    expected = has_event != has_schedule and (not has_filter or has_event)
    assert _pydantic_accepts(EventTriggerSpec, data) is expected
    assert _cel_accepts(_rules(EventTriggerSpec), self=data) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "A", "value": "1"}, True),
        ({"name": "A", "secretKeyRef": {"name": "s", "key": "k"}}, True),
        ({"name": "A"}, True),
        ({"name": "A", "value": "1", "secretKeyRef": {"name": "s", "key": "k"}}, False),
    ],
)
def test_env_rule_agrees_with_model(data: dict[str, Any], expected: bool) -> None:
    assert _pydantic_accepts(EnvVar, data) is expected
    assert _cel_accepts(_rules(EnvVar), self=data) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"initialSeconds": 5, "maxSeconds": 10}, True),
        ({"initialSeconds": 50, "maxSeconds": 10}, False),
    ],
)
def test_backoff_rule_agrees_with_model(data: dict[str, Any], expected: bool) -> None:
    assert _pydantic_accepts(Backoff, data) is expected
    assert _cel_accepts(_rules(Backoff), self=data) is expected


@pytest.mark.parametrize(
    ("on_exit", "expected"),
    [(_task("done"), True), (_task("done", dependencies=["a"]), False), (_task("a"), False)],
)
def test_exit_task_rules_agree_with_model(on_exit: dict[str, Any], expected: bool) -> None:
    data = {"tasks": [_task("a")], "onExit": on_exit}
    assert _pydantic_accepts(WorkflowDefinitionSpec, data) is expected
    assert _cel_accepts(_rules(WorkflowDefinitionSpec), self=data) is expected


def test_input_key_rule_agrees_with_model() -> None:
    schema = model_schema(Task)["properties"]["inputs"]
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    # The CRD checks key length only (a regex per key is too costly for the apiserver);
    # the model also checks the pattern.
    for key, in_cel, in_model in [
        ("ok_name", True, True),
        ("x" * 64, False, False),
        ("not-ok", True, False),
    ]:
        assert _pydantic_accepts(Task, _task(inputs={key: "1"})) is in_model
        assert _cel_accepts(rules, self={key: "1"}) is in_cel


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({"cancel": False}, {"cancel": True}, True),
        ({"cancel": True}, {"cancel": False}, False),
        ({"cancel": True}, {"cancel": True, "suspend": True}, True),
        ({}, {"workflowRef": {"name": "other"}}, False),
        ({}, {"workflowRef": {"name": "w", "version": 2}}, False),
        ({"suspend": True}, {"suspend": False}, True),
    ],
)
def test_instance_transition_rules_agree_with_update_check(
    old: dict[str, Any], new: dict[str, Any], expected: bool
) -> None:
    base = {"workflowRef": {"name": "w"}, "cancel": False, "suspend": False}
    old_spec, new_spec = {**base, **old}, {**base, **new}
    cel_ok = _cel_accepts(_rules(WorkflowInstanceSpec), self=new_spec, oldSelf=old_spec)
    python_ok = not check_instance_update(
        WorkflowInstanceSpec.model_validate(old_spec), WorkflowInstanceSpec.model_validate(new_spec)
    )
    assert cel_ok is expected
    assert python_ok is expected


def test_instance_name_rule() -> None:
    rules = [str(r["rule"]) for r in WORKFLOW_INSTANCE.root_validations]
    assert _cel_accepts(rules, self={"metadata": {"name": "a" * 63}})
    assert not _cel_accepts(rules, self={"metadata": {"name": "a" * 64}})
