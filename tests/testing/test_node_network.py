"""The real node's network: kube-proxy's ClusterIPs in pods, the apiserver reaching pods.

The node runs in a network namespace of its own, joined to the host by a veth pair
(:mod:`plait.testing.node`); kube-proxy (nftables) runs there. Only real traffic can pass
these tests: a busybox web server answers through its Service's ClusterIP, the apiserver
reaches it at its pod address, and a pod reaches the apiserver through the ``kubernetes``
Service.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from kubernetes import client

from plait.testing.node import REAL_NODE_NAME, find_node_dir, in_node
from tests.fixtures.kube import Kube, KubeCluster, RealNode

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]


def phase_after(kube: Kube, name: str, leaving: tuple[str, ...], timeout: float = 90) -> str:
    """The pod's phase once it is none of ``leaving``."""
    deadline = time.monotonic() + timeout
    while (phase := kube.core.read_namespaced_pod(name, kube.namespace).status.phase) in leaving:
        assert time.monotonic() < deadline, f"pod {name} still {phase} after {timeout}s"
        time.sleep(0.2)
    return str(phase)


def pod(real_node: RealNode, name: str, script: str, **labels: str) -> client.V1Pod:
    container = client.V1Container(
        name="main",
        image=real_node.busybox,
        image_pull_policy="IfNotPresent",
        command=["sh", "-c", script],
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or None),
        spec=real_node.pod_spec(restart_policy="Never", containers=[container]),
    )


def test_a_clusterip_and_the_pod_address_reach_a_web_server_in_a_pod(
    kube: Kube, real_node: RealNode
) -> None:
    if not real_node.local:
        pytest.skip("the node's network is the local cluster's")
    serve = "mkdir /www && echo served-by-$(hostname) > /www/index.html && httpd -f -p 8080 -h /www"
    kube.core.create_namespaced_pod(kube.namespace, pod(real_node, "web", serve, app="web"))
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(
            selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)]
        ),
    )
    cluster_ip = kube.core.create_namespaced_service(kube.namespace, service).spec.cluster_ip
    assert phase_after(kube, "web", ("Pending",)) == "Running"

    # The apiserver, on the host, reaches the pod at its address (the host's route).
    proxied = kube.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{kube.namespace}/pods/web:8080/proxy/"
    )
    assert proxied == "served-by-web\n"

    # Another pod reaches it through the Service's ClusterIP: kube-proxy's rules.
    # Polled (for up to 30s): kube-proxy writes the rule once the endpoint is published.
    # nc, not wget: busybox's wget crashes in these pods (docs/development.md).
    fetch = (
        f"for i in $(seq 60); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {cluster_ip} 80 "
        "> /tmp/out && tail -n 1 /tmp/out | grep . && exit 0; sleep 0.5; done; exit 1"
    )
    kube.core.create_namespaced_pod(kube.namespace, pod(real_node, "client", fetch))
    phase = phase_after(kube, "client", ("Pending", "Running"))
    log = kube.core.read_namespaced_pod_log("client", kube.namespace)
    assert (phase, log) == ("Succeeded", "served-by-web\n")
    assert kube.core.read_namespaced_pod("client", kube.namespace).spec.node_name == REAL_NODE_NAME


def test_a_pod_reaches_the_apiserver_through_the_kubernetes_service(
    kube: Kube, real_node: RealNode
) -> None:
    """The ClusterIP in KUBERNETES_SERVICE_HOST (what in-cluster clients use) connects."""
    if not real_node.local:
        pytest.skip("the node's network is the local cluster's")
    script = 'nc -w 5 "$KUBERNETES_SERVICE_HOST" "$KUBERNETES_SERVICE_PORT" </dev/null && echo open'
    kube.core.create_namespaced_pod(kube.namespace, pod(real_node, "dial", script))
    assert phase_after(kube, "dial", ("Pending", "Running")) == "Succeeded"
    assert kube.core.read_namespaced_pod_log("dial", kube.namespace) == "open\n"


def test_kube_proxy_rules_live_in_the_node_not_on_the_host(
    kube_cluster: KubeCluster, real_node: RealNode
) -> None:
    """The ``kube-proxy`` nftables table is in the node's namespace: two clusters on one
    machine never share (or remove) each other's rules."""
    if not real_node.local:
        pytest.skip("the node's network is the local cluster's")
    local = kube_cluster.local_cluster
    assert local is not None
    assert local.node_layout is not None
    packages = find_node_dir(progress=False)
    env = {"LD_LIBRARY_PATH": str(packages / "root" / "usr" / "lib" / "x86_64-linux-gnu")}
    binary = str(packages / "root" / "usr" / "sbin" / "nft")
    inside = subprocess.run(
        [*in_node(local.node_layout), binary, "list", "tables"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    assert "table ip kube-proxy" in inside
    host = subprocess.run(
        [binary, "list", "tables"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "kube-proxy" not in host
