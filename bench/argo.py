"""Side by side with Argo Workflows: one-task workflows per minute on one control plane.

``python -m bench.argo [--tasks N]`` measures, in one run against the same local control
plane, the raw ceiling and Plait exactly as :mod:`bench.throughput` does (its function is
called), then Argo's workflow-controller: N Workflows of one container template, from the
first create to a watch seeing the last ``status.phase: Succeeded``. Reported for each:
workflows per minute, the ratio against raw, the controller's CPU per workflow and its
peak RSS (``VmHWM``), and API calls per workflow two ways: all of the run's
(``apiserver_request_total`` delta / N), and the orchestrator's own. Plait's own is, as in
:mod:`bench.throughput`, its run's total minus raw's, which holds because both drive the
same Jobs. Argo creates bare pods, which spare the Job controller's requests, so that
difference would understate it; Argo's own is counted by the controller itself (its
``k8s_request_total`` metric), plus the ``wait`` containers' writes (below).

Argo on kwok, and why it is fair:

- The controller is built from Argo's Go module (``hack/argo/build.sh``, the newest v3
  release the module proxy serves) and runs as a plain process against the kubeconfig,
  namespaced to the benchmark's namespace, with the deployed defaults (leader election,
  metrics, ``--qps 20 --burst 30``) and its ConfigMap. Its CRDs are the module's
  ``manifests/base/crds/minimal``. The ``argo-tuned`` pass lifts its client-side rate
  limit and its requeue time (see :class:`Pass`), which bound it as deployed.
- kwok's stages of the shared node finish only pods owned by a Job, and Argo's pods are
  owned by their Workflow. So Argo's pods go to a second kwok node (tainted; only the
  Workflows tolerate it) run by a second kwok process with the same stages, whose
  completing stage is Plait's ``pod-complete.yaml`` matching pods owned by a Workflow. The
  same annotations decide the outcome; every container, ``wait`` included, ends with the
  main container's exit code. The node and its kwok run from before the raw pass, so their
  background requests are in every pass alike.
- No container runs, so Argo's ``wait`` container writes no WorkflowTaskResult. Argo
  v3.7's controller does not need one: a node whose result was never seen counts as
  synced. But the ``wait`` container's writes are API calls a real Argo run makes and a
  real Plait task does not (its outputs are the termination message). The ``argo`` and
  ``argo-tuned`` passes therefore do them for every pod as the ``wait`` container would:
  the placeholder result (``report-outputs-completed: "false"``) when the pod is first seen
  running, then the outputs and the completed label once kwok has finished it (three
  requests). The ``argo-controller-only`` pass leaves them out: the controller alone.
- Argo's template runs ``["true"]`` (Plait's task runs the image's entrypoint): with no
  command, the controller would look the image's entrypoint up in its registry, which a
  real cluster does once per image and this offline one cannot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bench import throughput, workloads
from bench.harness import (
    CREATE_WORKERS,
    REPO,
    RESULTS,
    Environment,
    Operator,
    Watcher,
    counts_delta,
    create_many,
    describe_calls,
    say,
)
from plait.testing._process import free_port, stop_process, wait_until

GROUP = "argoproj.io"
VERSION = "v1alpha1"
MODULE = "github.com/argoproj/argo-workflows/v3"
BUILD_SCRIPT = REPO / "hack" / "argo" / "build.sh"
PLAIT_STAGE = REPO / "operator" / "plait" / "testing" / "kwok" / "pod-complete.yaml"
NODE_NAME = "kwok-argo-0"
NODE_TAINT = {"key": "bench.plait.dev/argo", "value": "true", "effect": "NoSchedule"}
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
COMPLETED_LABEL = "workflows.argoproj.io/report-outputs-completed"
NODE_ID_ANNOTATION = "workflows.argoproj.io/node-id"


# -- building and installing Argo ----------------------------------------------------------
def controller_binary() -> Path:
    """The workflow-controller, built once by ``hack/argo/build.sh`` (its last line)."""
    out = subprocess.run([str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def module_dir(version: str) -> Path:
    """Argo's module in the Go module cache (its manifests are there)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{MODULE}@{version}"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "GOTOOLCHAIN": "local"},
    ).stdout
    return Path(json.loads(out)["Dir"])


def install_crds(env: Environment, version: str) -> None:
    crds = module_dir(version) / "manifests" / "base" / "crds" / "minimal"
    env.kubectl("apply", "--server-side", "-k", str(crds))
    env.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


