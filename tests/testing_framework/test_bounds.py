"""How long the cluster waits for a case's run before it judges it as it stands."""

from __future__ import annotations

from plait.resources.test import TestCase
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.testing_framework.cluster import BOUND_GRACE_SECONDS, case_bound

TASKS = [{"name": "a", "template": {"image": "busybox"}}]


def _bound(expect: dict[str, object], workflow: dict[str, object]) -> float:
    case = TestCase.model_validate({"name": "c", "expect": expect})
    spec = WorkflowDefinitionSpec.model_validate({"tasks": TASKS, **workflow})
    return case_bound(case, spec, 600.0)


def test_a_case_is_bounded_by_its_max_duration_or_its_workflows_timeout() -> None:
    assert BOUND_GRACE_SECONDS == 60.0
    assert _bound({}, {}) == 600.0  # neither: the operator's default
    assert _bound({"maxDurationSeconds": 5}, {}) == 65.0
    assert _bound({}, {"timeoutSeconds": 120}) == 180.0
    assert _bound({"maxDurationSeconds": 30}, {"timeoutSeconds": 10}) == 70.0
    assert _bound({"maxDurationSeconds": 2000}, {"timeoutSeconds": 3600}) == 2060.0  # not capped
