"""What every benchmark shares: one PostgreSQL server and one control plane per run, a
fresh namespace and database per benchmark, the operator as a child process, watches
that timestamp completions, the API server's request counters, and the profiler.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from plait import API_GROUP, API_VERSION
from plait.kernel.components import COMPONENTS
from plait.kernel.migrations import migrate_database
from plait.testing import PostgresServer
from plait.testing._process import free_port, stop_process, wait_until
from plait.testing.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CREATE_WORKERS = 8
FINAL_PHASES = {"Succeeded", "Failed", "Cancelled", "Error"}

Outcome = Callable[[Mapping[str, Any]], str | None]


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Environment:
    """PostgreSQL, the control plane (with Plait's CRDs) and API clients, for one run."""

    def __init__(self, *, real_node: bool = False) -> None:
        self.postgres = PostgresServer()
        self.cluster = LocalCluster(progress=False, real_node=real_node)
        self.api: client.ApiClient | None = None
        self._databases = 0
        self.namespaces: list[str] = []

    def __enter__(self) -> Environment:
        say("starting PostgreSQL and the control plane")
        self.postgres.start()
        try:
            self.cluster.start()
            self.cluster.kubectl("apply", "-f", str(REPO / "crds"))
            self.cluster.kubectl(
                "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"
            )
            self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.cluster.kubeconfig)
            )
            self.api.configuration.connection_pool_maxsize = CREATE_WORKERS * 2
        except BaseException:
            self.__exit__()
            raise
        say(f"control plane at {self.cluster.server}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.api is not None:
            self.api.close()  # type: ignore[no-untyped-call]
        self.cluster.stop()
        self.postgres.stop()

    # -- typed handles ---------------------------------------------------------------------
    @property
    def client(self) -> client.ApiClient:
        assert self.api is not None
        return self.api

    @property
    def batch(self) -> Any:
        return client.BatchV1Api(self.client)

    @property
    def custom(self) -> Any:
        return client.CustomObjectsApi(self.client)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.cluster.kubectl(*args, input=input).stdout

    # -- per benchmark ---------------------------------------------------------------------
    def namespace(self, name: str) -> str:
        """Create a namespace and wait for its default ServiceAccount (pods need it)."""
        self.kubectl("create", "namespace", name)
        wait_until(
            lambda: bool(self.kubectl("-n", name, "get", "serviceaccount", "default")),
            timeout=60,
            what=f"the default ServiceAccount of {name}",
        )
        self.namespaces.append(name)
        return name

    def quiesce(self, timeout: float = 300) -> None:
        """Delete every benchmark Job (and so its Pods) and wait until they are gone, so
        that one benchmark's Jobs reaching their TTL never load the next benchmark's run."""
        for ns in self.namespaces:
            self.kubectl("-n", ns, "delete", "jobs", "--all", "--wait=false")

        def empty() -> bool:
            return not any(
                self.kubectl("-n", ns, "get", "jobs,pods", "-o", "name").strip()
                for ns in self.namespaces
            )

        wait_until(empty, timeout=timeout, what="the benchmark's Jobs and Pods to be deleted")

    def database(self, name: str) -> str:
        """A fresh database with every component's migrations applied; its DSN."""
        self._databases += 1
        dsn = self.postgres.create_database(name)
        migrate_database(dsn, COMPONENTS, owner_role=None)
        return dsn

    def db_stats(self, dbname: str) -> dict[str, int]:
        """The database's transaction and row counters (``pg_stat_database``), and the rows
        its tables' sequential scans read (``seq_rows.<schema>.<table>``; a hot statement
        reading a whole table is a plan gone wrong)."""
        import psycopg

        with psycopg.connect(self.postgres.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            row = conn.execute(
                "SELECT xact_commit + xact_rollback, tup_returned, tup_fetched,"
                " tup_inserted + tup_updated + tup_deleted"
                " FROM pg_stat_database WHERE datname = %s",
                (dbname,),
            ).fetchone()
        assert row is not None
        stats = dict(
            zip(("transactions", "rows_scanned", "rows_fetched", "rows_written"), row, strict=True)
        )
        with psycopg.connect(self.postgres.dsn(dbname), autocommit=True) as conn:
            for schema, table, rows in conn.execute(
                "SELECT schemaname, relname, seq_tup_read FROM pg_stat_user_tables"
            ):
                stats[f"seq_rows.{schema}.{table}"] = int(rows)
        return stats

    def apply(self, namespace: str, manifest: Mapping[str, Any]) -> None:
        # Server-side: a client-side apply copies the object into an annotation capped at
        # 256 KiB, which a definition of a few thousand tasks exceeds.
        self.kubectl(
            "-n", namespace, "apply", "--server-side", "-f", "-", input=json.dumps(manifest)
        )

    def object_size(self, namespace: str, kind: str, name: str) -> int:
        """Bytes of ``kubectl get -o json`` of one object."""
        return len(self.kubectl("-n", namespace, "get", kind, name, "-o", "json").encode())

    def wait_definition_ready(self, namespace: str, name: str, timeout: float = 120) -> None:
        def ready() -> bool:
            obj = self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, "workflowdefinitions", name
            )
            conditions = (obj.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_until(ready, timeout=timeout, what=f"WorkflowDefinition {name} to be Ready")

    # -- API server metrics ----------------------------------------------------------------
    def request_counts(self) -> Counter[tuple[str, str, str]]:
        """``apiserver_request_total`` summed by (verb, resource, subresource)."""
        ctx = ssl.create_default_context(cafile=str(self.cluster.ca_file))
        req = urllib.request.Request(
            f"{self.cluster.server}/metrics",
            headers={"Authorization": f"Bearer {self.cluster.tokens['admin']}"},
        )
        with urllib.request.urlopen(req, timeout=10, context=ctx) as response:
            text = response.read().decode()
        counts: Counter[tuple[str, str, str]] = Counter()
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels_text, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
            labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
            key = (
                labels.get("verb", ""),
                labels.get("resource", ""),
                labels.get("subresource", ""),
            )
            counts[key] += int(float(value))
        return counts


def parse_process_stat(text: str) -> tuple[str, float]:
    """A ``/proc/PID/stat`` line's command name and user + system CPU seconds."""
    fields = text[text.rindex(")") + 2 :].split()
    seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return text[text.index("(") + 1 : text.rindex(")")], seconds


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    return parse_process_stat(Path(f"/proc/{pid}/stat").read_text())[1]


class MachineCpu:
    """CPU time of the whole machine (``/proc/stat``) and of each process by name, read
    before and after a run: what every process (API server, etcd, controllers, kwok,
    PostgreSQL, the operator, the benchmark's own clients) spent on it. On a machine whose
    cores are all busy, the rate a workload can reach is the cores' time divided by this."""

    def __init__(self, names: Mapping[int, str] | None = None) -> None:
        self.names = dict(names or {})  # processes named by pid (the operator, the API)
        self._before = self._read()

    def _read(self) -> tuple[float, Counter[str]]:
        ticks = os.sysconf("SC_CLK_TCK")
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
        busy = (user + nice + system + irq + softirq) / ticks  # steal: the host's, not ours
        by_name: Counter[str] = Counter()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue  # exited meanwhile
            comm, seconds = parse_process_stat(text)
            name = self.names.get(int(stat.parent.name)) or _process_group(comm)
            by_name[name] += seconds
        return busy, by_name

    def per_item(self, items: float) -> dict[str, Any]:
        """Milliseconds per item: the machine's, and the largest processes' shares."""
        busy0, names0 = self._before
        busy1, names1 = self._read()
        names1.subtract(names0)
        cores = os.cpu_count() or 1
        machine_ms = 1000 * (busy1 - busy0) / items
        named = {name: seconds for name, seconds in names1.items() if seconds > 0}
        unattributed = (busy1 - busy0) - sum(named.values())  # processes that exited, the kernel
        return {
            "machine_cpu_ms": round(machine_ms, 1),
            "cores": cores,
            "bound_per_minute": round(cores * 60_000 / machine_ms, 1) if machine_ms else None,
            "by_process_ms": {
                name: round(1000 * seconds / items, 1)
                for name, seconds in sorted(named.items(), key=lambda kv: -kv[1])
                if seconds * 1000 / items >= 0.5
            },
            "unattributed_ms": round(1000 * max(unattributed, 0) / items, 1),
        }


def _process_group(comm: str) -> str:
    for prefix, name in (
        ("kube-apiserver", "kube-apiserver"),
        ("kube-controller", "kube-controller-manager"),
        ("kube-scheduler", "kube-scheduler"),
        ("etcd", "etcd"),
        ("kwok", "kwok"),
        ("postgres", "postgres"),
        ("python", "python (benchmark and others)"),
    ):
        if comm.startswith(prefix):
            return name
    return "other"


def stats_delta(before: Mapping[str, int], after: Mapping[str, int], per: int) -> dict[str, float]:
    """Counter increments divided by ``per`` (workflows or tasks); counters that did not
    move are left out."""
    return {
        k: round((after[k] - before.get(k, 0)) / per, 1)
        for k in after
        if after[k] != before.get(k, 0) or "." not in k
    }


def counts_delta(
    before: Counter[tuple[str, str, str]], after: Counter[tuple[str, str, str]]
) -> Counter[tuple[str, str, str]]:
    delta: Counter[tuple[str, str, str]] = Counter()
    for key in set(before) | set(after):
        if after[key] - before[key]:
            delta[key] = after[key] - before[key]
    return delta


def describe_calls(delta: Counter[tuple[str, str, str]]) -> dict[str, int]:
    """``"VERB resource[/sub]" -> count``, largest first."""
    out: dict[str, int] = {}
    for (verb, resource, sub), count in delta.most_common():
        out[f"{verb} {resource}{'/' + sub if sub else ''}"] = count
    return out


# -- creating many objects ---------------------------------------------------------------
def create_many(
    create: Callable[[dict[str, Any]], object], bodies: Iterable[dict[str, Any]]
) -> None:
    """Create objects with a few concurrent clients (the same for Plait and for raw Jobs)."""
    with ThreadPoolExecutor(CREATE_WORKERS) as pool:
        for future in [pool.submit(create, body) for body in bodies]:
            future.result()


# -- watching completions ----------------------------------------------------------------
def job_outcome(job: Mapping[str, Any]) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return "ok" if cond["type"] == "Complete" else "failed"
    return None


def instance_outcome(obj: Mapping[str, Any]) -> str | None:
    phase = (obj.get("status") or {}).get("phase")
    if phase in FINAL_PHASES:
        return "ok" if phase == "Succeeded" else str(phase)
    return None


@dataclass
class Watcher:
    """Lists then watches one kind in a namespace from a thread, and records the moment
    (``time.monotonic()``) each object is first seen finished. No polling, no sleeps."""

    env: Environment
    namespace: str
    kind: str  # "jobs" or "workflowinstances"
    finished: dict[str, tuple[float, str]] = field(default_factory=dict)
    _cv: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError(f"listing {self.kind} in {self.namespace} took over 60s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _list(self, **kwargs: Any) -> Any:
        if self.kind == "jobs":
            return self.env.batch.list_namespaced_job(self.namespace, **kwargs)
        return self.env.custom.list_namespaced_custom_object(
            API_GROUP, API_VERSION, self.namespace, "workflowinstances", **kwargs
        )

    def _as_dict(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, dict):
            return obj
        return dict(self.env.client.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    def _see(self, obj: Mapping[str, Any], now: float) -> None:
        outcome = job_outcome(obj) if self.kind == "jobs" else instance_outcome(obj)
        name = obj["metadata"]["name"]
        if outcome is not None and name not in self.finished:
            with self._cv:
                self.finished[name] = (now, outcome)
                self._cv.notify_all()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                listing = self._as_dict(self._list())
                now = time.monotonic()
                for item in listing.get("items") or ():
                    self._see(item, now)
                self._ready.set()
                version = listing["metadata"]["resourceVersion"]
                try:
                    w = watch.Watch()  # type: ignore[no-untyped-call]
                    for event in w.stream(  # type: ignore[no-untyped-call]
                        self._list, resource_version=version, timeout_seconds=60
                    ):
                        self._see(self._as_dict(event["object"]), time.monotonic())
                        if self._stop.is_set():
                            w.stop()  # type: ignore[no-untyped-call]
                except ApiException as exc:
                    if exc.status != 410:
                        raise
        except BaseException as exc:
            self._error = exc
            with self._cv:
                self._cv.notify_all()

    def wait_for(self, names: Iterable[str], timeout: float) -> bool:
        """True once every name is finished; False at the deadline."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        with self._cv:
            while not wanted <= self.finished.keys():
                if self._error is not None:
                    raise RuntimeError(f"watching {self.kind} failed") from self._error
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 5))
        return True

    def last(self, names: Iterable[str]) -> float:
        return max(self.finished[n][0] for n in names)

    def failures(self, names: Iterable[str]) -> dict[str, str]:
        return {n: self.finished[n][1] for n in names if self.finished[n][1] != "ok"}


# -- the operator --------------------------------------------------------------------------
class Operator:
    """``python -m plait operator`` for one namespace and database, like the tests start it."""

    def __init__(self, env: Environment, namespace: str, dsn: str, log: Path) -> None:
        self.health_port = free_port()
        environ = {
            key: value for key, value in os.environ.items() if not key.startswith("PLAIT_DATABASE")
        }
        environ.update(KUBECONFIG=str(env.cluster.kubeconfig), PLAIT_DATABASE_URL=dsn)
        environ.setdefault("PLAIT_LOG_LEVEL", "INFO")
        self.args = [
            sys.executable,
            "-m",
            "plait",
            "operator",
            "--namespace",
            namespace,
            "--health-port",
            str(self.health_port),
        ]
        self.env = environ
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Operator:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
            )

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the operator exited:\n{tail}")
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        try:
            wait_until(healthy, timeout=60, what="the operator's /healthz")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_mib(self) -> float:
        """The process's RSS high-water mark (``VmHWM``), in MiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        kib = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
        return round(kib / 1024, 1)

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        return process_cpu_seconds(self.pid)


# -- profiling -----------------------------------------------------------------------------
class Profiler:
    """py-spy sampling a process (CPU samples only, non-blocking), collapsed stacks out."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        exe = Path(sys.executable).with_name("py-spy")
        self.out = out
        self.args = [
            str(exe),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--nonblocking",
            "--function",
            "--format",
            "raw",
            "--output",
            str(out),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        time.sleep(0.5)  # let py-spy attach before the measured work starts
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy failed: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


#: Frames every sample passes through (start-up, the event loop, thread plumbing): left out
#: of the cumulative ranking, where they would only say "100%".
PLUMBING = (
    "(<frozen runpy>)",
    "(click/core.py)",
    "(asyncio/runners.py)",
    "(asyncio/base_events.py)",
    "(asyncio/events.py)",
    "(threading.py)",
    "(plait/__main__.py)",
    "main (plait/cli.py)",
    "operator_command (plait/controller/app.py)",
)

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/operator/", "/lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." else tail
    return path


def top_functions(collapsed: Path, limit: int = 15) -> dict[str, Any]:
    """Top functions by cumulative (inclusive) and by self samples, from collapsed stacks."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            frames.append(f"{m['func']} ({_short(m['file'])})" if m else frame)
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        for name in set(frames):
            if not name.endswith(PLUMBING):
                inclusive[name] += count
        if frames:
            own[frames[-1]] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / max(total, 1), 1)}
            for name, n in counter.most_common(limit)
        ]

    return {"samples": total, "cumulative": rows(inclusive), "self": rows(own)}
