"""The local cluster's real node: a kubelet with containerd, runc, the CNI bridge plugin
and kube-proxy, in a network namespace of its own.

:class:`~plait.testing.cluster.LocalCluster` (``real_node=True``) starts it beside the kwok
node. Its parts come from two caches: the kubelet and the pause program from
``hack/build-k8s.sh`` (the same module set as the control plane), containerd, runc, the
CNI plugins and busybox from Debian's packages, unpacked (not installed) by
``hack/node-packages.sh``. Everything it writes lives under ``<cluster state>/node/``,
except what the kubelet and containerd 1.6 hard-code, which :func:`cleanup` removes (and
:func:`sweep_stale_nodes`, for a node whose owner process was killed):

- its cgroups, under a root of its own (``/plait-<id>`` in every cgroup hierarchy, so two
  clusters on one machine never share ``kubepods``),
- the shim sockets in ``/run/containerd/s``,
  the CNI result cache in ``/var/lib/cni/results``, the log links in
  ``/var/log/containers``, and the host's end of the node's link, ``plaiv<id>``.

The node is a machine of its own on the network: containerd, the kubelet and kube-proxy
run in a network namespace bound to ``<node>/netns`` (so the pods' bridge ``plait<id>``
and kube-proxy's nftables rules live there, and two clusters on one machine never share
them), joined to the host by a veth pair: the host's end is 10.245.<n>.1/30, where the
apiserver listens, the node's ``eth0`` is 10.245.<n>.2/30, its InternalIP. Its pods get
10.244.<n>.0/24 (``n``, 1 to 250, is unique among the machine's real nodes), and the host
routes that subnet to the node, so the apiserver reaches webhooks in pods.

The kubelet authenticates as ``system:node:real-node-0`` (group ``system:nodes``, its own
token), so the Node authorizer and NodeRestriction admission apply to it; it serves on the
node's address and accepts only the apiserver's client certificate. It registers with
``--cloud-provider=external``, which makes it keep the addresses it is given: the cluster
plays the cloud provider, sets the node's address and lifts the
``node.cloudprovider.kubernetes.io/uninitialized`` taint. kube-proxy (nftables mode, as
``system:kube-proxy``) makes Service ClusterIPs work in the node, the ``kubernetes`` one
included, so in-cluster clients in pods reach the apiserver.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from plait.errors import ClusterError
from plait.testing._process import run_cache_script

__all__ = [
    "NODE_KIND_LABEL",
    "POD_SUBNET",
    "REAL_NODE_NAME",
    "REAL_NODE_TAINT",
    "NodeLayout",
    "cleanup",
    "find_node_dir",
    "import_images",
    "leftovers",
    "sweep_stale_nodes",
    "unavailable_reason",
]

REAL_NODE_NAME = "real-node-0"
#: Every node of the local cluster carries this label: ``real`` or ``kwok``.
NODE_KIND_LABEL = "plait.dev/node-kind"
#: The real node's taint: only pods that tolerate it run there, the rest stay on kwok.
REAL_NODE_TAINT = {"key": "plait.dev/real-node", "value": "true", "effect": "NoSchedule"}
UNINITIALIZED_TAINT = "node.cloudprovider.kubernetes.io/uninitialized"
#: Every real node's pods get a /24 of this: 10.244.<n>.0/24.
POD_SUBNET = "10.244.0.0/16"
#: The links between the host and each real node: 10.245.<n>.0/30.
LINK_SUBNET = "10.245.0.0/16"

_REPO_ROOT = Path(__file__).resolve().parents[3]
_MNT_DETACH = 2
_CRI_SANDBOXES = "io.containerd.grpc.v1.cri/sandboxes"
#: One file per real node on this machine (tmpfs: gone after a reboot, like the node).
_REGISTRY = Path("/run/plait/nodes")
_NODE_PROGRAMS = {"kubelet", "containerd", "containerd-shim-runc-v2", "runc", "kube-proxy"}
_INDEXES = range(1, 251)


def find_node_dir(*, progress: bool = True) -> Path:
    """The unpacked Debian packages: ``PLAIT_NODE_DIR`` or ``hack/node-packages.sh``'s cache."""
    configured = os.environ.get("PLAIT_NODE_DIR")
    if configured:
        return Path(configured)
    script = _REPO_ROOT / "hack" / "node-packages.sh"
    if not script.exists():
        raise ClusterError(
            "PLAIT_NODE_DIR is not set and hack/node-packages.sh is not next to this package"
        )
    return run_cache_script(
        script, progress=progress, failure="fetching the real node's packages failed"
    )


