"""Random WorkflowDefinitions through the real API server, webhook and operator.

Whatever hypothesis generates (cycles, dangling dependencies, bad names, broken CEL), the
outcome must be one of two: refused by `kubectl apply` with a message naming a spec field,
or accepted and then Ready=True. And the two must agree with Plait's own validator.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from plait.resources.validation import check_spec
from plait.testing._process import wait_until
from tests.controller.test_operator import condition, get
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator

pytestmark = pytest.mark.e2e

NAMES = ["a", "b", "c", "d", "Bad_Name", "e"]
WHEN = [None, "true", "params.n > 1", "params.n >", "tasks.a.outputs.x == 1", "nope(("]


@st.composite
def workflow_specs(draw: st.DrawFn) -> dict[str, object]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    tasks = []
    for name in names:
        deps = draw(st.lists(st.sampled_from([*NAMES, "ghost"]), max_size=2, unique=True))
        task: dict[str, object] = {"name": name, "template": {"image": "busybox"}}
        if deps:
            task["dependencies"] = deps
        when = draw(st.sampled_from(WHEN))
        if when is not None:
            task["when"] = when
        tasks.append(task)
    return {"parameters": [{"name": "n", "type": "integer", "default": 1}], "tasks": tasks}


_names = itertools.count()


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube, start_operator: StartOperator) -> Iterator[Kube]:
    """The test's namespace with an operator serving the webhook (hypothesis runs every
    example inside one call of the test, so this is set up once for all of them)."""
    start_operator(webhook=True)
    yield kube
    kube.cluster.kubectl(
        "delete", "validatingwebhookconfiguration", "plait.dev", "--ignore-not-found"
    )


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(spec=workflow_specs())
def test_random_definitions_are_refused_precisely_or_become_ready(
    cluster: Kube, spec: dict[str, object]
) -> None:
    name = f"random-{next(_names)}"
    manifest = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": name},
        "spec": spec,
    }
    expected = check_spec("WorkflowDefinition", spec)
    proc = cluster.run_kubectl("create", "-f", "-", input=json.dumps(manifest))
    if proc.returncode != 0:
        event(
            "refused by the webhook"
            if "denied the request" in proc.stderr
            else "refused by the schema"
        )
        assert expected, f"refused although Plait finds nothing wrong: {proc.stderr}"
        assert "spec." in proc.stderr, proc.stderr
        if "denied the request" in proc.stderr:  # the webhook, not the schema, refused it
            assert str(expected[0]) in proc.stderr
        assert cluster.run_kubectl("get", "wfd", name).returncode != 0
        return
    event("accepted")
    assert not expected, f"accepted although Plait finds: {expected}"
    wait_until(
        lambda: condition(get(cluster, "wfd", name), "Ready").get("status") == "True",
        timeout=30,
        what=f"{name} Ready",
    )