# -- a kwok node for Argo's pods -----------------------------------------------------------
def argo_stage() -> dict[str, Any]:
    """Plait's completing stage, matching pods owned by a Workflow instead of a Job."""
    stage = yaml.safe_load(PLAIT_STAGE.read_text())
    stage["metadata"]["name"] = "argo-pod-complete"
    for expression in stage["spec"]["selector"]["matchExpressions"]:
        if expression["key"] == ".metadata.ownerReferences.[].kind":
            expression["values"] = ["Workflow"]
    return dict(stage)


class ArgoNode:
    """A second kwok node with its own kwok process, tainted so only Argo's pods land on
    it: the shared node's stages never finish a pod that no Job owns. Its kwok runs with
    the same defaults as the shared node's (4 workers playing pod stages)."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.dir = Path(tempfile.mkdtemp(prefix="plait-bench-argo-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ArgoNode:
        bin_dir = self.env.cluster.bin_dir
        assert bin_dir is not None
        stages = bin_dir.parent / "kwok-stages"
        (self.dir / "argo-pod-complete.yaml").write_text(yaml.safe_dump(argo_stage()))
        configs = [
            stages / "node" / "fast" / "node-initialize.yaml",
            stages / "node" / "heartbeat-with-lease" / "node-heartbeat-with-lease.yaml",
            stages / "pod" / "fast" / "pod-ready.yaml",
            stages / "pod" / "fast" / "pod-delete.yaml",
            self.dir / "argo-pod-complete.yaml",
        ]
        (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
        with (RESULTS / "logs" / "argo-kwok.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(bin_dir / "kwok"),
                    f"--kubeconfig={self.env.cluster.kubeconfig}",
                    "--manage-all-nodes=false",
                    "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=argo",
                    "--node-lease-duration-seconds=40",
                    f"--server-address=127.0.0.1:{free_port()}",
                    *(f"--config={c}" for c in configs),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "argo", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"},
            },
            "spec": {"taints": [NODE_TAINT]},
            "status": {
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
            },
        }
        self.env.kubectl("apply", "-f", "-", input=json.dumps(node))

        def ready() -> bool:
            out = self.env.kubectl(
                "get", "node", NODE_NAME, "-o",
                'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            )  # fmt: skip
            return out.strip() == "True"

        wait_until(ready, timeout=60, what=f"node {NODE_NAME} to be Ready")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.env.kubectl("delete", "node", NODE_NAME, "--ignore-not-found", "--wait=false")


# -- the controller ------------------------------------------------------------------------
class ArgoController(Operator):
    """Argo's workflow-controller for one namespace, as a child process; CPU and peak RSS
    are read from /proc like the operator's."""

    def __init__(
        self,
        env: Environment,
        binary: Path,
        namespace: str,
        log: Path,
        environ: Mapping[str, str],
        args: tuple[str, ...],
    ) -> None:
        self.binary = binary
        self.version = binary.parent.name
        self.namespace = namespace
        self.kube = env
        self.metrics_port = free_port()
        self.args = [
            str(binary),
            f"--kubeconfig={env.cluster.kubeconfig}",
            f"--namespace={namespace}",
            "--namespaced",
            f"--managed-namespace={namespace}",
            f"--executor-image=quay.io/argoproj/argoexec:{self.version}",
            *args,
        ]
        self.env = {**os.environ, "LEADER_ELECTION_IDENTITY": "bench", **environ}
        self.log = log
        self.proc = None

    def __enter__(self) -> ArgoController:
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "workflow-controller-configmap"},
            # Only the metrics port moves (9090 may be taken on a shared machine).
            "data": {"metricsConfig": f"port: {self.metrics_port}\n"},
        }
        self.kube.apply(self.namespace, config_map)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
            )
        time.sleep(1)
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the workflow-controller exited:\n{tail}")
        return self

    def settled_request_counts(self, timeout: float = 120) -> Counter[str]:
        """:meth:`request_counts` once nothing but its lease changes for 3 s: as deployed,
        its client-side rate limit holds a backlog of requests (its Kubernetes events)
        that it sends after the last workflow is done; they are its cost all the same."""
        deadline = time.monotonic() + timeout
        last = self.request_counts()
        while time.monotonic() < deadline:
            time.sleep(throughput.SETTLE_S)
            now = self.request_counts()
            moved = {k for k in now.keys() | last.keys() if now[k] != last[k]}
            if all(k.endswith(" leases") for k in moved):
                return now
            last = now
        return last

    def request_counts(self) -> Counter[str]:
        """The controller's own requests to the API server, ``"VERB kind" -> count``, from
        its ``k8s_request_total`` metric (the API server's counters cannot tell clients
        apart). Its metrics server uses a self-signed certificate."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            text = response.read().decode()
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            name, _, rest = line.partition("{")
            if name.endswith("k8s_request_total") and "} " in rest:
                labels_text, value = rest.rsplit("} ", 1)
                labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
                counts[f"{labels.get('verb', '')} {labels.get('kind', '')}"] += int(float(value))
        if not counts:
            raise RuntimeError(f"no k8s_request_total in the controller's metrics at {url}")
        return counts


# -- the workload ---------------------------------------------------------------------------
def workflow(name: str, duration_s: float) -> dict[str, Any]:
    """Plait's one task as an Argo Workflow: same image and kwok annotations, on the
    Argo node."""
    task = workloads.template(duration_s)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "entrypoint": "only",
            "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
            "tolerations": [{"operator": "Equal", **NODE_TAINT}],
            "templates": [
                {
                    "name": "only",
                    "metadata": task["podMetadata"],
                    "container": {"image": task["image"], "command": ["true"]},
                }
            ],
        },
    }


class WorkflowWatcher(Watcher):
    """The harness's watcher, on Argo's Workflows (``status.phase`` as a WorkflowInstance)."""

    def _list(self, **kwargs: Any) -> Any:
        return self.env.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "workflows", **kwargs
        )


class WaitContainers(Watcher):
    """Writes each Argo pod's WorkflowTaskResult as its ``wait`` container would: the
    placeholder when the pod is first seen running, the outputs and the completed label
    once kwok has finished it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pool = ThreadPoolExecutor(CREATE_WORKERS)
        self.started: dict[str, Future[None]] = {}
        self.finished_pods: set[str] = set()
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.requests = 0

    def __enter__(self) -> WaitContainers:
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.pool.shutdown(wait=True)

    def _list(self, **kwargs: Any) -> Any:
        return client.CoreV1Api(self.env.client).list_namespaced_pod(
            self.namespace, label_selector=WORKFLOW_LABEL, **kwargs
        )

    def _see(self, obj: Mapping[str, Any], now: float) -> None:
        phase = (obj.get("status") or {}).get("phase")
        if phase not in ("Running", "Succeeded", "Failed"):
            return
        name = obj["metadata"]["name"]
        with self.lock:
            if name not in self.started:
                self.started[name] = self.pool.submit(self._guard, self._create, obj)
            if phase != "Running" and name not in self.finished_pods:
                self.finished_pods.add(name)
                started = self.started[name]
                self.pool.submit(self._guard, self._finish, obj, started)

    def _guard(self, step: Any, *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _count(self) -> None:
        with self.lock:
            self.requests += 1

    @staticmethod
    def _node_id(pod: Mapping[str, Any]) -> str:
        annotations = pod["metadata"].get("annotations") or {}
        if NODE_ID_ANNOTATION in annotations:
            return str(annotations[NODE_ID_ANNOTATION])
        for container in pod["spec"]["containers"]:
            for var in container.get("env") or ():
                if var["name"] == "ARGO_NODE_ID":
                    return str(var["value"])
        raise LookupError(f"pod {pod['metadata']['name']} names no Argo node")

    def _create(self, pod: Mapping[str, Any]) -> None:
        owner = next(o for o in pod["metadata"]["ownerReferences"] if o["kind"] == "Workflow")
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WorkflowTaskResult",
            "metadata": {
                "name": self._node_id(pod),
                "labels": {WORKFLOW_LABEL: owner["name"], COMPLETED_LABEL: "false"},
                "ownerReferences": [{k: owner[k] for k in ("apiVersion", "kind", "name", "uid")}],
            },
        }
        try:
            self._count()
            self.env.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "workflowtaskresults", body
            )
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _finish(self, pod: Mapping[str, Any], started: Future[None]) -> None:
        started.result()
        outputs: dict[str, Any] = {"outputs": {}}
        completed = {"metadata": {"labels": {COMPLETED_LABEL: "true"}}}
        for patch in (outputs, completed):
            self._count()
            self.env.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "workflowtaskresults", self._node_id(pod), patch
            )


