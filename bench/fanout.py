"""Benchmark: a dynamic fan-out (``forEach`` over an upstream task's output) of N items.

The workflow is ``list`` -> ``each`` (one item per element of a list that ``list``'s
output gives, known only at run time) -> ``join`` (reads the items' outputs): the same
shape as the ``wide`` DAG (1 + N + 1 tasks), but written as one task of the definition
instead of N. Its raw ceiling is the same three levels of Jobs created by the benchmark
itself. Besides wall time and Plait-added ms per item (compared with the wide DAG's
figure, measured in the same run), it reports the WorkflowInstance's size (largest seen
during the run and at the end; it must stay under 16 KB), the operator's peak RSS, and
what one pure planning step costs as the number of finished items grows.

A task's outputs are its termination message (at most 4 KiB), which holds about 1,000
small numbers, not 10,000: ``list`` writes 500 ids (and a remainder), and the list is
their concatenation, ``ids + ids + ... + rest``, in CEL. The expression uses no macro
(``map``, ``filter``): in the CEL library Plait uses those cost time quadratic in the
list's length (about 0.4 s for 2,000 elements here), which would be measured instead of
the fan-out.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from typing import Any

import psycopg

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
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.task_execution.states import TaskState
from plait.workflow_orchestrator.engine import Attempt, plan

SETTLE_S = 3.0
#: Ids per copy in ``list``'s output: 500 ids and a remainder of at most 499 fit the
#: 4 KiB termination message (two lists of 500 numbers are about 3.8 KB of JSON).
CHUNK = 500
#: The object size the instance must stay under (issue 14).
OBJECT_LIMIT = 16 * 1024
NAME = "fanout"


def list_outputs(items: int) -> dict[str, list[int]]:
    """What ``list`` writes: ``ids`` (0..CHUNK-1, or fewer) and ``rest`` (the remainder)."""
    return {"ids": list(range(min(items, CHUNK))), "rest": list(range(items % CHUNK))}


def list_expression(items: int) -> str:
    """CEL giving ``items`` elements from ``list``'s outputs, without macros."""
    copies = items // CHUNK if items >= CHUNK else 0
    terms = ["tasks.list.outputs.ids"] * copies + ["tasks.list.outputs.rest"]
    return " + ".join(terms)


def tasks(items: int, duration_s: float, parallelism: int | None) -> list[dict[str, Any]]:
    """``list`` -> ``each`` (forEach over its output, ``items`` items) -> ``join``."""
    source = workloads.template(0)
    source["podMetadata"]["annotations"]["sim.plait.dev/message"] = json.dumps(
        list_outputs(items), separators=(",", ":")
    )
    for_each: dict[str, Any] = {"expression": list_expression(items)}
    if parallelism is not None:
        for_each["parallelism"] = parallelism
    return [
        {"name": "list", "template": source},
        {
            "name": "each",
            "dependencies": ["list"],
            "forEach": for_each,
            "inputs": {"shard": "item", "position": "index"},
            "template": workloads.template(duration_s),
        },
        {
            "name": "join",
            "dependencies": ["each"],
            "inputs": {"count": "size(tasks.each.outputs)"},
            "template": workloads.template(duration_s),
        },
    ]


class StatusSampler:
    """Reads the instance from a thread every ``every`` seconds (its size every
    ``size_every``), keeping the largest size and each read's time and ``progress``, so
    that :func:`status_lag` can tell how far the status trailed the run's records."""

    def __init__(
        self, env: Environment, namespace: str, name: str, every: float = 1, size_every: float = 10
    ) -> None:
        self.env, self.namespace, self.name = env, namespace, name
        self.every, self.size_every = every, size_every
        self.largest = 0
        self.samples = 0
        #: GETs of the instance this sampler made (taken off Plait's API calls)
        self.reads = 0
        #: (wall-clock time the read returned, tasks done per the status' progress)
        self.progress: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_size = time.monotonic() + self.size_every
        while not self._stop.wait(self.every):
            try:
                self.reads += 1
                obj = self.env.custom.get_namespaced_custom_object(
                    "plait.dev", "v1alpha1", self.namespace, "workflowinstances", self.name
                )
                read_at = time.time()
                progress = (obj.get("status") or {}).get("progress")
                if progress:
                    self.progress.append((read_at, int(progress.split("/")[0])))
                if time.monotonic() >= next_size:
                    next_size += self.size_every
                    size = self.env.object_size(self.namespace, "workflowinstance", self.name)
                    self.largest = max(self.largest, size)
                    self.samples += 1
            except Exception:
                continue  # not created yet


