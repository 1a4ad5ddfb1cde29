"""``python -m bench [--only throughput|wide|deep|fanout|cache|events|latency|realnode|tests]
[--tasks N] [--items N]``: run, print, write JSON. ``realnode`` (one-task workflows on the
real node), ``fanout`` (a forEach of ``--items`` items, compared with the wide DAG of the
same run, which it runs too), ``cache`` (cached runs against launched ones) and ``tests``
(local WorkflowTest cases of a 20-task workflow per second, no cluster) run only when
asked."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import traceback
from typing import Any

from bench import (
    cache,
    dag,
    event_latency,
    events,
    fanout,
    realnode,
    scaleout,
    throughput,
    workflow_tests,
)
from bench.harness import RESULTS, Environment, say

DEFAULT_SIZES = {
    "throughput": 200,
    "wide": 1000,
    "deep": 200,
    "events": 20000,
    "latency": 120,
    "realnode": 20,
    "fanout": 2000,
    "cache": 200,
    "tests": 1000,
    "scaleout": 200,
    "churn": 1000,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Plait's benchmarks against the raw control plane."
    )
    parser.add_argument(
        "--only", choices=sorted(DEFAULT_SIZES), action="append", help="run only these (repeat)"
    )
    parser.add_argument(
        "--tasks",
        type=int,
        help="size: workflows for throughput, fan-out width for wide, chain length for deep, "
        "batched events for events (singles: a fifth), cases for tests "
        f"(defaults {DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="simulated seconds each task runs (0)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds before a DAG run is given up"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy pass")
    parser.add_argument(
        "--items",
        type=int,
        default=DEFAULT_SIZES["fanout"],
        help="items of the fanout benchmark's forEach (at most 10000; default %(default)s)",
    )
    parser.add_argument(
        "--parallelism", type=int, help="forEach.parallelism of the fanout benchmark (unset)"
    )
    return parser.parse_args(argv)


def _machine_rows(p: dict[str, Any], r: dict[str, Any], per: str) -> list[tuple[Any, ...]]:
    """The whole machine's CPU per workflow or task, Plait against raw, by process."""
    if "cpu" not in p or "cpu" not in r:
        return []
    pc, rc = p["cpu"], r["cpu"]
    rows: list[tuple[Any, ...]] = [
        ("", f"machine CPU ms/{per}", pc["machine_cpu_ms"], rc["machine_cpu_ms"], ""),
        (
            "",
            f"bound/min on {pc['cores']} cores",
            pc["bound_per_minute"],
            rc["bound_per_minute"],
            "",
        ),
    ]
    for name in dict.fromkeys([*pc["by_process_ms"], *rc["by_process_ms"]]):
        by_p, by_r = pc["by_process_ms"].get(name, 0), rc["by_process_ms"].get(name, 0)
        rows.append(("", f"  {name} ms", by_p, by_r, ""))
    return rows


