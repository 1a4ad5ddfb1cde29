"""The control plane the suite runs against is real: Jobs are scheduled, run and finish.

On the local control plane kwok plays the kubelet and the pod's ``sim.plait.dev/*``
annotations decide its outcome; on a real cluster (kind) the same busybox command does.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client, watch

from plait.testing.cluster import SIMULATION_ANNOTATIONS
from tests.fixtures.kube import Kube

pytestmark = pytest.mark.e2e


def make_job(name: str, *, exit_code: int, message: str) -> client.V1Job:
    script = f"printf '%s' '{message}' > /dev/termination-log; exit {exit_code}"
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(
                    annotations={
                        SIMULATION_ANNOTATIONS["exit_code"]: str(exit_code),
                        SIMULATION_ANNOTATIONS["message"]: message,
                        SIMULATION_ANNOTATIONS["duration"]: "300ms",
                    }
                ),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[
                        client.V1Container(
                            name="main", image="busybox:1.36", command=["sh", "-c", script]
                        )
                    ],
                ),
            ),
        ),
    )


def wait_for_job(kube: Kube, name: str, *, condition: str) -> client.V1Job:
    """Watch the Job until it has ``condition`` (Complete or Failed) set to True."""
    w = watch.Watch()
    for event in w.stream(
        kube.batch.list_namespaced_job,
        kube.namespace,
        field_selector=f"metadata.name={name}",
        timeout_seconds=60,
    ):
        job: client.V1Job = event["object"]
        conditions = {c.type: c.status for c in (job.status.conditions or [])}
        if conditions.get(condition) == "True":
            w.stop()
            return job
    raise AssertionError(f"Job {name} did not reach {condition} within 60s")


def only_pod(kube: Kube, job_name: str) -> client.V1Pod:
    pods = kube.core.list_namespaced_pod(kube.namespace, label_selector=f"job-name={job_name}")
    assert len(pods.items) == 1, [p.metadata.name for p in pods.items]
    return pods.items[0]


def test_job_runs_and_completes_with_the_chosen_message(kube: Kube) -> None:
    outputs = json.dumps({"answer": 42})
    kube.batch.create_namespaced_job(kube.namespace, make_job("ok", exit_code=0, message=outputs))
    job = wait_for_job(kube, "ok", condition="Complete")
    assert job.status.succeeded == 1
    pod = only_pod(kube, "ok")
    assert pod.spec.node_name, "the pod was never scheduled"
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert json.loads(terminated.message) == {"answer": 42}
    # It really was Running in between: it has a start time earlier than its finish.
    assert terminated.started_at <= terminated.finished_at


def test_failed_pod_fails_its_job_with_exit_code_and_message(kube: Kube) -> None:
    kube.batch.create_namespaced_job(
        kube.namespace, make_job("bad", exit_code=3, message="disk full")
    )
    job = wait_for_job(kube, "bad", condition="Failed")
    assert job.status.failed == 1
    assert not job.status.succeeded
    pod = only_pod(kube, "bad")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.message) == (3, "disk full")


def test_namespaces_are_fresh_per_test(kube: Kube) -> None:
    assert kube.batch.list_namespaced_job(kube.namespace).items == []
    assert kube.kubectl("get", "nodes", "-o", "name").strip().startswith("node/")