def run_workflows(
    env: Environment, namespace: str, names: list[str], duration_s: float, timeout: float
) -> dict[str, Any]:
    """Create the Workflows and wait, by watching, for all to finish."""
    with WorkflowWatcher(env, namespace, "workflows") as watcher:
        start = time.monotonic()
        create_many(
            lambda body: env.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "workflows", body
            ),
            (workflow(n, duration_s) for n in names),
        )
        if not watcher.wait_for(names, timeout):
            done = len(set(names) & watcher.finished.keys())
            raise TimeoutError(f"Argo: {done}/{len(names)} workflows finished in {timeout:.0f}s")
        end = watcher.last(names)
        failed = watcher.failures(names)
    if failed:
        raise RuntimeError(f"workflows did not succeed: {dict(list(failed.items())[:5])}")
    return {"workflows": len(names), "wall_s": round(end - start, 3)}


class Pass(NamedTuple):
    """One Argo pass: whether the ``wait`` containers' writes are made, and whether the
    controller is tuned. As deployed it sends at most 20 requests a second (``--qps 20
    --burst 30``), which bounds a burst of one-task workflows (about 4 requests each before
    one is Succeeded), and it looks at a workflow again at most once per
    ``DEFAULT_REQUEUE_TIME`` (10 s), so none takes less than 10 s. Tuned: the limits the
    local control plane's own controllers get (``--qps 200 --burst 400``) and a requeue
    time of 1 s, the floor its code gives (below it the informers fall behind)."""

    key: str
    label: str
    task_results: bool
    tuned: bool