def status_lag(dsn: str, instance: str, progress: list[tuple[float, int]]) -> dict[str, Any]:
    """How far the status' progress trailed the run's records: at each read, the age of
    the oldest finished task the progress did not count yet (0 when it counted them all).
    The records are what the status summarises; a task's ``finished_at`` is when its end
    was recorded."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            # Each task's latest attempt, as progress counts them.
            "SELECT finished_at FROM (SELECT DISTINCT ON (t.task_name) t.finished_at"
            " FROM task_execution_service.task_instances t"
            " JOIN workflow_orchestrator_service.workflow_instances w"
            " ON w.id = t.workflow_instance_id"
            " WHERE w.name = %s AND t.superseded_at IS NULL"
            " ORDER BY t.task_name, t.attempt DESC) latest"
            " WHERE finished_at IS NOT NULL ORDER BY finished_at",
            (instance,),
        ).fetchall()
    finishes = [r[0].timestamp() for r in rows]
    lags = []
    for read_at, done in progress:
        first_uncounted = finishes[done] if done < len(finishes) else None
        lags.append(max(0.0, read_at - first_uncounted) if first_uncounted is not None else 0.0)
    lags.sort()
    return {
        "status_reads": len(lags),
        "status_lag_max_s": round(lags[-1], 2) if lags else None,
        "status_lag_p95_s": round(lags[int(0.95 * (len(lags) - 1))], 2) if lags else None,
        "status_lag_median_s": round(lags[len(lags) // 2], 2) if lags else None,
    }


def check_run(dsn: str, instance: str, items: int) -> dict[str, Any]:
    """What PostgreSQL holds of the run: one Succeeded attempt per item, ``join`` saw every
    item's output; and when the items' Jobs were created and finished."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT t.task_name), max(t.attempt),"
            " count(*) FILTER (WHERE t.state <> 'Succeeded'),"
            " min(t.created_at), max(t.created_at), max(t.finished_at)"
            " FROM task_execution_service.task_instances t"
            " JOIN workflow_orchestrator_service.workflow_instances w"
            " ON w.id = t.workflow_instance_id"
            " WHERE w.name = %s AND t.task_name LIKE 'each[%%'",
            (instance,),
        ).fetchone()
        join = conn.execute(
            "SELECT t.inputs FROM task_execution_service.task_instances t"
            " JOIN workflow_orchestrator_service.workflow_instances w"
            " ON w.id = t.workflow_instance_id WHERE w.name = %s AND t.task_name = 'join'",
            (instance,),
        ).fetchone()
    assert row is not None
    rows, distinct, max_attempt, unsuccessful, first, last, finished = row
    problems = []
    if (rows, distinct, max_attempt, unsuccessful) != (items, items, 1, 0):
        problems.append(
            f"item attempts: {rows} rows, {distinct} items, max attempt {max_attempt}, "
            f"{unsuccessful} not Succeeded (expected {items}, {items}, 1, 0)"
        )
    if join is None or join[0] != {"count": items}:
        problems.append(f"join's inputs: {join}")
    if problems:
        raise RuntimeError("; ".join(problems))

    def seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
        return None if a is None or b is None else round((b - a).total_seconds(), 1)

    return {
        "item_attempts": rows,
        "items_launched_over_s": seconds(first, last),
        "items_first_launch_to_last_finish_s": seconds(first, finished),
    }