def _f(value: Any) -> str:
    return "-" if value is None else str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [("benchmark", "metric", "Plait", "raw", "ratio")]
    tp = results.get("throughput")
    if tp and "plait" in tp:
        p, r, calls = tp["plait"], tp["raw"], tp["api_calls"]
        rows += [
            (
                f"throughput n={tp['n']}",
                "workflows/min",
                p["per_minute"],
                r["per_minute"],
                tp["ratio"],
            ),
            ("", "wall s", p["wall_s"], r["wall_s"], ""),
            ("", "API calls (total)", calls["plait_total"], calls["raw_total"], ""),
            ("", "API calls added/workflow", calls["added_per_workflow"], "", ""),
            ("", "operator CPU ms/workflow", p["operator_cpu_ms_per_workflow"], "", ""),
            ("", "operator peak RSS MiB", p["peak_rss_mib"], "", ""),
            ("", "instance object bytes", p["instance_object_bytes"], "", ""),
        ]
        rows += _machine_rows(p, r, "workflow")
    for shape in ("wide", "deep"):
        d = results.get(shape)
        if d and "plait" in d:
            p, r = d["plait"], d["raw"]
            rows += [
                (f"{shape} tasks={d['tasks']}", "wall s", p["wall_s"], r["wall_s"], d["ratio"]),
                ("", "overhead ms/task", p["overhead_per_task_ms"], r["overhead_per_task_ms"], ""),
                ("", "Plait-added ms/task", d["added_overhead_per_task_ms"], "", ""),
                ("", "API calls added/task", d["added_api_calls_per_task"], "", ""),
                ("", "operator CPU s", p["operator_cpu_s"], "", ""),
                ("", "operator peak RSS MiB", p["peak_rss_mib"], "", ""),
                ("", "instance object bytes", p["instance_object_bytes"], "", ""),
                *_machine_rows(p, r, "task"),
            ]
    fo = results.get("fanout")
    if fo and "plait" in fo:
        p, r = fo["plait"], fo["raw"]
        rows += [
            (f"fanout items={fo['items']}", "wall s", p["wall_s"], r["wall_s"], fo["ratio"]),
            ("", "progress", p["progress"], "", ""),
            ("", "Plait-added ms/item", fo["added_overhead_per_item_ms"], "", ""),
            ("", "wide's Plait-added ms/task", _f(fo.get("wide_added_overhead_per_task_ms")),
             "", _f(fo.get("added_per_item_vs_wide"))),
            ("", "API calls added/item", fo["added_api_calls_per_item"], "", ""),
            ("", "operator CPU s", p["operator_cpu_s"], "", ""),
            ("", "operator peak RSS MiB", p["peak_rss_mib"], "", ""),
            ("", "instance object bytes (largest)", p["instance_object_bytes_largest"], "", ""),
            ("", "items launched over s", p["items_launched_over_s"], "", ""),
            ("", "status behind the records, s: max | p95",
             _f(p.get("status_lag_max_s")), _f(p.get("status_lag_p95_s")), ""),
            *_machine_rows(p, r, "item"),
        ]  # fmt: skip
        for step in fo["planning"]:
            rows.append(("", f"plan() ms, {step['items_finished']} items done",
                         step["plan_ms"], "", ""))  # fmt: skip
    ev = results.get("events")
    if ev and "batch" in ev:
        for mode in ("single", "batch"):
            m = ev[mode]
            label = f"events {mode} x{m['clients']} clients, {m['events_per_request']}/request"
            rows.append((label, "events/s acked", m["plait_events_per_s"],
                         m["raw_events_per_s"], m["ratio"]))  # fmt: skip
            if "untraced_plait_events_per_s" in m:
                rows.append(("", "events/s acked, observability off",
                             m["untraced_plait_events_per_s"], m["raw_events_per_s"],
                             m["untraced_ratio"]))  # fmt: skip
                rows.append(("", "API CPU us/event (on | off)", m["api_cpu_us_per_event"],
                             m["untraced_api_cpu_us_per_event"], ""))  # fmt: skip
            if "machine" in m:
                pm, rm = m["machine"]["plait"], m["machine"]["raw"]
                rows.append(("", "machine CPU us/event", pm["machine_cpu_us"],
                             rm["machine_cpu_us"], ""))  # fmt: skip
                rows.append(("", "bound events/s on these cores", pm["bound_events_per_s"],
                             rm["bound_events_per_s"], ""))  # fmt: skip
                for name in dict.fromkeys([*pm["by_process_us"], *rm["by_process_us"]]):
                    rows.append(("", f"  {name} us", pm["by_process_us"].get(name, 0),
                                 rm["by_process_us"].get(name, 0), ""))  # fmt: skip
    lat = results.get("latency")
    if lat and "ack_to_instance_ms" in lat:
        ms = lat["ack_to_instance_ms"]
        label = f"latency {lat['events']} events at {lat['rate_per_s']:g}/s"
        raw = lat.get("raw_create_to_seen_ms", {})
        rows.append((label, "ack -> instance p50 ms", ms["p50"], raw.get("p50", ""), ""))
        rows.append(("", "ack -> instance p99 ms", ms["p99"], raw.get("p99", ""), ""))
    ca = results.get("cache")
    if ca and "cached" in ca:
        c, la = ca["cached"], ca["launched"]
        label = f"cache n={ca['n']}"
        rows.append((label, "ms/run: cached | launched", c["ms_per_run"], la["ms_per_run"],
                     ca["ratio"]))  # fmt: skip
        rows.append(("", "CPU ms/run: cached | launched", c["operator_cpu_ms_per_run"],
                     la["operator_cpu_ms_per_run"], ca["cpu_ratio"]))  # fmt: skip
    wt = results.get("tests")
    if wt and "cases_per_s" in wt:
        label = f"tests cases={wt['cases']} tasks={wt['tasks']}"
        rows.append((label, "cases/s (load + run)", wt["cases_per_s"], "", ""))
        rows.append(("", "cases/s (run only)", wt["cases_per_s_run_only"], "", ""))
        rows.append(("", "cases per CPU second", wt["cases_per_cpu_s"], "", ""))
    rn = results.get("realnode")
    if rn and "plait" in rn:
        label = f"realnode n={rn['n']}"
        p, r = rn["plait"], rn["raw"]
        rows.append((label, "workflows/min", p["per_minute"], r["per_minute"], rn["ratio"]))
        rows.append(("", "wall s", p["wall_s"], r["wall_s"], ""))
    rows += scaleout.rows(results)
    for name, res in results.items():
        if "error" in res:
            rows.append((name, "FAILED", res["error"][:60], "", ""))
    widths = [max(len(_f(row[i])) for row in rows) for i in range(5)]
    lines = ["  ".join(_f(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = "\n".join(lines)
    prof = (tp or {}).get("profile")
    if prof:
        out += f"\n\noperator profile ({prof['samples']} CPU samples), top by cumulative:\n"
        out += "\n".join(
            f"  {row['percent']:5.1f}%  {row['function']}" for row in prof["cumulative"]
        )
        out += "\n\ntop by self:\n"
        out += "\n".join(f"  {row['percent']:5.1f}%  {row['function']}" for row in prof["self"])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    chosen = args.only or ["throughput", "wide", "deep", "events", "latency"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    results: dict[str, dict[str, Any]] = {}
    if "events" in chosen:
        # PostgreSQL and plait api only: no control plane needed.
        started = time.monotonic()
        try:
            res = events.run(args.tasks or DEFAULT_SIZES["events"])
        except Exception as exc:
            traceback.print_exc()
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res["benchmark_s"] = round(time.monotonic() - started, 1)
        res["machine"] = machine
        res["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        results["events"] = res
        (RESULTS / "events.json").write_text(json.dumps(res, indent=2) + "\n")
        say(f"events: wrote {RESULTS / 'events.json'}")
    if "tests" in chosen:
        # No cluster, no database: the engine alone, with mocks and a simulated clock.
        started = time.monotonic()
        res = workflow_tests.run(args.tasks or DEFAULT_SIZES["tests"])
        res["benchmark_s"] = round(time.monotonic() - started, 1)
        res["machine"] = machine
        res["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        results["tests"] = res
        (RESULTS / "tests.json").write_text(json.dumps(res, indent=2) + "\n")
        say(f"tests: wrote {RESULTS / 'tests.json'}")
    if "fanout" in chosen and "wide" not in chosen:
        chosen.append("wide")  # fanout's Plait-added ms per item is compared with wide's
    clustered = ["throughput", "wide", "deep", "fanout", "cache", "latency", "realnode"]
    clustered += ["scaleout", "churn"]
    if not set(clustered) & set(chosen):
        print(table(results))
        return 1 if any("error" in r for r in results.values()) else 0
    with Environment(real_node="realnode" in chosen) as env:
        for name in clustered:
            if name not in chosen:
                continue
            size = args.items if name == "fanout" else args.tasks or DEFAULT_SIZES[name]
            started = time.monotonic()
            try:
                if name == "latency":
                    res = event_latency.run(env, size)
                elif name == "realnode":
                    res = realnode.run(env, size)
                elif name in ("scaleout", "churn"):
                    res = scaleout.run(env, name, size, duration_s=args.duration)
                elif name == "cache":
                    res = cache.run(env, size)
                elif name == "fanout":
                    res = fanout.run(
                        env,
                        size,
                        wide=results.get("wide"),
                        duration_s=args.duration,
                        timeout=args.timeout,
                        parallelism=args.parallelism,
                    )
                elif name == "throughput":
                    res = throughput.run(
                        env, size, duration_s=args.duration, profile=not args.no_profile
                    )
                else:
                    res = dag.run(env, name, size, duration_s=args.duration, timeout=args.timeout)
            except Exception as exc:
                traceback.print_exc()
                res = {"size": size, "error": f"{type(exc).__name__}: {exc}"}
            res["benchmark_s"] = round(time.monotonic() - started, 1)
            say(f"{name}: deleting its Jobs before going on")
            env.quiesce()
            res["machine"] = machine
            res["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            results[name] = res
            (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
            say(f"{name}: wrote {RESULTS / (name + '.json')}")
    print(table(results))
    return 1 if any("error" in r for r in results.values()) else 0
