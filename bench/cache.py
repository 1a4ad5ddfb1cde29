"""The cache-hit path: what a task whose result is reused costs, against one that runs.

Two one-task workflows on kwok, the same task (a 0 s simulated container): ``launched``
has no cache, so each of N runs creates a Job and waits for it; ``cached`` has a cache key
that does not change, so after one warm-up run (which stores the result) each of N runs
reuses it, with no Job. Both from the first create to the last run seen Succeeded, in the
same run of the benchmark; the figure is the cached run's cost as a share of the launched
one's (smaller is better), and the operator's CPU per run for each.
"""

from __future__ import annotations

from typing import Any

from bench import workloads
from bench.harness import RESULTS, Environment, Operator, say


def _cached_one_task() -> list[dict[str, Any]]:
    task = workloads.one_task(0.0)[0]
    return [{**task, "cache": {"key": "'bench-constant'", "ttlSeconds": 3600}}]


def run(env: Environment, n: int) -> dict[str, Any]:
    timeout = max(300.0, n * 3.0)
    ns = env.namespace("cache")
    dsn = env.database("bench_cache")
    result: dict[str, Any] = {"n": n}
    with Operator(env, ns, dsn, RESULTS / "logs" / "cache-operator.log") as op:
        env.apply(ns, workloads.definition("launched", workloads.one_task(0.0)))
        env.apply(ns, workloads.definition("cached", _cached_one_task()))
        env.wait_definition_ready(ns, "launched")
        env.wait_definition_ready(ns, "cached")
        workloads.run_plait_instances(env, ns, "cached", ["warm-up"], timeout)
        for label in ("launched", "cached"):
            say(f"cache: {n} runs of the {label} workflow")
            cpu0 = op.cpu_seconds()
            names = [f"{label}-{i:05d}" for i in range(n)]
            measured = workloads.run_plait_instances(env, ns, label, names, timeout)
            cpu = op.cpu_seconds() - cpu0
            measured["ms_per_run"] = round(1000 * measured["wall_s"] / n, 1)
            measured["operator_cpu_ms_per_run"] = round(1000 * cpu / n, 1)
            result[label] = measured
            say(f"cache: {label} {measured['ms_per_run']} ms per run")
    result["ratio"] = round(result["cached"]["wall_s"] / result["launched"]["wall_s"], 3)
    result["cpu_ratio"] = round(
        result["cached"]["operator_cpu_ms_per_run"]
        / max(result["launched"]["operator_cpu_ms_per_run"], 0.1),
        3,
    )
    say(f"cache: a cached run costs {result['ratio']} of a launched one (wall)")
    return result