PASSES = (
    Pass("argo", "Argo", task_results=True, tuned=False),
    Pass("argo_tuned", "Argo, tuned", task_results=True, tuned=True),
    Pass("argo_controller_only", "Argo, controller only", task_results=False, tuned=False),
)
TUNED_ARGS = ("--qps=200", "--burst=400")
TUNED_ENV = {"DEFAULT_REQUEUE_TIME": "1s"}


def run_argo(
    env: Environment,
    binary: Path,
    n: int,
    *,
    spec: Pass,
    raw: Mapping[str, Any],
    raw_by_request: Mapping[str, int],
    duration_s: float,
) -> dict[str, Any]:
    """One Argo pass in its own namespace with its own controller process; its Workflows
    (and so their pods) are deleted afterwards, as the other passes' Jobs are."""
    label = spec.key.replace("_", "-")
    task_results = spec.task_results
    timeout = max(300.0, n * 3.0)
    ns = env.namespace(f"tp-{label}")
    log = RESULTS / "logs" / f"{label}-controller.log"
    if spec.tuned:
        ctl = ArgoController(env, binary, ns, log, TUNED_ENV, TUNED_ARGS)
    else:
        ctl = ArgoController(env, binary, ns, log, {}, ())
    with ctl, contextlib.ExitStack() as stack:
        writer = stack.enter_context(WaitContainers(env, ns, "pods")) if task_results else None
        # One Workflow first: the controller is up (its informers synced, its lease
        # held) once it finishes one; it is not measured.
        run_workflows(env, ns, ["warm-up"], duration_s, timeout=120)
        say(f"{label}: {n} Workflows")
        before, own_before = env.request_counts(), ctl.request_counts()
        writes_before = writer.requests if writer is not None else 0
        cpu0 = ctl.cpu_seconds()
        names = [f"run-{i:05d}" for i in range(n)]
        result = run_workflows(env, ns, names, duration_s, timeout)
        cpu = ctl.cpu_seconds() - cpu0
        time.sleep(throughput.SETTLE_S)
        own = ctl.settled_request_counts()
        calls = counts_delta(before, env.request_counts())
        own.subtract(own_before)
        writes = (writer.requests if writer is not None else 0) - writes_before
        if writer is not None and writer.errors:
            raise RuntimeError(f"writing task results failed: {writer.errors[:3]}")
        result["per_minute"] = round(n / result["wall_s"] * 60, 1)
        result["ratio"] = round(result["per_minute"] / raw["per_minute"], 3)
        result["api_calls"] = sum(calls.values())
        result["api_calls_per_workflow"] = round(result["api_calls"] / n, 2)
        # Not what Argo adds: raw's Jobs cost the Job controller's requests, which Argo's
        # bare pods do not; kept for comparison with the other benchmarks' figure.
        result["api_calls_minus_raw_per_workflow"] = round(
            (result["api_calls"] - raw["api_calls"]) / n, 2
        )
        result["controller_api_calls"] = own.total()
        result["controller_by_request"] = {k: v for k, v in own.most_common() if v}
        result["wait_container_api_calls"] = writes
        result["orchestrator_api_calls_per_workflow"] = round((own.total() + writes) / n, 2)
        result["controller_cpu_s"] = round(cpu, 2)
        result["controller_cpu_ms_per_workflow"] = round(1000 * cpu / n, 1)
        result["peak_rss_mib"] = ctl.peak_rss_mib()
        result["workflow_object_bytes"] = env.object_size(ns, "workflows.argoproj.io", names[-1])
    result["by_request"] = describe_calls(calls)
    extra = Counter(result["by_request"])
    extra.subtract(raw_by_request)
    result["difference_by_request"] = {
        k: v for k, v in extra.most_common() if abs(v) >= max(2, n // 20)
    }
    result["wait_container_task_results"] = task_results
    result["controller_args"] = ctl.args[1:]
    result["controller_environment"] = TUNED_ENV if spec.tuned else {}
    env.kubectl("-n", ns, "delete", "workflows.argoproj.io", "--all", "--wait=true")
    wait_until(
        lambda: not env.kubectl("-n", ns, "get", "pods", "-o", "name").strip(),
        timeout=300,
        what=f"the pods of {ns} to be deleted",
    )
    say(f"{label}: {result['per_minute']}/min, ratio {result['ratio']}")
    return result


# -- the run ------------------------------------------------------------------------------------
def run(env: Environment, n: int, *, duration_s: float = 0.0) -> dict[str, Any]:
    binary = controller_binary()
    version = binary.parent.name
    install_crds(env, version)
    with ArgoNode(env):
        result = throughput.run(env, n, duration_s=duration_s, profile=False)
        env.quiesce()  # raw's and Plait's Jobs gone before Argo's passes are counted
        raw, raw_by_request = result["raw"], result["api_calls"]["raw_by_request"]
        result["argo_version"] = version
        for spec in PASSES:
            result[spec.key] = run_argo(
                env, binary, n, spec=spec, raw=raw, raw_by_request=raw_by_request,
                duration_s=duration_s,
            )  # fmt: skip
    return result


def table(result: Mapping[str, Any]) -> str:
    """Orchestrator's calls: Plait's as in :mod:`bench.throughput` (its run's requests
    minus raw's); Argo's counted by its controller, plus the ``wait`` containers' writes."""
    n, raw, plait, calls = result["n"], result["raw"], result["plait"], result["api_calls"]
    rows: list[tuple[Any, ...]] = [
        (f"n={n}", "workflows/min", "wall s", "ratio", "orchestrator API calls/wf",
         "all API calls/wf", "CPU ms/wf", "peak RSS MiB"),
        ("raw Jobs", raw["per_minute"], raw["wall_s"], 1.0, "-",
         round(raw["api_calls"] / n, 2), "-", "-"),
        ("Plait", plait["per_minute"], plait["wall_s"], result["ratio"],
         calls["added_per_workflow"], round(plait["api_calls"] / n, 2),
         plait["operator_cpu_ms_per_workflow"], plait["peak_rss_mib"]),
    ]  # fmt: skip
    for spec in PASSES:
        a = result[spec.key]
        rows.append((f"{spec.label} {result['argo_version']}", a["per_minute"], a["wall_s"],
                     a["ratio"], a["orchestrator_api_calls_per_workflow"],
                     a["api_calls_per_workflow"], a["controller_cpu_ms_per_workflow"],
                     a["peak_rss_mib"]))  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.argo",
        description="One-task workflows: raw Jobs, Plait and Argo Workflows in one run.",
    )
    parser.add_argument("--tasks", type=int, default=200, help="workflows (%(default)s)")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="simulated seconds each task runs (0)"
    )
    args = parser.parse_args(argv)
    (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load = [os.getloadavg()]
    with Environment() as env:
        result = run(env, args.tasks, duration_s=args.duration)
    load.append(os.getloadavg())
    result["benchmark_s"] = round(time.monotonic() - started, 1)
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    result["load_average_at_start_and_end"] = [[round(x, 2) for x in avg] for avg in load]
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (RESULTS / "argo.json").write_text(json.dumps(result, indent=2) + "\n")
    say(f"argo: wrote {RESULTS / 'argo.json'}")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
