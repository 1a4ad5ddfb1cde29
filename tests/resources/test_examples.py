"""Every example under examples/ is a valid resource users can apply as is."""

from __future__ import annotations

import copy
from typing import Any

from plait.resources import KINDS, KINDS_BY_NAME, WorkflowDefinitionSpec
from plait.resources.validation import check_resource, references, validate_resource
from tests.resources.helpers import ExampleLookup


def test_every_kind_has_an_example(examples: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = {kind for kind, _ in examples}
    assert kinds == {k.kind for k in KINDS}


def test_examples_parse_and_pass_validation(
    examples: dict[tuple[str, str], dict[str, Any]], lookup: ExampleLookup
) -> None:
    for (kind, name), obj in examples.items():
        assert check_resource(obj, lookup) == [], f"{kind}/{name}"
        spec = validate_resource(obj, lookup)
        assert isinstance(spec, KINDS_BY_NAME[kind].spec)
        # The wire form of the parsed model is what was written (modulo defaults).
        again = type(spec).model_validate(spec.to_dict())
        assert again == spec


def test_examples_refer_to_each_other(
    examples: dict[tuple[str, str], dict[str, Any]], lookup: ExampleLookup
) -> None:
    """The cross-references are resolved, not skipped: every referenced object was asked for."""
    for (kind, _), obj in examples.items():
        lookup.asked.clear()
        check_resource(obj, lookup)
        assert set(lookup.asked) == references(kind, obj["spec"])
    diamond = examples[("WorkflowDefinition", "diamond")]
    assert references("WorkflowDefinition", diamond["spec"]) == {
        ("TaskDefinition", "echo"),
        ("Integration", "notifier"),
    }


def test_diamond_is_a_diamond(examples: dict[tuple[str, str], dict[str, Any]]) -> None:
    spec = WorkflowDefinitionSpec.model_validate(
        examples[("WorkflowDefinition", "diamond")]["spec"]
    )
    deps = {t.name: set(t.dependencies) for t in spec.tasks}
    assert deps == {
        "split": set(),
        "left": {"split"},
        "right": {"split"},
        "join": {"left", "right"},
    }
    assert spec.parameters
    assert spec.outputs
    assert spec.on_exit is not None
    assert all(t.inputs for t in spec.tasks)


def test_example_with_a_missing_reference_is_reported(
    examples: dict[tuple[str, str], dict[str, Any]], lookup: ExampleLookup
) -> None:
    instance = copy.deepcopy(examples[("WorkflowInstance", "diamond-run-1")])
    instance["spec"]["workflowRef"]["name"] = "nope"
    [problem] = check_resource(instance, lookup)
    assert problem.reason == "NotFound"
    assert problem.path == "spec.workflowRef.name"
