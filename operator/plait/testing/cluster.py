"""A real Kubernetes control plane on loopback, with kwok simulating a node and, on demand,
a real node beside it.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as plain processes
from binaries built by ``hack/build-k8s.sh``; kwok plays the kubelet of one fake node, so
Jobs go through their real lifecycle (scheduled, Running, finished) with no containers.
A pod decides its own outcome through annotations (see ``kwok/pod-complete.yaml``).
With ``real_node=True`` a kubelet with containerd runs real containers on a second node
(see :mod:`plait.testing.node`); it is tainted, so only pods that tolerate it land there.
The node has a network namespace of its own, so the apiserver then listens on the host's
end of the node's link (``LocalCluster.server``) instead of 127.0.0.1, for the kubelet,
kube-proxy and in-cluster clients in pods to reach it.

    cluster = LocalCluster(state_dir=Path(".local/cluster"))
    cluster.start()          # prints progress, returns when the node is Ready
    cluster.kubeconfig       # admin kubeconfig
    cluster.stop()

``python -m plait.testing.cluster up|down|import-image`` drives the same class from the
shell.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from plait.errors import ClusterError
from plait.testing._process import free_port, run_cache_script, stop_process, wait_until
from plait.testing.images import build_node_images, image_cache_dir
from plait.testing.node import (
    NODE_KIND_LABEL,
    REAL_NODE_NAME,
    UNINITIALIZED_TAINT,
    NodeLayout,
    cleanup,
    cni_config,
    containerd_config,
    create_cgroup_root,
    create_network,
    find_node_dir,
    import_images,
    in_node,
    kube_proxy_config,
    kubelet_config,
    sweep_stale_nodes,
    unavailable_reason,
)

__all__ = ["SIMULATION_ANNOTATIONS", "LocalCluster", "find_bin_dir"]

#: Pod annotations read by the kwok stage that finishes Job pods.
SIMULATION_ANNOTATIONS = {
    "exit_code": "sim.plait.dev/exit-code",
    "message": "sim.plait.dev/message",
    "duration": "sim.plait.dev/duration",
}

NODE_NAME = "kwok-node-0"
#: The API server records every request made with a ServiceAccount token, except the control
#: plane's own (kube-system), so a test can compare what a process did with its RBAC rules.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""
_REPO_ROOT = Path(__file__).resolve().parents[3]
_STAGES_DIR = Path(__file__).with_name("kwok")
_COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "containerd",
    "kubelet",
    "kube-proxy",
)


def find_bin_dir(*, progress: bool = True) -> Path:
    """The folder with the Kubernetes binaries: ``PLAIT_K8S_BIN_DIR`` or a (cached) build."""
    configured = os.environ.get("PLAIT_K8S_BIN_DIR")
    if configured:
        return Path(configured)
    script = _REPO_ROOT / "hack" / "build-k8s.sh"
    if not script.exists():
        raise ClusterError(
            "PLAIT_K8S_BIN_DIR is not set and hack/build-k8s.sh is not next to this package: "
            "point PLAIT_K8S_BIN_DIR at a folder with etcd, kube-apiserver, "
            "kube-controller-manager, kube-scheduler, kubectl and kwok"
        )
    return run_cache_script(
        script, progress=progress, failure="building the Kubernetes binaries failed"
    )


@dataclass
class _Ports:
    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    apiserver: int = field(default_factory=free_port)
    controller_manager: int = field(default_factory=free_port)
    scheduler: int = field(default_factory=free_port)
    kwok: int = field(default_factory=free_port)
    kubelet: int = field(default_factory=free_port)
    kubelet_healthz: int = field(default_factory=free_port)


class LocalCluster:
    """One control plane; all of its files (data, certificates, logs) live in ``state_dir``."""

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        bin_dir: Path | None = None,
        progress: bool = True,
        real_node: bool = False,
    ) -> None:
        self._owns_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="plait-cluster-")).resolve()
        self.bin_dir = bin_dir
        self.progress = progress
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.log_dir = self.state_dir / "logs"
        #: JSON lines, one per request made with a ServiceAccount token (``AUDIT_POLICY``).
        self.audit_log = self.log_dir / "audit.log"
        self.ports = _Ports()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started_at = 0.0
        self.real_node = real_node
        #: The real node's folders and names, once it is started.
        self.node_layout: NodeLayout | None = None
        #: Seconds from the real node's first step (containerd) to its Ready condition.
        self.real_node_ready_seconds: float | None = None
        self._node_dir: Path | None = None

    # -- public ----------------------------------------------------------------------------
    @property
    def api_address(self) -> str:
        """Where the apiserver listens: 127.0.0.1, or with a real node the host's end of
        the node's link, the one address the host, the node and its pods all reach."""
        return self.node_layout.host_address if self.node_layout is not None else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.api_address}:{self.ports.apiserver}"

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; with ``check``, a failure raises
        :class:`ClusterError` carrying kubectl's own message."""
        assert self.bin_dir is not None
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def start(self, *, timeout: float = 120.0) -> LocalCluster:
        self._started_at = time.monotonic()
        if self.bin_dir is None:
            self.bin_dir = find_bin_dir(progress=self.progress)
        if self.real_node:
            reason = unavailable_reason(self.bin_dir)
            if reason:
                raise ClusterError(f"cannot start the real node: {reason}")
            self._node_dir = find_node_dir(progress=self.progress)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.real_node:
                self._create_node_network()
            self._write_credentials()
            self._start_etcd(timeout)
            self._start_apiserver(timeout)
            self._start_controllers()
            self._start_kwok()
            self._create_node_and_wait(timeout)
            if self.real_node:
                self._start_real_node(timeout)
        except BaseException:
            self.stop()
            raise
        self._save_pids()
        self._say(f"control plane ready at {self.server} (kubeconfig {self.kubeconfig})")
        return self

    def stop(self) -> None:
        """Stop every process (newest first) and remove the state unless it was given.

        The real node's processes go first (kube-proxy, kubelet, containerd), then the
        control plane; :func:`plait.testing.node.cleanup` then removes the node's containers,
        mounts, cgroups and network. The API server listens on the node's bridge: with the
        bridge gone first, it took 10 s to stop.
        """
        for name in ("kube-proxy", "kubelet", "containerd"):
            if name in self._procs:
                stop_process(self._procs.pop(name))
        for name in reversed(list(self._procs)):
            stop_process(self._procs.pop(name))
        if self.node_layout is not None:
            cleanup(self.node_layout)
            self.node_layout = None
        (self.state_dir / "pids.json").unlink(missing_ok=True)
        if self._owns_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steps -----------------------------------------------------------------------------
    def _write_credentials(self) -> None:
        pki = self.state_dir / "pki"
        pki.mkdir(exist_ok=True)
        self._say("generating the service-account signing key")
        subprocess.run(
            ["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"],
            check=True,
            capture_output=True,
        )
        self.tokens = {
            "admin": secrets.token_hex(16),
            "controller-manager": secrets.token_hex(16),
            "scheduler": secrets.token_hex(16),
        }
        (pki / "tokens.csv").write_text(
            f'{self.tokens["admin"]},admin,admin,"system:masters"\n'
            f"{self.tokens['controller-manager']},system:kube-controller-manager,kcm\n"
            f"{self.tokens['scheduler']},system:kube-scheduler,scheduler\n"
        )
        if self.real_node:
            # The kubelet's own identity: the Node authorizer and NodeRestriction admission
            # limit it to its node and the pods bound to it.
            self.tokens["node"] = secrets.token_hex(16)
            # kube-proxy's: the built-in system:node-proxier binding names this user.
            self.tokens["kube-proxy"] = secrets.token_hex(16)
            with (pki / "tokens.csv").open("a") as tokens:
                user = f"system:node:{REAL_NODE_NAME}"
                tokens.write(f'{self.tokens["node"]},{user},{user},"system:nodes"\n')
                tokens.write(f"{self.tokens['kube-proxy']},system:kube-proxy,kube-proxy\n")
            self._write_kubelet_client_certificate(pki)
        os.chmod(pki / "tokens.csv", 0o600)

    def _write_kubelet_client_certificate(self, pki: Path) -> None:
        """A CA the kubelet trusts and the apiserver's client certificate from it: the
        kubelet serves logs and exec to the apiserver alone."""
        self._say("generating the kubelet client CA and the apiserver's client certificate")

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        openssl(
            "req", "-x509", *ec, "-days", "3650", "-subj", "/CN=plait-kubelet-client-ca",
            "-keyout", str(pki / "kubelet-client-ca.key"),
            "-out", str(pki / "kubelet-client-ca.crt"),
        )  # fmt: skip
        openssl(
            "req", *ec, "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "-keyout", str(pki / "apiserver-kubelet-client.key"),
            "-out", str(pki / "apiserver-kubelet-client.csr"),
        )  # fmt: skip
        openssl(
            "x509", "-req", "-days", "3650", "-in", str(pki / "apiserver-kubelet-client.csr"),
            "-CA", str(pki / "kubelet-client-ca.crt"), "-CAkey", str(pki / "kubelet-client-ca.key"),
            "-CAcreateserial", "-out", str(pki / "apiserver-kubelet-client.crt"),
        )  # fmt: skip

    def _start_etcd(self, timeout: float) -> None:
        p = self.ports
        self._spawn(
            "etcd",
            f"--data-dir={self.state_dir / 'etcd'}",
            "--name=plait",
            f"--listen-client-urls=http://127.0.0.1:{p.etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{p.etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-cluster=plait=http://127.0.0.1:{p.etcd_peer}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{p.etcd_client}/health", timeout=2) as r:
                return bool(json.load(r).get("health") == "true")

        self._wait(healthy, timeout, "etcd")

    def _start_apiserver(self, timeout: float) -> None:
        pki = self.state_dir / "pki"
        (pki / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
            f"--bind-address={self.api_address}",
            # The `kubernetes` Service's endpoint: what kube-proxy sends its ClusterIP to.
            f"--advertise-address={self.api_address}",
            f"--secure-port={self.ports.apiserver}",
            f"--cert-dir={pki}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # The real node's name resolves nowhere; its InternalIP is its link's address.
            "--kubelet-preferred-address-types=InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP",
            *(
                (
                    f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                    f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                    # Webhooks (and aggregated APIs) are called at their pods' addresses,
                    # which the host routes to the node: ClusterIPs work inside the node
                    # only, where kube-proxy runs, and the apiserver is not on it.
                    "--enable-aggregator-routing=true",
                )
                if self.real_node
                else ()
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--profiling=false",
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
            f"--audit-policy-file={pki / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking",
            "--v=0",
        )
        # kube-apiserver writes a self-signed serving certificate (with its CA) on start.
        ca_file = pki / "apiserver.crt"
        self._wait(ca_file.exists, timeout, "kube-apiserver's serving certificate")
        self.ca_file = ca_file

        def ready() -> bool:
            ctx = ssl.create_default_context(cafile=str(ca_file))
            req = urllib.request.Request(
                f"{self.server}/readyz",
                headers={"Authorization": f"Bearer {self.tokens['admin']}"},
            )
            with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
                return bool(r.status == 200)

        self._wait(ready, timeout, "kube-apiserver /readyz")
        self._write_kubeconfig(self.kubeconfig, "admin", self.tokens["admin"])
        self._write_kubeconfig(
            self.state_dir / "controller-manager.kubeconfig",
            "kcm",
            self.tokens["controller-manager"],
        )
        self._write_kubeconfig(
            self.state_dir / "scheduler.kubeconfig", "scheduler", self.tokens["scheduler"]
        )

    def _start_controllers(self) -> None:
        pki = self.state_dir / "pki"
        kcm = self.state_dir / "controller-manager.kubeconfig"
        sched = self.state_dir / "scheduler.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={kcm}",
            f"--authentication-kubeconfig={kcm}",
            f"--authorization-kubeconfig={kcm}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.controller_manager}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={self.ca_file}",
            "--use-service-account-credentials=true",
            "--concurrent-job-syncs=20",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=0",
        )
        self._spawn(
            "kube-scheduler",
            f"--kubeconfig={sched}",
            f"--authentication-kubeconfig={sched}",
            f"--authorization-kubeconfig={sched}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.scheduler}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=0",
        )

    def _start_kwok(self) -> None:
        assert self.bin_dir is not None
        stages = self.bin_dir.parent / "kwok-stages"
        configs = [
            stages / "node" / "fast" / "node-initialize.yaml",
            stages / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml",
            stages / "pod" / "fast" / "pod-ready.yaml",
            stages / "pod" / "fast" / "pod-delete.yaml",
            _STAGES_DIR / "pod-complete.yaml",
        ]
        missing = [str(c) for c in configs if not c.exists()]
        if missing:
            raise ClusterError(
                f"kwok stage files missing (rebuild with hack/build-k8s.sh): {missing}"
            )
        self._spawn(
            "kwok",
            f"--kubeconfig={self.kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{self.ports.kwok}",
            *(f"--config={c}" for c in configs),
        )

    def _create_node_and_wait(self, timeout: float) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    NODE_KIND_LABEL: "kwok",
                },
            },
            "status": {
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
            },
        }
        manifest = self.state_dir / "node.json"
        manifest.write_text(json.dumps(node))
        self.kubectl("apply", "-f", str(manifest))

        def node_ready() -> bool:
            out = self.kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                check=False,
            )
            return out.stdout.strip() == "True"

        self._wait(node_ready, timeout, f"node {NODE_NAME} to be Ready")

        def default_service_account() -> bool:
            return self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0

        self._wait(default_service_account, timeout, "the default ServiceAccount")

    def _create_node_network(self) -> None:
        """The real node's folder and network namespace, before the apiserver, which
        listens on the node's link."""
        swept = sweep_stale_nodes()
        if swept:
            self._say(f"cleaned up after {len(swept)} real node(s) whose owner was killed")
        layout = NodeLayout.new(self.state_dir / "node")
        self.node_layout = layout
        layout.check_socket_paths()
        create_network(layout)
        self._say(f"real node network: {layout.host_address} (host) - {layout.node_address}")

    def _start_real_node(self, timeout: float) -> None:
        """containerd (with the busybox and pause images), then the kubelet; returns when
        the node is Ready with its address set and the uninitialized taint lifted."""
        assert self.bin_dir is not None
        assert self._node_dir is not None
        assert self.node_layout is not None
        started = time.monotonic()
        layout = self.node_layout
        packages = self._node_dir / "root"
        for folder in ("containerd", "cni/net.d", "cni/ipam", "pod-logs", "kubelet/pki"):
            (layout.root / folder).mkdir(parents=True, exist_ok=True)
        config = layout.root / "containerd" / "config.toml"
        config.write_text(containerd_config(layout, self._node_dir))
        (layout.root / "cni" / "net.d" / "10-plait.conflist").write_text(
            json.dumps(cni_config(layout), indent=2)
        )
        create_cgroup_root(layout)
        # containerd finds containerd-shim-runc-v2 on PATH.
        env = {**os.environ, "PATH": f"{packages / 'usr/bin'}:{os.environ.get('PATH', '')}"}
        self._spawn(
            "containerd",
            f"--config={config}",
            executable=packages / "usr" / "bin" / "containerd",
            env=env,
            netns=layout,
        )
        ctr = [str(packages / "usr/bin/ctr"), f"--address={layout.containerd_socket}", "version"]

        def containerd_serves() -> bool:
            return subprocess.run(ctr, capture_output=True, check=False).returncode == 0

        self._wait(containerd_serves, timeout, "containerd")
        images = build_node_images(self._node_dir, self.bin_dir / "pause", image_cache_dir())
        import_images(layout, self._node_dir, images)
        self._say("busybox and pause images imported")
        kubelet_file = layout.root / "kubelet-config.json"
        kubelet_file.write_text(
            json.dumps(
                kubelet_config(
                    layout,
                    port=self.ports.kubelet,
                    healthz_port=self.ports.kubelet_healthz,
                    client_ca=self.state_dir / "pki" / "kubelet-client-ca.crt",
                ),
                indent=2,
            )
        )
        node_kubeconfig = layout.root / "kubelet.kubeconfig"
        self._write_kubeconfig(node_kubeconfig, "node", self.tokens["node"])
        self._spawn(
            "kubelet",
            f"--config={kubelet_file}",
            f"--kubeconfig={node_kubeconfig}",
            f"--root-dir={layout.kubelet_root}",
            f"--cert-dir={layout.kubelet_root / 'pki'}",
            f"--hostname-override={REAL_NODE_NAME}",
            f"--node-labels={NODE_KIND_LABEL}=real",
            # The kubelet then keeps the addresses it is given instead of guessing its own.
            "--cloud-provider=external",
            "--v=1",
            env=env,
            netns=layout,
        )

        def registered() -> bool:
            return self.kubectl("get", "node", REAL_NODE_NAME, check=False).returncode == 0

        self._wait(registered, timeout, f"node {REAL_NODE_NAME} to register")
        # Play the cloud provider: the node's address is its end of the link.
        address = {"status": {"addresses": [
            {"type": "InternalIP", "address": layout.node_address},
            {"type": "Hostname", "address": REAL_NODE_NAME},
        ]}}  # fmt: skip
        self.kubectl(
            "patch", "node", REAL_NODE_NAME, "--subresource=status", "--type=merge",
            "-p", json.dumps(address),
        )  # fmt: skip
        self.kubectl("taint", "node", REAL_NODE_NAME, f"{UNINITIALIZED_TAINT}-", check=False)

        def ready() -> bool:
            out = self.kubectl(
                "get", "node", REAL_NODE_NAME, "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
                "{range .spec.taints[*]} {.key}{end}",
                check=False,
            )  # fmt: skip
            words = out.stdout.split()
            return bool(words) and words[0] == "True" and UNINITIALIZED_TAINT not in words

        self._wait(ready, timeout, f"node {REAL_NODE_NAME} to be Ready")
        self._start_kube_proxy(timeout, env)
        self.real_node_ready_seconds = time.monotonic() - started

    def _start_kube_proxy(self, timeout: float, env: dict[str, str]) -> None:
        """kube-proxy in the node, with the unpacked ``nft`` and its libraries; returns once
        its /healthz, on the node's address, answers 200."""
        assert self._node_dir is not None
        layout = self.node_layout
        assert layout is not None
        packages = self._node_dir / "root"
        kubeconfig = layout.root / "kube-proxy.kubeconfig"
        self._write_kubeconfig(kubeconfig, "kube-proxy", self.tokens["kube-proxy"])
        config = layout.root / "kube-proxy.json"
        config.write_text(json.dumps(kube_proxy_config(layout, kubeconfig=kubeconfig), indent=2))
        libs = [packages / "usr/lib/x86_64-linux-gnu", packages / "lib/x86_64-linux-gnu"]
        proxy_env = {
            **env,
            "PATH": f"{packages / 'usr/sbin'}:{env['PATH']}",
            "LD_LIBRARY_PATH": ":".join(str(p) for p in libs if p.is_dir()),
        }
        self._spawn("kube-proxy", f"--config={config}", "--v=1", env=proxy_env, netns=layout)

        def synced() -> bool:
            url = f"http://{layout.node_address}:10256/healthz"
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)

        self._wait(synced, timeout, "kube-proxy's first sync")

    def import_image(self, *archives: Path) -> None:
        """Import OCI or Docker image archives into the real node (no registry involved)."""
        if self.node_layout is None or self._node_dir is None:
            raise ClusterError("this cluster has no real node (start it with real_node=True)")
        import_images(self.node_layout, self._node_dir, list(archives))

    # -- helpers ---------------------------------------------------------------------------
    def _spawn(
        self,
        name: str,
        *args: str,
        executable: Path | None = None,
        env: dict[str, str] | None = None,
        netns: NodeLayout | None = None,
    ) -> None:
        """Start a component; with ``netns``, in that node's network namespace (nsenter
        enters it and execs the program, so the pid is the program's)."""
        assert self.bin_dir is not None
        self._say(f"starting {name}")
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        prefix = in_node(netns) if netns is not None else []
        self._procs[name] = subprocess.Popen(
            [*prefix, str(executable or self.bin_dir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.state_dir,
            env=env,
        )
        log.close()

    def _wait(self, check: object, timeout: float, what: str) -> None:
        exited: list[str] = []

        def alive_and(check_fn: object = check) -> bool:
            # wait_until swallows the check's exceptions: a dead process ends the wait here.
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                    exited.append(f"{name} exited with code {proc.returncode}:\n{tail}")
                    return True
            return bool(check_fn())  # type: ignore[operator]

        try:
            wait_until(alive_and, timeout=timeout, what=what, interval=0.2)
        except TimeoutError as exc:
            raise ClusterError(f"{exc}; logs are in {self.log_dir}") from None
        if exited:
            raise ClusterError(exited[0])
        self._say(f"{what}: ok")

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "plait-local",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "plait-local",
                    "context": {"cluster": "plait-local", "user": user, "namespace": "default"},
                }
            ],
            "current-context": "plait-local",
        }
        path.write_text(json.dumps(config, indent=2))
        os.chmod(path, 0o600)

    def _save_pids(self) -> None:
        pids = {name: proc.pid for name, proc in self._procs.items()}
        (self.state_dir / "pids.json").write_text(json.dumps(pids))

    def _say(self, message: str) -> None:
        if self.progress:
            elapsed = time.monotonic() - self._started_at
            print(f"[cluster +{elapsed:5.1f}s] {message}", file=sys.stderr, flush=True)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, its parent gone, not yet reaped) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def stop_detached(state_dir: Path) -> bool:
    """Stop a cluster started by ``up`` in another process, from its pid file."""
    pid_file = state_dir / "pids.json"
    if not pid_file.exists():
        return False
    pids: dict[str, int] = json.loads(pid_file.read_text())
    for name in reversed(_COMPONENTS):
        pid = pids.get(name)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink()
    layout = NodeLayout.load(state_dir / "node")
    if layout is not None:
        cleanup(layout)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plait.testing.cluster",
        description="Start or stop a local Kubernetes control plane with a kwok node.",
    )
    parser.add_argument("action", choices=["up", "down", "import-image"])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".local/cluster"),
        help="where data, certificates, logs and the kubeconfig live",
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: also start a real node (kubelet, containerd) beside the kwok node",
    )
    parser.add_argument(
        "archives",
        nargs="*",
        type=Path,
        help="import-image: OCI or Docker image archives (tar) to import into the real node",
    )
    args = parser.parse_intermixed_args(argv)
    state_dir: Path = args.state_dir.resolve()
    if args.action == "import-image":
        layout = NodeLayout.load(state_dir / "node")
        if layout is None or not (state_dir / "pids.json").exists():
            print(
                f"no real node is running from {state_dir}; start one with "
                "'python -m plait.testing.cluster up --real-node'",
                file=sys.stderr,
            )
            return 1
        import_images(layout, find_node_dir(), list(args.archives))
        print(f"imported {' '.join(str(a) for a in args.archives)} into {REAL_NODE_NAME}")
        return 0
    if args.action == "down":
        stopped = stop_detached(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
        print("control plane stopped" if stopped else "no control plane was running")
        return 0
    if (state_dir / "pids.json").exists():
        print(
            f"a control plane is already running from {state_dir}; "
            "stop it first with 'make cluster-down'",
            file=sys.stderr,
        )
        return 1
    shutil.rmtree(state_dir, ignore_errors=True)
    cluster = LocalCluster(state_dir=state_dir, real_node=args.real_node).start()
    if cluster.node_layout is not None:
        cluster.node_layout.save(owner=None)  # left running on purpose, until 'down'

    print(f"export KUBECONFIG={state_dir / 'kubeconfig'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
