"""One-task workflows on the real node, Plait against raw Jobs on the same node.

As :mod:`bench.throughput`, but every task is a real busybox container on the local
cluster's real node (``plait.dev/node-kind=real`` and its toleration) that writes its
outputs to its termination message: raw, N Jobs (Plait's own manifest for that template,
no operator) from the first create to the last Job seen Complete; Plait, N
WorkflowInstances of a one-task WorkflowDefinition that places its task the same way, from
the first create to the last seen Succeeded. The node starts a few pods a second, so N is
small (20 by default) and the figure says what Plait adds to a kubelet's pace.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench import workloads
from bench.harness import RESULTS, Environment, Operator, Watcher, create_many, say
from plait.resources.common import ContainerTemplate
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.task_execution.jobs import JobRequest, build_job, with_workflow_defaults
from plait.testing.images import BUSYBOX_IMAGES
from plait.testing.node import NODE_KIND_LABEL, REAL_NODE_TAINT

#: What every task runs: a real process that reports an output.
SCRIPT = 'printf \'{"task": "%s"}\' "$PLAIT_TASK" > /dev/termination-log'
PLACEMENT: dict[str, Any] = {
    "nodeSelector": {NODE_KIND_LABEL: "real"},
    "tolerations": [{"operator": "Equal", **REAL_NODE_TAINT}],
}


def one_task() -> list[dict[str, Any]]:
    template = {"image": BUSYBOX_IMAGES[0], "command": ["sh", "-c", SCRIPT]}
    return [{"name": "only", "template": template}]


def raw_job(namespace: str, name: str) -> dict[str, Any]:
    """Plait's Job for the one task, placed by the workflow's defaults, without an owner."""
    spec = WorkflowDefinitionSpec.model_validate({"tasks": one_task(), **PLACEMENT})
    template = ContainerTemplate.model_validate(one_task()[0]["template"])
    manifest = build_job(
        JobRequest(
            namespace=namespace,
            instance_name=name,
            instance_uid=str(uuid.uuid4()),
            task="only",
            attempt=1,
            template=with_workflow_defaults(template, spec),
            inputs={},
        )
    )
    manifest["metadata"]["name"] = name
    del manifest["metadata"]["ownerReferences"]
    return manifest


def run(env: Environment, n: int) -> dict[str, Any]:
    timeout = max(300.0, n * 10.0)
    say(f"realnode: raw, {n} Jobs on the real node")
    raw_ns = env.namespace("rn-raw")
    names = [f"raw-{i}" for i in range(n)]
    with Watcher(env, raw_ns, "jobs") as watcher:
        start = time.monotonic()
        create_many(
            lambda body: env.batch.create_namespaced_job(raw_ns, body),
            (raw_job(raw_ns, name) for name in names),
        )
        if not watcher.wait_for(names, timeout):
            raise TimeoutError(f"raw Jobs: not all {n} finished in {timeout:.0f}s")
        failed = watcher.failures(names)
        raw = {"jobs": n, "wall_s": round(watcher.last(names) - start, 3)}
    if failed:
        raise RuntimeError(f"raw Jobs failed: {dict(list(failed.items())[:5])}")
    raw["per_minute"] = round(n / raw["wall_s"] * 60, 1)
    say(f"realnode: raw {raw['per_minute']}/min ({raw['wall_s']}s)")

    ns = env.namespace("rn-plait")
    dsn = env.database("bench_realnode")
    result: dict[str, Any] = {"n": n, "raw": raw}
    with Operator(env, ns, dsn, RESULTS / "logs" / "realnode-operator.log"):
        definition = workloads.definition("one", one_task())
        definition["spec"].update(PLACEMENT)
        env.apply(ns, definition)
        env.wait_definition_ready(ns, "one")
        say(f"realnode: Plait, {n} WorkflowInstances")
        plait = workloads.run_plait_instances(
            env, ns, "one", [f"run-{i:03d}" for i in range(n)], timeout
        )
    plait["per_minute"] = round(n / plait["wall_s"] * 60, 1)
    result["plait"] = plait
    result["ratio"] = round(plait["per_minute"] / raw["per_minute"], 3)
    say(f"realnode: Plait {plait['per_minute']}/min, ratio {result['ratio']}")
    return result
