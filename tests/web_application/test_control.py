"""The dashboard's run actions against the real API server: an action on a run whose
status the operator writes at the same moment (as it does while a new run starts) is
applied on the run as it then is, not answered with an error."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from plait import API_GROUP, API_VERSION
from plait.web_application.control import ActionRefused, RunControl
from tests.fixtures.kube import Kube, KubeCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def run(kube: Kube, plait_crds: KubeCluster) -> str:
    body = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "WorkflowInstance",
        "metadata": {"name": "busy"},
        "spec": {"workflowRef": {"name": "shop"}, "retry": 1},
    }
    api = client.CustomObjectsApi(kube.api)
    api.create_namespaced_custom_object(
        API_GROUP, API_VERSION, kube.namespace, "workflowinstances", body
    )
    api.patch_namespaced_custom_object_status(
        API_GROUP, API_VERSION, kube.namespace, "workflowinstances", "busy",
        {"status": {"phase": "Failed"}},
    )  # fmt: skip
    return "busy"


def _write_status_after_each_read(
    monkeypatch: pytest.MonkeyPatch, kube: Kube, times: int
) -> list[int]:
    """Have the run's status written (as the operator does) right after each of the
    dashboard's first ``times`` reads, so the patch made on that read conflicts."""
    read = client.CustomObjectsApi.get_namespaced_custom_object
    writes: list[int] = []

    def read_then_status_written(self: Any, *args: Any, **kwargs: Any) -> Any:
        obj = read(self, *args, **kwargs)
        if len(writes) < times:
            writes.append(len(writes))
            client.CustomObjectsApi(kube.api).patch_namespaced_custom_object_status(
                API_GROUP,
                API_VERSION,
                kube.namespace,
                "workflowinstances",
                obj["metadata"]["name"],
                {"status": {"progress": f"{len(writes)}/100"}},
            )
        return obj

    monkeypatch.setattr(
        client.CustomObjectsApi, "get_namespaced_custom_object", read_then_status_written
    )
    return writes


def test_an_action_on_a_run_written_meanwhile_reads_it_again(
    kube: Kube, run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _write_status_after_each_read(monkeypatch, kube, times=2)
    control = RunControl({"KUBECONFIG": str(kube.cluster.kubeconfig)})
    try:
        assert control._apply(kube.namespace, run, "retry", "ada") == "retry requested"
    finally:
        control.close()
    assert len(writes) == 2  # two reads were overtaken; the third one's patch held
    obj = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
        API_GROUP, API_VERSION, kube.namespace, "workflowinstances", run
    )
    assert obj["spec"]["retry"] == 2  # counted once, from what the last read saw
    assert obj["metadata"]["annotations"][f"{API_GROUP}/last-action"] == "retry by ada"


def test_a_run_that_keeps_changing_is_refused_with_the_reason(
    kube: Kube, run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_status_after_each_read(monkeypatch, kube, times=100)
    control = RunControl({"KUBECONFIG": str(kube.cluster.kubeconfig)})
    try:
        with pytest.raises(ActionRefused, match="kept changing"):
            control._apply(kube.namespace, run, "retry", "ada")
    finally:
        control.close()
    obj = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
        API_GROUP, API_VERSION, kube.namespace, "workflowinstances", run
    )
    assert obj["spec"]["retry"] == 1