def _cgroup_mounts() -> list[Path]:
    """Every cgroup (v1) and cgroup2 mount point of this mount namespace."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split(" ", 1)[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(_unescape(pre.split(" ")[4])))
    return mounts


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape")


def unavailable_reason(bin_dir: Path) -> str | None:
    """Why this machine cannot run the real node, or None when it can."""
    if not Path("/proc/self/mountinfo").exists():
        return "the real node needs Linux"
    if os.geteuid() != 0:
        return (
            f"the real node needs root (kubelet and containerd create cgroups, mounts and "
            f"network namespaces); running as uid {os.geteuid()}"
        )
    for binary in ("kubelet", "pause"):
        if not (bin_dir / binary).exists():
            return f"{binary} is not in {bin_dir}: rebuild it with hack/build-k8s.sh"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem (containerd's snapshotter needs it)"
    mounts = _cgroup_mounts()
    if not mounts:
        return "no cgroup filesystem is mounted"
    probe_name = f"plait-probe-{secrets.token_hex(4)}"
    for mount in mounts:
        probe = mount / probe_name
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError as exc:
            return f"cannot create cgroups in {mount}: {exc.strerror}"
    for tool, why in (("ip", "iproute2"), ("nsenter", "util-linux"), ("unshare", "util-linux")):
        if not any((Path(d) / tool).exists() for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")):
            return f"the '{tool}' command ({why}) is missing; it sets up the node's network"
    if not (bin_dir / "kube-proxy").exists():
        return f"kube-proxy is not in {bin_dir}: rebuild it with hack/build-k8s.sh"
    if not _kernel_has_nftables():
        return "the kernel has no nftables (kube-proxy's nftables mode needs it)"
    return None


def _kernel_has_nftables() -> bool:
    """nf_tables loaded as a module, or built in (its symbols in /proc/kallsyms)."""
    if Path("/sys/module/nf_tables").exists():
        return True
    for table in (Path("/proc/modules"), Path("/proc/kallsyms")):
        with contextlib.suppress(OSError), table.open() as lines:
            if any(line.startswith("nf_tables ") or " nft_do_chain" in line for line in lines):
                return True
    return False


@dataclass(frozen=True)
class NodeLayout:
    """Where one real node keeps everything; saved in ``node.json`` for a later clean-up."""

    root: Path
    node_id: str
    #: Picks the node's subnets (``n`` above); 0 for a record from before they existed.
    index: int = 0

    @classmethod
    def new(cls, root: Path) -> NodeLayout:
        """A node with an ``index`` no other real node on this machine holds, recorded at
        once (owned by this process) so a node starting beside it picks another."""
        _REGISTRY.mkdir(parents=True, exist_ok=True)
        with (_REGISTRY.parent / "nodes.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken = {layout.index for layout, _ in _records()}
            free = [i for i in _INDEXES if i not in taken]
            if not free:
                raise ClusterError(f"{len(taken)} real nodes run on this machine: no subnet left")
            layout = cls(root=root, node_id=secrets.token_hex(4), index=free[0])
            layout.save(owner=os.getpid())
        return layout

    @classmethod
    def load(cls, root: Path) -> NodeLayout | None:
        path = root / "node.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(
            root=Path(data["root"]), node_id=str(data["node_id"]), index=int(data.get("index", 0))
        )

    def save(self, *, owner: int | None) -> None:
        """Write ``node.json`` and the machine-wide record that lets :func:`sweep_stale_nodes`
        clean up after an ``owner`` process that died without stopping its node (None: a
        node left running on purpose, stopped by ``cluster down``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        data = {**asdict(self), "root": str(self.root)}
        (self.root / "node.json").write_text(json.dumps(data))
        _REGISTRY.mkdir(parents=True, exist_ok=True)
        (_REGISTRY / self.node_id).write_text(json.dumps({**data, "owner": owner}))

    def check_socket_paths(self) -> None:
        """Unix socket paths are limited to 104 bytes (containerd's check): fail clearly."""
        longest = max(
            f"{self.containerd_socket}.ttrpc",
            str(self.kubelet_root / "pod-resources" / "kubelet.sock"),
            key=len,
        )
        if len(longest.encode()) > 104:
            raise ClusterError(
                f"the state folder's path is too long for the real node's sockets ({longest} "
                f"has {len(longest.encode())} bytes, at most 104): choose a shorter state folder"
            )

    @property
    def cgroup_root(self) -> str:
        return f"plait-{self.node_id}"

    @property
    def bridge(self) -> str:
        return f"plait{self.node_id}"  # at most 15 characters, as Linux requires

    @property
    def network(self) -> str:
        return f"plait-{self.node_id}"

    @property
    def netns(self) -> Path:
        """The node's network namespace, bind-mounted on this file."""
        return self.root / "netns"

    @property
    def host_link(self) -> str:
        """The host's end of the veth pair to the node (the node's end is ``eth0``)."""
        return f"plaiv{self.node_id}"

    @property
    def host_address(self) -> str:
        """The host on the node's link: where the apiserver listens for the node and pods."""
        return f"10.245.{self.index}.1"

    @property
    def node_address(self) -> str:
        """The node's InternalIP: its kubelet and kube-proxy serve here."""
        return f"10.245.{self.index}.2"

    @property
    def pod_subnet(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"


def containerd_config(layout: NodeLayout, node_dir: Path) -> str:
    """containerd 1.6's config: every path under the node's folder, the CRI plugin set up
    for the kubelet (cgroupfs, overlayfs, our runc and CNI plugins, our pause image)."""
    root = node_dir / "root"
    c = layout.root / "containerd"
    disabled = [
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.internal.v1.opt",
        "io.containerd.tracing.processor.v1.otlp",
    ]
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{c / "root"}"
state = "{layout.containerd_state}"
disabled_plugins = {json.dumps(disabled)}

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[{cri}]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # The machine may lack CAP_SYS_RESOURCE: runc then cannot lower oom_score_adj to the
  # kubelet's -998 for sandboxes; this keeps every OOM score at 0 or above instead.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # Network namespaces under containerd's state folder, not in the machine's /run/netns.
  netns_mounts_under_state_dir = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{root / "usr" / "sbin" / "runc"}"
  Root = "{layout.root / "runc"}"

[{cri}.cni]
  bin_dir = "{root / "usr" / "lib" / "cni"}"
  conf_dir = "{layout.root / "cni" / "net.d"}"
  max_conf_num = 1
"""


def cni_config(layout: NodeLayout) -> dict[str, object]:
    """A bridge in the node's namespace, its gateway the pods' default route, no
    masquerading: the host routes the pod subnet back to the node, so pods reach the host
    (the apiserver, PostgreSQL) with their own addresses, and the apiserver reaches them."""
    return {
        "cniVersion": "1.0.0",
        "name": layout.network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                # A pod reaching itself through a Service's ClusterIP.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": layout.pod_subnet}]],
                    "dataDir": str(layout.root / "cni" / "ipam"),
                },
            }
        ],
    }


def kubelet_config(
    layout: NodeLayout, *, port: int, healthz_port: int, client_ca: Path
) -> dict[str, object]:
    """The KubeletConfiguration: cgroupfs under the node's own cgroup root, served on the
    node's address to the apiserver's client certificate only, no image garbage collection
    (imported images cannot be pulled again) and no disk-pressure evictions."""
    endpoint = f"unix://{layout.containerd_socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{layout.cgroup_root}",
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "address": layout.node_address,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(layout.pod_logs),
        "volumePluginDir": str(layout.root / "volume-plugins"),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "failSwapOn": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "1%",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "registerWithTaints": [REAL_NODE_TAINT],
    }


def kube_proxy_config(layout: NodeLayout, *, kubeconfig: Path) -> dict[str, object]:
    """kube-proxy in nftables mode for the node's pods: its health on the node's address
    (the cluster polls it from the host), metrics on the node's loopback, conntrack
    sysctls left as they are (a network namespace may not change most of them)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": REAL_NODE_NAME,
        "clusterCIDR": layout.pod_subnet,
        "healthzBindAddress": f"{layout.node_address}:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def in_node(layout: NodeLayout) -> list[str]:
    """The command prefix that runs a program in the node's network namespace."""
    return ["nsenter", f"--net={layout.netns}", "--"]


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")


def create_network(layout: NodeLayout) -> None:
    """The node's network namespace and its link to the host (see the module docstring):
    forwarding on inside the node (the pods' traffic is routed through it), and on the
    host an address on the link and a route to the node's pods."""
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.netns.touch()
    _run("unshare", f"--net={layout.netns}", "true")
    node = in_node(layout)
    _run(*node, "ip", "link", "set", "lo", "up")
    # Created inside, the peer sent to this process's (the host's) namespace.
    _run(*node, "ip", "link", "add", "eth0", "type", "veth",
         "peer", "name", layout.host_link, "netns", str(os.getpid()))  # fmt: skip
    _run(*node, "ip", "address", "add", f"{layout.node_address}/30", "dev", "eth0")
    _run(*node, "ip", "link", "set", "eth0", "up")
    _run(*node, "ip", "route", "add", "default", "via", layout.host_address)
    _run(*node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    _run("ip", "address", "add", f"{layout.host_address}/30", "dev", layout.host_link)
    _run("ip", "link", "set", layout.host_link, "up")
    _run("ip", "route", "add", layout.pod_subnet, "via", layout.node_address)


def _node_has_link(layout: NodeLayout, name: str) -> bool:
    if not os.path.ismount(layout.netns):
        return False
    proc = subprocess.run(
        [*in_node(layout), "ip", "link", "show", "dev", name], capture_output=True, check=False
    )
    return proc.returncode == 0


def create_cgroup_root(layout: NodeLayout) -> None:
    """``/plait-<id>`` in every hierarchy (the kubelet requires its cgroup root to exist)."""
    for mount in _cgroup_mounts():
        path = mount / layout.cgroup_root
        path.mkdir(exist_ok=True)
        # A new cpuset cgroup starts with no CPUs and no memory nodes: inherit the parent's.
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (
                (path / name).exists()
                and (mount / name).exists()
                and not (path / name).read_text().strip()
            ):
                (path / name).write_text((mount / name).read_text())


# -- clean-up -------------------------------------------------------------------------------


def _pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def node_processes(layout: NodeLayout) -> dict[int, str]:
    """Processes of this node: those naming its folder (containerd, kubelet, the shims) and
    those in its cgroups (the containers); pid to command line."""
    found = {}
    marker = str(layout.root)
    cgroup_marker = f"/{layout.cgroup_root}/"
    for pid in _pids():
        if pid == os.getpid():
            continue
        proc = Path("/proc") / str(pid)
        argv = _read(proc / "cmdline").split("\0")
        cmdline = " ".join(argv).strip()
        ours = Path(argv[0]).name in _NODE_PROGRAMS and marker in cmdline
        cgroups = _read(proc / "cgroup")
        in_cgroup = any(
            (line.split(":", 2)[-1] + "/").startswith(cgroup_marker) for line in cgroups.split()
        )
        if ours or in_cgroup:
            found[pid] = cmdline
    return found


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(_unescape(line.split(" ")[4]))
    return points


def _sandbox_files(layout: NodeLayout) -> tuple[set[Path], set[Path]]:
    """Network namespaces and shim sockets named in the task bundles (outside our folder)."""
    netns: set[Path] = set()
    sockets: set[Path] = set()
    tasks = layout.containerd_state / "io.containerd.runtime.v2.task"
    for bundle in tasks.glob("*/*"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            spec = json.loads((bundle / "config.json").read_text())
            for ns in spec["linux"].get("namespaces", []):
                if ns.get("type") == "network" and ns.get("path", "").startswith("/"):
                    netns.add(Path(os.path.realpath(ns["path"])))
        with contextlib.suppress(OSError):
            address = (bundle / "address").read_text().strip()
            if address.startswith("unix://"):
                sockets.add(Path(address.removeprefix("unix://")))
    return netns, sockets


def _umount(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if int(libc.umount2(path.encode(), 0)) != 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL:  # not a mount point (any more)
            return
        if int(libc.umount2(path.encode(), _MNT_DETACH)) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise OSError(err, f"umount {path}: {os.strerror(err)}")


def _other_kubelets(layout: NodeLayout) -> bool:
    for pid in _pids():
        argv = _read(Path("/proc") / str(pid) / "cmdline").split("\0")
        if Path(argv[0]).name == "kubelet" and str(layout.root) not in " ".join(argv):
            return True
    return False


def cleanup(layout: NodeLayout, *, timeout: float = 15.0) -> None:
    """Remove every trace of the node outside its folder, after kubelet and containerd stop:
    kill its shims and containers, unmount what they mounted, delete its cgroups, its
    bridge, its network namespaces and the files the kubelet and containerd hard-code."""
    netns, sockets = _sandbox_files(layout)
    deadline = time.monotonic() + timeout
    while True:
        procs = node_processes(layout)
        if not procs:
            break
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise ClusterError(f"processes of the real node survive SIGKILL: {procs}")
        time.sleep(0.1)
    if Path(f"/sys/class/net/{layout.host_link}").exists():
        # Both ends go at once; the namespace (unmounted below) takes the bridge and the
        # nftables rules with it.
        subprocess.run(["ip", "link", "delete", layout.host_link], capture_output=True, check=False)
    root = str(layout.root)
    ours = [p for p in _mount_points() if p == root or p.startswith(root + "/")]
    for point in sorted(set(ours), key=len, reverse=True):
        _umount(point)
    for path in netns:
        with contextlib.suppress(FileNotFoundError):
            _umount(str(path))
            path.unlink()
    for path in sockets:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for name in ("s", "fifo", "runc/k8s.io", "runc", ""):
        with contextlib.suppress(OSError):  # only when empty: another containerd's stay
            Path("/run/containerd", name).rmdir()
    for mount in _cgroup_mounts():
        top = mount / layout.cgroup_root
        if not top.exists():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            _rmdir_cgroup(Path(dirpath), deadline)
    if Path(f"/sys/class/net/{layout.bridge}").exists():
        subprocess.run(["ip", "link", "delete", layout.bridge], capture_output=True, check=False)
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        sandboxes = {p.name for p in (layout.containerd_state / _CRI_SANDBOXES).glob("*")}
        for entry in results.iterdir():
            # <network>-<sandbox id>-<interface>: our bridge network and containerd's loopback
            if entry.name.startswith(f"{layout.network}-") or any(
                f"-{sandbox}-" in entry.name for sandbox in sandboxes
            ):
                entry.unlink(missing_ok=True)
        for folder in (results, results.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
    logs = Path("/var/log/containers")
    if logs.is_dir():
        for link in logs.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(layout.pod_logs)):
                link.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            logs.rmdir()  # only when empty: another node's logs stay
    (_REGISTRY / layout.node_id).unlink(missing_ok=True)
    if not _other_kubelets(layout):
        # The device plugin folder is hard-coded and shared by every kubelet on the machine.
        plugins = Path("/var/lib/kubelet/device-plugins")
        for name in ("kubelet.sock", "kubelet_internal_checkpoint"):
            (plugins / name).unlink(missing_ok=True)
        for folder in (plugins, plugins.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has exited


def sweep_stale_nodes() -> list[NodeLayout]:
    """Clean up the real nodes whose owner process died without stopping them (a killed
    test session): their kubelet, containerd, containers, mounts, cgroups and bridge."""
    swept = []
    for layout, owner in _records():
        if owner is None or _alive(owner):
            continue
        cleanup(layout)
        swept.append(layout)
    return swept


def _records() -> list[tuple[NodeLayout, int | None]]:
    """Every real node recorded on this machine, with its owner process (None: none)."""
    found = []
    for record in sorted(_REGISTRY.glob("*")) if _REGISTRY.is_dir() else []:
        try:
            data = json.loads(record.read_text())
            layout = NodeLayout(
                root=Path(data["root"]),
                node_id=str(data["node_id"]),
                index=int(data.get("index", 0)),
            )
            owner = data["owner"]
            found.append((layout, None if owner is None else int(owner)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _rmdir_cgroup(path: Path, deadline: float) -> None:
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise ClusterError(f"cannot remove cgroup {path}: {exc}") from None
            time.sleep(0.1)


def leftovers(layout: NodeLayout) -> list[str]:
    """What of the node is still on the machine: processes, mounts, cgroups, the bridge,
    the link to the host, network namespaces. Empty after :func:`cleanup`."""
    found = [f"process {pid}: {cmd}" for pid, cmd in node_processes(layout).items()]
    root = str(layout.root)
    found += [f"mount {p}" for p in _mount_points() if p == root or p.startswith(root + "/")]
    found += [
        f"cgroup {mount / layout.cgroup_root}"
        for mount in _cgroup_mounts()
        if (mount / layout.cgroup_root).exists()
    ]
    if Path(f"/sys/class/net/{layout.bridge}").exists() or _node_has_link(layout, layout.bridge):
        found.append(f"bridge {layout.bridge}")
    if Path(f"/sys/class/net/{layout.host_link}").exists():
        found.append(f"link {layout.host_link}")
    netns, sockets = _sandbox_files(layout)
    found += [f"network namespace {p}" for p in netns if p.exists()]
    found += [f"shim socket {p}" for p in sockets if p.exists()]
    return found


def import_images(layout: NodeLayout, node_dir: Path, archives: list[Path]) -> None:
    """``ctr images import`` into the node's containerd (namespace ``k8s.io``, where the
    kubelet looks): the images are there at once, no registry is asked."""
    ctr = node_dir / "root" / "usr" / "bin" / "ctr"
    base = [str(ctr), f"--address={layout.containerd_socket}", "--namespace=k8s.io"]
    for archive in archives:  # ctr reads one archive per call
        proc = subprocess.run(
            [*base, "images", "import", str(archive)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ClusterError(f"ctr images import {archive} failed: {proc.stderr.strip()}")
