"""Benchmark 2: a wide DAG (root, a fan-out of W tasks, a join) and a deep chain.

Both run once through Plait and once raw (the benchmark creates each level's Jobs as soon
as it sees the previous level finish). Plait's overhead per task is
``(wall time - the critical path's simulated task time) / tasks``; the same formula on the
raw run gives the control plane's own share, and their difference is what Plait adds.
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
    counts_delta,
    describe_calls,
    say,
    stats_delta,
)

SETTLE_S = 3.0


def run(
    env: Environment, shape: str, size: int, *, duration_s: float, timeout: float
) -> dict[str, Any]:
    if shape == "wide":
        tasks = workloads.wide(size, duration_s)
        levels = [1, size, 1]
    else:
        tasks = workloads.deep(size, duration_s)
        levels = [1] * size
    total = len(tasks)
    critical_s = len(levels) * duration_s

    say(f"{shape}: raw ceiling, {total} Jobs in {len(levels)} levels")
    raw_ns = env.namespace(f"{shape}-raw")
    before = env.request_counts()
    machine = MachineCpu()
    raw = workloads.run_raw_levels(env, raw_ns, levels, duration_s, timeout)
    raw["cpu"] = machine.per_item(total)
    time.sleep(SETTLE_S)
    raw_calls = counts_delta(before, env.request_counts())
    raw["api_calls"] = sum(raw_calls.values())
    raw["api_calls_by_request"] = describe_calls(raw_calls)
    raw["overhead_per_task_ms"] = round(1000 * (raw["wall_s"] - critical_s) / total, 1)
    say(f"{shape}: raw {raw['wall_s']}s")

    ns = env.namespace(f"{shape}-plait")
    dsn = env.database(f"bench_{shape}")
    result: dict[str, Any] = {
        "shape": shape,
        "size": size,
        "tasks": total,
        "task_duration_s": duration_s,
        "critical_path_simulated_s": critical_s,
        "raw": raw,
    }
    with Operator(env, ns, dsn, RESULTS / "logs" / f"{shape}-operator.log") as op:
        env.apply(ns, workloads.definition(shape, tasks))
        env.wait_definition_ready(ns, shape)
        say(f"{shape}: Plait, one WorkflowInstance of {total} tasks")
        before = env.request_counts()
        db0 = env.db_stats(f"bench_{shape}")
        cpu0 = op.cpu_seconds()
        machine = MachineCpu({op.pid: "plait operator"})
        plait = workloads.run_plait_instances(env, ns, shape, [f"{shape}-run"], timeout)
        plait["operator_cpu_s"] = round(op.cpu_seconds() - cpu0, 2)
        plait["cpu"] = machine.per_item(total)
        time.sleep(SETTLE_S)
        plait_calls = counts_delta(before, env.request_counts())
        plait["api_calls"] = sum(plait_calls.values())
        plait["api_calls_by_request"] = describe_calls(plait_calls)
        plait["database_per_task"] = stats_delta(db0, env.db_stats(f"bench_{shape}"), total)
        plait["overhead_per_task_ms"] = round(1000 * (plait["wall_s"] - critical_s) / total, 1)
        plait["peak_rss_mib"] = op.peak_rss_mib()
        plait["instance_object_bytes"] = env.object_size(ns, "workflowinstance", f"{shape}-run")
        plait["definition_object_bytes"] = env.object_size(ns, "workflowdefinition", shape)
    result["plait"] = plait
    result["added_overhead_per_task_ms"] = round(
        1000 * (plait["wall_s"] - raw["wall_s"]) / total, 1
    )
    result["ratio"] = round(raw["wall_s"] / plait["wall_s"], 3)
    result["added_api_calls_per_task"] = round((plait["api_calls"] - raw["api_calls"]) / total, 2)
    say(f"{shape}: Plait {plait['wall_s']}s, ratio (raw/Plait) {result['ratio']}")
    return result