def planning_costs(items: int, parallelism: int | None) -> list[dict[str, Any]]:
    """One call of the engine's pure ``plan`` for this workflow with ``done`` items
    Succeeded: the rest running (what every advance and status summary pays), and, with a
    parallelism bound, the rest not started (the plan launches up to the bound)."""
    spec = WorkflowDefinitionSpec.model_validate({"tasks": tasks(items, 0, parallelism)})
    now = dt.datetime.now(dt.UTC)
    source = Attempt("list", 1, TaskState.SUCCEEDED, outputs=list_outputs(items))
    rows = []
    for done in sorted({0, items // 2, max(items - (parallelism or 1), 0)}):
        finished = [Attempt(f"each[{i}]", 1, TaskState.SUCCEEDED, outputs={}) for i in range(done)]
        if parallelism is None:
            rest = [Attempt(f"each[{i}]", 1, TaskState.RUNNING) for i in range(done, items)]
        else:
            rest = []
        attempts = [source, *finished, *rest]
        started = time.perf_counter()
        decided = plan(spec, {}, attempts, now=now)
        took = time.perf_counter() - started
        rows.append(
            {
                "items_finished": done,
                "launches": len(decided.launches),
                "plan_ms": round(1000 * took, 1),
                "ms_per_launch": (
                    round(1000 * took / len(decided.launches), 2) if decided.launches else None
                ),
            }
        )
    return rows


def run(
    env: Environment,
    items: int,
    *,
    wide: dict[str, Any] | None,
    duration_s: float,
    timeout: float,
    parallelism: int | None = None,
) -> dict[str, Any]:
    """The raw ceiling, then Plait; ``wide``: the wide DAG's result of the same run."""
    total = items + 2
    critical_s = 3 * duration_s
    timeout = max(timeout, items * 0.5)
    result: dict[str, Any] = {
        "items": items,
        "tasks": total,
        "task_duration_s": duration_s,
        "parallelism": parallelism,
    }
    say(f"{NAME}: planning cost of the engine alone, {items} items")
    result["planning"] = planning_costs(items, parallelism)

    say(f"{NAME}: raw ceiling, 1 + {items} + 1 Jobs")
    raw_ns = env.namespace(f"{NAME}-raw")
    before = env.request_counts()
    machine = MachineCpu()
    raw = workloads.run_raw_levels(env, raw_ns, [1, items, 1], duration_s, timeout)
    raw["cpu"] = machine.per_item(total)
    time.sleep(SETTLE_S)
    raw_calls = counts_delta(before, env.request_counts())
    raw["api_calls"] = sum(raw_calls.values())
    raw["overhead_per_task_ms"] = round(1000 * (raw["wall_s"] - critical_s) / total, 1)
    result["raw"] = raw
    say(f"{NAME}: raw {raw['wall_s']}s; deleting its Jobs before Plait's run")
    env.quiesce()

    ns = env.namespace(f"{NAME}-plait")
    dsn = env.database(f"bench_{NAME}")
    with Operator(env, ns, dsn, RESULTS / "logs" / f"{NAME}-operator.log") as op:
        env.apply(ns, workloads.definition(NAME, tasks(items, duration_s, parallelism)))
        env.wait_definition_ready(ns, NAME)
        say(f"{NAME}: Plait, one WorkflowInstance fanning out to {items} items")
        before = env.request_counts()
        db0 = env.db_stats(f"bench_{NAME}")
        cpu0 = op.cpu_seconds()
        machine = MachineCpu({op.pid: "plait operator"})
        run_name = f"{NAME}-run"
        with StatusSampler(env, ns, run_name) as sizes:
            plait = workloads.run_plait_instances(env, ns, NAME, [run_name], timeout)
        plait["operator_cpu_s"] = round(op.cpu_seconds() - cpu0, 2)
        plait["cpu"] = machine.per_item(total)
        time.sleep(SETTLE_S)
        plait_calls = counts_delta(before, env.request_counts())
        # The sampler's own reads are the benchmark's, not the operator's (its kubectl
        # reads of the size, every 10 s, stay counted).
        plait_calls[("GET", "workflowinstances", "")] -= sizes.reads
        plait_calls += Counter()  # drops a count left at 0 or below
        plait["api_calls"] = sum(plait_calls.values())
        plait["api_calls_by_request"] = describe_calls(plait_calls)
        try:
            plait["database_per_task"] = stats_delta(db0, env.db_stats(f"bench_{NAME}"), total)
        except psycopg.Error as exc:  # statistics only: keep the run's other numbers
            plait["database_per_task"] = {"error": str(exc)}
        plait["overhead_per_task_ms"] = round(1000 * (plait["wall_s"] - critical_s) / total, 1)
        plait["peak_rss_mib"] = op.peak_rss_mib()
        plait["instance_object_bytes"] = env.object_size(ns, "workflowinstance", run_name)
        plait["instance_object_bytes_largest"] = max(sizes.largest, plait["instance_object_bytes"])
        plait["instance_object_samples"] = sizes.samples
        plait["definition_object_bytes"] = env.object_size(ns, "workflowdefinition", NAME)
        status = env.custom.get_namespaced_custom_object(
            "plait.dev", "v1alpha1", ns, "workflowinstances", run_name
        )["status"]
        if status.get("progress") != f"{total}/{total}":
            raise RuntimeError(f"progress {status.get('progress')}, not {total}/{total}")
        plait["progress"] = status["progress"]
        plait.update(check_run(dsn, run_name, items))
        plait.update(status_lag(dsn, run_name, sizes.progress))
    result["plait"] = plait
    result["completed"] = True
    result["object_under_16kb"] = plait["instance_object_bytes_largest"] < OBJECT_LIMIT
    result["ratio"] = round(raw["wall_s"] / plait["wall_s"], 3)
    result["added_overhead_per_item_ms"] = round(
        1000 * (plait["wall_s"] - raw["wall_s"]) / total, 1
    )
    result["added_api_calls_per_item"] = round((plait["api_calls"] - raw["api_calls"]) / total, 2)
    if wide is not None and "added_overhead_per_task_ms" in wide:
        added_wide = wide["added_overhead_per_task_ms"]
        result["wide_added_overhead_per_task_ms"] = added_wide
        result["wide_tasks"] = wide["tasks"]
        result["added_per_item_vs_wide"] = (
            round(result["added_overhead_per_item_ms"] / added_wide, 2) if added_wide else None
        )
        result["no_worse_than_wide"] = result["added_overhead_per_item_ms"] <= added_wide
    say(
        f"{NAME}: Plait {plait['wall_s']}s, raw {raw['wall_s']}s, "
        f"added {result['added_overhead_per_item_ms']} ms/item, "
        f"object {plait['instance_object_bytes_largest']} B, RSS {plait['peak_rss_mib']} MiB"
    )
    return result
