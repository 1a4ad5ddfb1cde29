"""Benchmark: the throughput cost of full observability, on against off, in the same run.

The same workload (N one-task WorkflowInstances, as in bench/throughput.py) runs twice
against the same cluster and PostgreSQL, once with PLAIT_OBSERVABILITY_ENABLED=false
(stderr logging and in-process counters only) and once with everything on (log shipping,
spans, metric snapshots, database gauges), alternating the order over ``--rounds`` so
warm-up does not favour either. Reported: workflows per minute of each, the cost
``1 - on/off`` (aim: under 5 %), operator CPU seconds per workflow, and how many log
records and spans the "on" pass wrote.

    .venv/bin/python -m bench.observability --n 200 --rounds 2

Needs the observability wiring in the operator (``Telemetry.start`` in run_operator); until
then both passes are the same and the cost reads about 0 %.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench import workloads
from bench.harness import RESULTS, Environment, Operator, say

__all__ = ["main", "run"]


def _pass(env: Environment, n: int, duration_s: float, enabled: bool, tag: str) -> dict[str, Any]:
    ns = env.namespace(f"obs-{tag}")
    db = f"bench_obs_{tag}".replace("-", "_")
    dsn = env.database(db)
    op = Operator(env, ns, dsn, RESULTS / "logs" / f"observability-{tag}.log")
    op.env["PLAIT_OBSERVABILITY_ENABLED"] = "true" if enabled else "false"
    op.env["PLAIT_LOG_LEVEL"] = "INFO"
    with op:
        env.apply(ns, workloads.definition("one", workloads.one_task(duration_s)))
        env.wait_definition_ready(ns, "one")
        cpu0 = op.cpu_seconds()
        result = workloads.run_plait_instances(
            env, ns, "one", [f"run-{i:05d}" for i in range(n)], max(300.0, n * 3.0)
        )
        cpu = op.cpu_seconds() - cpu0
    result["per_minute"] = round(n / result["wall_s"] * 60, 1)
    result["cpu_s_per_workflow"] = round(cpu / n, 4)
    result["rows"] = _rows(dsn) if enabled else {}
    return result


def _rows(dsn: str) -> dict[str, int]:
    """Rows the "on" pass left in the observability tables."""
    import psycopg

    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for table in ("observability_logs", "observability_traces", "observability_metrics"):
            row = conn.execute(f"SELECT count(*) FROM observability_service.{table}").fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


def run(env: Environment, n: int, *, duration_s: float, rounds: int) -> dict[str, Any]:
    passes: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for r in range(rounds):
        order = [False, True] if r % 2 == 0 else [True, False]
        for enabled in order:
            key = "on" if enabled else "off"
            say(f"observability: round {r + 1}, {key}, {n} workflows")
            passes[key].append(_pass(env, n, duration_s, enabled, f"{key}-{r}"))
    off = sum(p["per_minute"] for p in passes["off"]) / rounds
    on = sum(p["per_minute"] for p in passes["on"]) / rounds
    return {
        "n": n,
        "rounds": rounds,
        "off_per_minute": round(off, 1),
        "on_per_minute": round(on, 1),
        "cost_percent": round((1 - on / off) * 100, 2) if off else None,
        "passes": passes,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="workflows per pass")
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs (order alternates)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds each task runs")
    args = parser.parse_args(argv)
    with Environment() as env:
        result = run(env, args.n, duration_s=args.duration, rounds=args.rounds)
    out = RESULTS / "observability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    say(
        f"observability: off {result['off_per_minute']}/min, on {result['on_per_minute']}/min, "
        f"cost {result['cost_percent']} % -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
