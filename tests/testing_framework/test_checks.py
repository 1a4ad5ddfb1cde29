"""The checks of a WorkflowTest against its workflow and triggers (what the webhook runs)."""

from __future__ import annotations

from typing import Any

from plait.resources.validation import check_resource, references
from tests.resources.helpers import ExampleLookup, load_examples


def _test(
    case: dict[str, Any], workflow: str = "diamond", version: int | None = None
) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": workflow}
    if version is not None:
        ref["version"] = version
    return {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowTest",
        "metadata": {"name": "t"},
        "spec": {"workflowRef": ref, "cases": [{"name": "a", **case}]},
    }


def _messages(obj: dict[str, Any]) -> list[str]:
    return [str(p) for p in check_resource(obj, ExampleLookup(load_examples()))]


def test_a_trigger_must_start_the_workflow_under_test_on_events() -> None:
    examples = load_examples()
    other = dict(examples[("EventTrigger", "on-large-order")])
    other = {**other, "metadata": {"name": "elsewhere"}}
    other["spec"] = {**other["spec"], "workflowRef": {"name": "fanout"}}
    examples[("EventTrigger", "elsewhere")] = other
    lookup = ExampleLookup(examples)
    bad = _test({"trigger": {"eventTrigger": "elsewhere"}, "arguments": {"message": "x"}})
    assert [str(p) for p in check_resource(bad, lookup)] == [
        "spec.cases[0].arguments: a case with a trigger takes its arguments from the trigger: "
        "leave arguments empty",
        "spec.cases[0].trigger.eventTrigger: EventTrigger 'elsewhere' starts WorkflowDefinition "
        "'fanout', not 'diamond'",
    ]
    assert references("WorkflowTest", bad["spec"]) == {
        ("WorkflowDefinition", "diamond"),
        ("EventTrigger", "elsewhere"),
    }


def test_arguments_events_and_duplicate_cases_are_checked() -> None:
    obj = _test(
        {
            "arguments": {"mesage": "x", "repeat": "two"},
            "events": [{"type": "com.example.nobody.waits"}],
        }
    )
    obj["spec"]["cases"].append({"name": "a"})
    assert _messages(obj) == [
        "spec.cases[0].arguments.mesage: unknown parameter (parameters: message, repeat)",
        "spec.cases[0].arguments.repeat: repeat must be of type integer, got string",
        "spec.cases[0].events[0].type: no task of WorkflowDefinition 'diamond' waits for events "
        "of type 'com.example.nobody.waits' (types waited for: none)",
        "spec.cases[1].name: case 'a' is defined twice",
    ]


def test_a_pinned_version_is_checked_for_its_cel_only() -> None:
    obj = _test({"mocks": {"ghost": {}}, "expect": {"assertions": ["nope.x"]}}, version=3)
    assert references("WorkflowTest", obj["spec"]) == set()
    assert _messages(obj) == [
        "spec.cases[0].expect.assertions[0]: assertion: unknown variable 'nope' "
        "(available: params, tasks, workflow)"
    ]
