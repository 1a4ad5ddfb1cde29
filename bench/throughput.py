"""Benchmark 1 (with 3 and 4): one-task workflows per minute, Plait against raw Jobs.

Raw: N Jobs (Plait's own manifest, same kwok outcome) created by the benchmark with no
operator, from the first create to the last Job seen Complete. Plait: N WorkflowInstances
of a one-task WorkflowDefinition, from the first create to the last seen Succeeded.
API calls: the API server's ``apiserver_request_total`` delta around each run; the
difference between the two is what the operator adds (the benchmark's own creates and
watches are the same count in both). A second, profiled pass runs py-spy on the operator.
"""

from __future__ import annotations

import time
from typing import Any

from bench import workloads
from bench.harness import (
    RESULTS,
    Environment,
    MachineCpu,
    Operator,
    Profiler,
    counts_delta,
    describe_calls,
    say,
    stats_delta,
    top_functions,
)

SETTLE_S = 3.0  # let trailing writes (coalesced status patches) land before counting


def run(env: Environment, n: int, *, duration_s: float, profile: bool) -> dict[str, Any]:
    timeout = max(300.0, n * 3.0)
    say(f"throughput: raw ceiling, {n} Jobs")
    raw_ns = env.namespace("tp-raw")
    before = env.request_counts()
    machine = MachineCpu()
    raw = workloads.run_raw_levels(env, raw_ns, [n], duration_s, timeout)
    raw["cpu"] = machine.per_item(n)
    time.sleep(SETTLE_S)
    raw_calls = counts_delta(before, env.request_counts())
    raw["per_minute"] = round(n / raw["wall_s"] * 60, 1)
    raw["api_calls"] = sum(raw_calls.values())
    say(f"throughput: raw {raw['per_minute']}/min ({raw['wall_s']}s)")

    ns = env.namespace("tp-plait")
    dsn = env.database("bench_throughput")
    result: dict[str, Any] = {"n": n, "task_duration_s": duration_s, "raw": raw}
    with Operator(env, ns, dsn, RESULTS / "logs" / "throughput-operator.log") as op:
        env.apply(ns, workloads.definition("one", workloads.one_task(duration_s)))
        env.wait_definition_ready(ns, "one")
        say(f"throughput: Plait, {n} WorkflowInstances")
        before = env.request_counts()
        db0 = env.db_stats("bench_throughput")
        cpu0 = op.cpu_seconds()
        machine = MachineCpu({op.pid: "plait operator"})
        names = [f"run-{i:05d}" for i in range(n)]
        plait = workloads.run_plait_instances(env, ns, "one", names, timeout)
        cpu = op.cpu_seconds() - cpu0
        plait["cpu"] = machine.per_item(n)
        time.sleep(SETTLE_S)
        plait_calls = counts_delta(before, env.request_counts())
        plait["database_per_workflow"] = stats_delta(db0, env.db_stats("bench_throughput"), n)
        plait["per_minute"] = round(n / plait["wall_s"] * 60, 1)
        plait["api_calls"] = sum(plait_calls.values())
        plait["operator_cpu_s"] = round(cpu, 2)
        plait["operator_cpu_ms_per_workflow"] = round(1000 * cpu / n, 1)
        plait["peak_rss_mib"] = op.peak_rss_mib()
        plait["instance_object_bytes"] = env.object_size(ns, "workflowinstance", names[-1])
        result["plait"] = plait
        result["ratio"] = round(plait["per_minute"] / raw["per_minute"], 3)
        say(f"throughput: Plait {plait['per_minute']}/min, ratio {result['ratio']}")

        extra = plait_calls.copy()
        extra.subtract(raw_calls)
        result["api_calls"] = {
            "plait_total": plait["api_calls"],
            "raw_total": raw["api_calls"],
            "added_per_workflow": round((plait["api_calls"] - raw["api_calls"]) / n, 2),
            "plait_by_request": describe_calls(plait_calls),
            "raw_by_request": describe_calls(raw_calls),
            "difference_by_request": {
                k: v for k, v in describe_calls(extra).items() if abs(v) >= max(2, n // 20)
            },
        }

        if profile:
            say(f"throughput: profiled pass (py-spy), {n} more WorkflowInstances")
            out = RESULTS / "operator-profile.txt"
            names = [f"prof-{i:05d}" for i in range(n)]
            with Profiler(op.pid, out):
                profiled = workloads.run_plait_instances(env, ns, "one", names, timeout)
            profiled["per_minute"] = round(n / profiled["wall_s"] * 60, 1)
            result["profile"] = {
                "tool": "py-spy record --nonblocking --function --format raw (CPU samples only)",
                "collapsed_stacks": str(out.relative_to(RESULTS.parents[1])),
                "profiled_pass": profiled,
                **top_functions(out),
            }
    return result
