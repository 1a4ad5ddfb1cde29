"""Local WorkflowTest cases per second: ``python -m bench --only tests [--tasks N]``.

A 20-task workflow (a chain of five layers of four tasks, each layer joining the one
before; the second layer's tasks gated by ``when``, the third retried with a backoff,
an exit task) and N cases (1,000 by default), written as one WorkflowTest, are run by
the same code as ``plait test run``: the files are parsed and validated, then every case
is simulated on the engine and judged. The cases vary: a quarter take the other side of
the ``when``, a quarter have a task that fails twice before it succeeds, a tenth one that
keeps failing. Nothing else runs: no cluster, no database. Besides wall time it reports
this process's CPU time, which a busy machine does not inflate.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from plait.testing_framework.cli import load, run_suite
from plait.testing_framework.states import CaseOutcome

__all__ = ["run", "workflow_and_test"]

LAYERS = 5
WIDTH = 4


def _name(layer: int, i: int) -> str:
    return f"t{layer}-{i}"


def workflow_and_test(cases: int) -> list[dict[str, Any]]:
    """The WorkflowDefinition (20 tasks and an exit task) and a WorkflowTest of ``cases``."""
    tasks: list[dict[str, Any]] = []
    for layer in range(LAYERS):
        for i in range(WIDTH):
            task: dict[str, Any] = {
                "name": _name(layer, i),
                "template": {"image": "busybox:1.35", "command": ["true"]},
            }
            if layer:
                task["dependencies"] = [_name(layer - 1, j) for j in range(WIDTH)]
                up = f"tasks['{_name(layer - 1, i)}'].outputs"
                task["inputs"] = {"n": f"has({up}.n) ? {up}.n : 0"}
            if layer == 1:
                task["when"] = "params.mode == 'full'" if i % 2 else "params.mode != 'skip'"
            if layer == 2:
                task["retries"] = {"limit": 3, "backoff": {"initialSeconds": 5}}
            tasks.append(task)
    workflow = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "bench-twenty"},
        "spec": {
            "parameters": [{"name": "mode", "type": "string", "default": "full"}],
            "tasks": tasks,
            "outputs": {"last": f"tasks['{_name(LAYERS - 1, 0)}'].outputs.n"},
            "onExit": {
                "name": "report",
                "template": {"image": "busybox:1.35", "command": ["true"]},
                "inputs": {"phase": "workflow.phase"},
            },
        },
    }
    written = []
    for c in range(cases):
        mocks: dict[str, Any] = {
            _name(layer, i): {
                "outputExpressions": {"n": "has(inputs.n) ? inputs.n + 1 : 1"},
                "durationSeconds": 1 + (c + i) % 3,
            }
            for layer in range(LAYERS)
            for i in range(WIDTH)
        }
        mocks["report"] = {}
        expect: dict[str, Any] = {"phase": "Succeeded", "outputs": {"last": LAYERS}}
        arguments: dict[str, Any] = {}
        if c % 4 == 1:
            arguments = {"mode": "half"}
            expect["tasks"] = {_name(1, 1): {"state": "Skipped"}}
            expect.pop("outputs")
        elif c % 4 == 2:
            mocks[_name(2, c % WIDTH)]["failAttempts"] = 2
            expect["tasks"] = {_name(2, c % WIDTH): {"state": "Succeeded", "attempts": 3}}
        if c % 10 == 3:
            mocks[_name(3, 0)]["exitCode"] = 1
            expect = {"phase": "Failed", "failure": {"task": _name(3, 0)}}
        written.append(
            {
                "name": f"case-{c}",
                "arguments": arguments,
                "mocks": mocks,
                "expect": {**expect, "assertions": ["workflow.durationSeconds > 0.0"]},
            }
        )
    test = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowTest",
        "metadata": {"name": "bench-twenty"},
        "spec": {"workflowRef": {"name": "bench-twenty"}, "cases": written},
    }
    return [workflow, test]


def run(cases: int) -> dict[str, Any]:
    """Write, load and run ``cases`` cases; cases per second, and where the time went."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        # One WorkflowTest holds at most 200 cases: split the cases over several.
        workflow, test = workflow_and_test(cases)
        documents = [workflow]
        all_cases = test["spec"]["cases"]
        for k in range(0, len(all_cases), 200):
            part = {**test, "metadata": {"name": f"bench-twenty-{k // 200}"}}
            part["spec"] = {**test["spec"], "cases": all_cases[k : k + 200]}
            documents.append(part)
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        started, cpu = time.perf_counter(), time.process_time()
        suite = load([path])
        loaded = time.perf_counter()
        results = run_suite(suite)
        finished, cpu = time.perf_counter(), time.process_time() - cpu
    verdicts = [c for r in results for c in r.cases]
    per_case_ms = sorted(c.seconds * 1000 for c in verdicts)
    run_s = finished - loaded
    return {
        "cases": len(verdicts),
        "tasks": LAYERS * WIDTH,
        "passed": sum(1 for c in verdicts if c.outcome is CaseOutcome.PASSED),
        "load_s": round(loaded - started, 3),
        "run_s": round(run_s, 3),
        "cases_per_s": round(len(verdicts) / (finished - started), 1),
        "cases_per_s_run_only": round(len(verdicts) / run_s, 1),
        "cpu_s": round(cpu, 2),
        "cases_per_cpu_s": round(len(verdicts) / cpu, 1),
        "case_ms_p50": round(statistics.median(per_case_ms), 2),
        "case_ms_p99": round(per_case_ms[int(len(per_case_ms) * 0.99) - 1], 2),
        "simulated_s_total": round(sum(c.run.duration for c in verdicts if c.run), 1),
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))
