"""A real node runs real containers: busybox's own exit code, termination message and logs.

On the local control plane these pods land on ``real-node-0`` (kubelet, containerd, runc)
through its label and toleration, while pods without them stay on the kwok node; on an
existing cluster (kind) the cluster's nodes run them. No ``sim.plait.dev/*`` annotation is
set anywhere here: only a real process can produce what the tests read.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from plait.testing import cluster as cluster_cli
from plait.testing import images
from plait.testing.cluster import NODE_NAME, LocalCluster, stop_detached
from plait.testing.node import (
    NODE_KIND_LABEL,
    POD_SUBNET,
    REAL_NODE_NAME,
    REAL_NODE_TAINT,
    NodeLayout,
    find_node_dir,
    leftovers,
    sweep_stale_nodes,
)
from tests.fixtures.kube import Kube, KubeCluster, RealNode

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

READY_DEADLINE = 60.0


def busybox_job(name: str, real_node: RealNode, script: str) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=real_node.pod_spec(
                    restart_policy="Never",
                    containers=[
                        client.V1Container(
                            name="main",
                            image=real_node.busybox,
                            image_pull_policy="IfNotPresent",
                            command=["sh", "-c", script],
                        )
                    ],
                )
            ),
        ),
    )


def wait_for_job(kube: Kube, name: str, condition: str, timeout: int = 90) -> client.V1Job:
    w = watch.Watch()
    for event in w.stream(
        kube.batch.list_namespaced_job,
        kube.namespace,
        field_selector=f"metadata.name={name}",
        timeout_seconds=timeout,
    ):
        job: client.V1Job = event["object"]
        if any(c.type == condition and c.status == "True" for c in job.status.conditions or []):
            w.stop()
            return job
    pods = kube.core.list_namespaced_pod(kube.namespace, label_selector=f"job-name={name}")
    raise AssertionError(f"Job {name} not {condition} in {timeout}s: {pods.items}")


def test_busybox_exit_code_message_and_logs_come_from_the_process(
    kube: Kube, real_node: RealNode
) -> None:
    script = 'echo "hello from $(hostname)"; printf \'{"x":1}\' > /dev/termination-log; exit 3'
    kube.batch.create_namespaced_job(kube.namespace, busybox_job("real", real_node, script))
    job = wait_for_job(kube, "real", "Failed")
    assert job.status.failed == 1
    (pod,) = kube.core.list_namespaced_pod(kube.namespace, label_selector="job-name=real").items
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert json.loads(terminated.message) == {"x": 1}
    log = kube.core.read_namespaced_pod_log(pod.metadata.name, kube.namespace)
    assert log == f"hello from {pod.metadata.name}\n"
    if real_node.local:
        assert pod.spec.node_name == REAL_NODE_NAME
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_SUBNET)


def run_pod(kube: Kube, real_node: RealNode, name: str, image: str, *command: str) -> None:
    """Create a pod on the real node and wait until it runs or has finished."""
    container = client.V1Container(
        name="main", image=image, image_pull_policy="IfNotPresent", command=list(command) or None
    )
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=real_node.pod_spec(restart_policy="Never", containers=[container]),
    )
    kube.core.create_namespaced_pod(kube.namespace, pod)
    deadline = time.monotonic() + 90
    while kube.core.read_namespaced_pod(name, kube.namespace).status.phase == "Pending":
        assert time.monotonic() < deadline, f"pod {name} still Pending after 90s"
        time.sleep(0.2)


def test_exec_reaches_the_container(kube: Kube, real_node: RealNode) -> None:
    run_pod(kube, real_node, "shell", real_node.busybox, "sleep", "300")
    assert kube.kubectl("exec", "shell", "--", "sh", "-c", "echo $((6 * 7))") == "42\n"


def test_own_image_packed_and_imported_with_the_documented_commands(
    kube: Kube, kube_cluster: KubeCluster, real_node: RealNode, tmp_path: Path
) -> None:
    """``python -m plait.testing.images pack`` and ``... cluster import-image``."""
    if not real_node.local:
        pytest.skip("import-image is the local cluster's")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    shutil.copy(find_node_dir(progress=False) / "root" / "bin" / "busybox", rootfs / "busybox")
    archive = tmp_path / "tool.tar"
    name = "example.com/plait-test/tool:1"
    args = ["pack", str(rootfs), "--name", name, "--entrypoint", "/busybox", "echo"]
    assert images.main([*args, "--cmd", "own image", "-o", str(archive)]) == 0
    state = kube_cluster.kubeconfig.parent
    assert cluster_cli.main(["import-image", "--state-dir", str(state), str(archive)]) == 0
    run_pod(kube, real_node, "own", name)
    deadline = time.monotonic() + 60
    while (phase := kube.core.read_namespaced_pod("own", kube.namespace).status.phase) in (
        "Pending",
        "Running",
    ):
        assert time.monotonic() < deadline, "the pod never finished"
        time.sleep(0.2)
    assert phase == "Succeeded"
    assert kube.core.read_namespaced_pod_log("own", kube.namespace) == "own image\n"


def test_pods_without_the_toleration_stay_on_kwok(kube: Kube, real_node: RealNode) -> None:
    if not real_node.local:
        pytest.skip("an existing cluster has no kwok node")
    job = busybox_job("simulated", real_node, "exit 0")
    job.spec.template.spec.node_selector = None
    job.spec.template.spec.tolerations = None
    kube.batch.create_namespaced_job(kube.namespace, job)
    wait_for_job(kube, "simulated", "Complete")
    (pod,) = kube.core.list_namespaced_pod(
        kube.namespace, label_selector="job-name=simulated"
    ).items
    assert pod.spec.node_name == NODE_NAME


def test_nodes_are_labelled_and_the_real_one_is_tainted(
    kube_cluster: KubeCluster, real_node: RealNode
) -> None:
    if not real_node.local:
        pytest.skip("the labels are the local cluster's")
    core = client.CoreV1Api(kube_cluster.api)
    real = core.read_node(REAL_NODE_NAME)
    assert real.metadata.labels[NODE_KIND_LABEL] == "real"
    assert {"Ready": "True"}.items() <= {c.type: c.status for c in real.status.conditions}.items()
    assert [(t.key, t.value, t.effect) for t in real.spec.taints] == [
        tuple(REAL_NODE_TAINT.values())
    ]
    assert core.read_node(NODE_NAME).metadata.labels[NODE_KIND_LABEL] == "kwok"
    assert kube_cluster.local_cluster is not None
    ready = kube_cluster.local_cluster.real_node_ready_seconds
    assert ready is not None
    assert ready < READY_DEADLINE


def test_the_kubelet_is_confined_to_its_own_node(
    kube_cluster: KubeCluster, real_node: RealNode
) -> None:
    """The kubelet's own token: the Node authorizer and NodeRestriction let it write its
    own node, not another; it cannot list Secrets either."""
    if not real_node.local:
        pytest.skip("the node identity is the local cluster's")
    local = kube_cluster.local_cluster
    assert local is not None
    assert local.node_layout is not None
    node_config = local.node_layout.root / "kubelet.kubeconfig"
    assert local.tokens["admin"] not in node_config.read_text()
    api = config.new_client_from_config(config_file=str(node_config))
    try:
        core = client.CoreV1Api(api)
        label = {"metadata": {"labels": {"plait.dev/probe": "x"}}}
        core.patch_node(REAL_NODE_NAME, label)
        with pytest.raises(ApiException) as denied:
            core.patch_node(NODE_NAME, label)
        assert denied.value.status == 403
        with pytest.raises(ApiException) as secrets:
            core.list_secret_for_all_namespaces()
        assert secrets.value.status == 403
    finally:
        client.CoreV1Api(kube_cluster.api).patch_node(
            REAL_NODE_NAME, {"metadata": {"labels": {"plait.dev/probe": None}}}
        )
        api.close()


def cgroup_tops() -> set[Path]:
    mounts = [Path(p) for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()]
    return {child for m in mounts for child in m.iterdir() if child.is_dir()}


def test_teardown_leaves_no_process_mount_cgroup_or_bridge(
    kube_cluster: KubeCluster, real_node: RealNode
) -> None:
    """A second cluster with a container still running when it stops."""
    if not real_node.local:
        pytest.skip("teardown is the local cluster's")
    # A short path: pytest's tmp_path is too long for the node's unix sockets.
    state = Path(tempfile.mkdtemp(prefix="plait-teardown-"))
    top_cgroups = cgroup_tops()
    cluster = LocalCluster(state_dir=state, bin_dir=kube_cluster.bin_dir, real_node=True)
    cluster.start()
    try:
        layout = cluster.node_layout
        assert layout is not None
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        core = client.CoreV1Api(api)
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name="sleeper"),
            spec=real_node.pod_spec(
                containers=[
                    client.V1Container(
                        name="main",
                        image=real_node.busybox,
                        image_pull_policy="IfNotPresent",
                        command=["sleep", "3600"],
                    )
                ]
            ),
        )
        core.create_namespaced_pod("default", pod)
        deadline = time.monotonic() + 60
        while core.read_namespaced_pod("sleeper", "default").status.phase != "Running":
            assert time.monotonic() < deadline, "the sleeper never ran"
            time.sleep(0.2)
        api.close()
        running = leftovers(layout)
        assert any("sleep 3600" in item for item in running), running
        assert any(item.startswith("mount ") for item in running), running
        assert any(item.startswith("cgroup ") for item in running), running
        assert f"bridge {layout.bridge}" in running
        assert f"link {layout.host_link}" in running
        assert f"mount {layout.netns}" in running  # the node's network namespace
    finally:
        cluster.stop()
    try:
        assert leftovers(layout) == []
        # Nothing new at a hierarchy's top (kubepods, k8s.io), but other clusters' roots.
        new_tops = cgroup_tops() - top_cgroups
        assert {p for p in new_tops if not p.name.startswith("plait-")} == set()
        assert NodeLayout.load(state / "node") == layout
        assert not Path(f"/sys/class/net/{layout.bridge}").exists()
        routes = subprocess.run(
            ["ip", "route", "show", layout.pod_subnet], capture_output=True, text=True, check=True
        )
        assert routes.stdout == ""
    finally:
        shutil.rmtree(state)


OWNER = """
import sys, time
from pathlib import Path
from plait.testing.cluster import LocalCluster
cluster = LocalCluster(state_dir=Path(sys.argv[1]), bin_dir=Path(sys.argv[2]), real_node=True)
cluster.start()
print("ready", flush=True)
time.sleep(600)
"""


def test_a_node_whose_owner_was_killed_is_cleaned_up_by_the_sweep(
    kube_cluster: KubeCluster, real_node: RealNode
) -> None:
    """A test session killed with SIGKILL cannot stop its node; the next real node's start
    (``sweep_stale_nodes``) removes it: kubelet, containerd, mounts, cgroups, bridge."""
    if not real_node.local:
        pytest.skip("the sweep is the local cluster's")
    state = Path(tempfile.mkdtemp(prefix="plait-killed-"))
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(state), str(kube_cluster.bin_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline() == "ready\n"
        layout = NodeLayout.load(state / "node")
        assert layout is not None
        assert any("kubelet" in item for item in leftovers(layout))
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert layout in sweep_stale_nodes()
        assert leftovers(layout) == []
        assert layout not in sweep_stale_nodes()  # once only
    finally:
        owner.kill()
        owner.wait()
        stop_detached(state)  # the orphaned control plane
        shutil.rmtree(state, ignore_errors=True)
