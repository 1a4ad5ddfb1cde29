"""Benchmark: latency from an event's acknowledgment to its WorkflowInstance, at a steady rate.

``plait api`` stores each event (202 = committed), the operator's dispatcher picks it up
(LISTEN/NOTIFY) and its EventTrigger creates a WorkflowInstance. The benchmark sends
events one by one at ``rate`` per second from a thread and watches WorkflowInstances: the
latency of an event is the moment its instance is first seen by the watch minus the moment
its POST returned, both on this process's monotonic clock. The trigger maps the event's
id into the instance's arguments, which ties the two together. The watch's own delivery
delay is included, so the figures are an upper bound. The raw ceiling of the same run: the
benchmark creating the same number of WorkflowInstances itself, at the same rate, timed
from the create call to the watch seeing the object.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from kubernetes import watch

from bench import workloads
from bench.harness import REPO, RESULTS, Environment, Operator, say
from plait import API_GROUP, API_VERSION
from plait.testing._process import free_port, stop_process, wait_until

EVENT_TYPE = "dev.plait.bench.latency"
#: Events sent first and not measured: the first runs pay one-time costs (connections,
#: clients, caches, the first Jobs); their latency is reported by the cold-start note in
#: docs/benchmarks.md, not mixed into the steady-state percentiles.
WARM_UP = 10


class Api:
    """``python -m plait api`` on a free port, with a fresh bearer token."""

    def __init__(self, dsn: str, log: Path) -> None:
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_DATABASE")}
        environ.update(PLAIT_DATABASE_URL=dsn, PLAIT_API_TOKEN=self.token)
        self.args = [sys.executable, "-m", "plait", "api", "--port", str(self.port)]
        self.env = environ
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Api:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
            )

        def ready() -> bool:
            url = f"http://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        wait_until(ready, timeout=60, what="plait api /readyz")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)

    def send(self, namespace: str, event: dict[str, Any]) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/namespaces/{namespace}/events",
            data=json.dumps(event).encode(),
            method="POST",
            headers={
                "Content-Type": "application/cloudevents+json",
                "Authorization": f"Bearer {self.token}",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)


class CreationWatch:
    """Records when each WorkflowInstance is first seen, keyed by its ``who`` argument."""

    def __init__(self, env: Environment, namespace: str) -> None:
        self.env = env
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CreationWatch:
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("the WorkflowInstance watch did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _list(self, **kwargs: Any) -> Any:
        return self.env.custom.list_namespaced_custom_object(
            API_GROUP, API_VERSION, self.namespace, "workflowinstances", **kwargs
        )

    def _run(self) -> None:
        version = self._list()["metadata"]["resourceVersion"]
        self._ready.set()
        w = watch.Watch()  # type: ignore[no-untyped-call]
        for event in w.stream(self._list, resource_version=version, timeout_seconds=600):  # type: ignore[no-untyped-call]
            now = time.monotonic()
            obj = event["object"]
            who = ((obj.get("spec") or {}).get("arguments") or {}).get("who")
            if who and who not in self.seen:
                self.seen[who] = now
            if self._stop.is_set():
                w.stop()  # type: ignore[no-untyped-call]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run(env: Environment, n: int, *, rate: float = 2.0) -> dict[str, Any]:
    """``n`` events at ``rate`` per second; latency percentiles in milliseconds."""
    ns = env.namespace("ev-latency")
    dsn = env.database("bench_event_latency")
    logs = RESULTS / "logs"
    with (
        Operator(env, ns, dsn, logs / "event-latency-operator.log"),
        Api(dsn, logs / "event-latency-api.log") as api,
    ):
        definition = workloads.definition("one", workloads.one_task(0.0))
        definition["spec"]["parameters"] = [{"name": "who", "default": "nobody"}]
        env.apply(ns, definition)
        env.wait_definition_ready(ns, "one")
        env.apply(
            ns,
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": "EventTrigger",
                "metadata": {"name": "latency"},
                "spec": {
                    "eventType": EVENT_TYPE,
                    "workflowRef": {"name": "one"},
                    "arguments": {"who": "event.id"},
                },
            },
        )
        ready = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        wait_until(
            lambda: "True" in env.kubectl("-n", ns, "get", "etr", "latency", "-o", ready),
            timeout=60,
            what="the EventTrigger to be Ready",
        )
        acked: dict[str, float] = {}
        say(f"event latency: {n} events at {rate:g}/s, after {WARM_UP} not measured")
        with CreationWatch(env, ns) as watcher:
            started = time.monotonic() + WARM_UP / rate
            for i in range(-WARM_UP, n):
                due = started + i / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing the load generator, not waiting on Plait
                event_id = str(uuid.uuid4())
                event = {
                    "specversion": "1.0",
                    "id": event_id,
                    "source": "/bench",
                    "type": EVENT_TYPE,
                    "data": {"n": i},
                }
                status = api.send(ns, event)
                if status not in (200, 202):
                    raise RuntimeError(f"event {i}: HTTP {status}")
                if i >= 0:
                    acked[event_id] = time.monotonic()
            wait_until(
                lambda: acked.keys() <= watcher.seen.keys(),
                timeout=120,
                what="a WorkflowInstance per event",
            )
            sent_s = time.monotonic() - started
            # The raw ceiling, same run, same load: the benchmark creates the instances
            # itself at the same rate; the time from just before the create call to the
            # watch seeing the object is what the API server and the watch cost alone.
            say(f"event latency: raw ceiling, {n} direct creates at {rate:g}/s")
            created: dict[str, float] = {}
            started = time.monotonic()
            for i in range(n):
                pause = started + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                who = f"raw-{i}"
                created[who] = time.monotonic()
                env.custom.create_namespaced_custom_object(
                    API_GROUP, API_VERSION, ns, "workflowinstances",
                    {
                        "apiVersion": f"{API_GROUP}/{API_VERSION}",
                        "kind": "WorkflowInstance",
                        "metadata": {"name": f"raw-{i:05d}"},
                        "spec": {"workflowRef": {"name": "one"}, "arguments": {"who": who}},
                    },
                )  # fmt: skip
            wait_until(
                lambda: created.keys() <= watcher.seen.keys(),
                timeout=120,
                what="every direct create seen",
            )
    plait = [(watcher.seen[e] - t) * 1000 for e, t in acked.items()]  # in sending order
    slowest = sorted(range(n), key=lambda i: plait[i], reverse=True)[:5]
    raw = [(watcher.seen[w] - t) * 1000 for w, t in created.items()]
    return {
        "events": n,
        "rate_per_s": rate,
        "sent_in_s": round(sent_s, 1),
        "ack_to_instance_ms": summary(plait),
        "raw_create_to_seen_ms": summary(raw),
        "slowest_events": [{"index": i, "ms": round(plait[i], 1)} for i in slowest],
    }


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(latencies), 1),
        "p90": round(percentile(latencies, 0.90), 1),
        "p99": round(percentile(latencies, 0.99), 1),
        "max": round(max(latencies), 1),
    }


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    with Environment() as env:
        result = run(env, n, rate=rate)
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "event_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
