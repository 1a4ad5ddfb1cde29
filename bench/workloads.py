"""The workloads, built the same way for Plait and for the raw ceiling.

A raw Job is Plait's own Job manifest (:func:`plait.task_execution.jobs.build_job`) for
the same task template, minus the owner reference (there is no WorkflowInstance to own
it): same pod template, labels, annotations and kwok outcome.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.harness import Environment, Watcher, create_many
from plait import API_GROUP, API_VERSION
from plait.resources.common import ContainerTemplate
from plait.task_execution.jobs import JobRequest, build_job


def template(duration_s: float) -> dict[str, Any]:
    """A task's template: kwok keeps its pod Running ``duration_s``, then exit code 0."""
    return {
        "image": "busybox",
        "podMetadata": {
            "annotations": {
                "sim.plait.dev/exit-code": "0",
                "sim.plait.dev/duration": f"{int(duration_s * 1000)}ms",
            }
        },
    }


def definition(name: str, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "WorkflowDefinition",
        "metadata": {"name": name},
        "spec": {"tasks": tasks},
    }


def instance(name: str, workflow: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "WorkflowInstance",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": workflow}},
    }


def one_task(duration_s: float) -> list[dict[str, Any]]:
    return [{"name": "only", "template": template(duration_s)}]


def wide(width: int, duration_s: float) -> list[dict[str, Any]]:
    """``root`` fans out to ``width`` tasks, which ``join`` waits for."""
    fan = [f"w{i:04d}" for i in range(width)]
    return [
        {"name": "root", "template": template(duration_s)},
        *({"name": n, "template": template(duration_s), "dependencies": ["root"]} for n in fan),
        {"name": "join", "template": template(duration_s), "dependencies": fan},
    ]


def deep(depth: int, duration_s: float) -> list[dict[str, Any]]:
    """A chain: each task depends on the one before."""
    return [
        {
            "name": f"c{i:04d}",
            "template": template(duration_s),
            **({"dependencies": [f"c{i - 1:04d}"]} if i else {}),
        }
        for i in range(depth)
    ]


def raw_job(namespace: str, name: str, duration_s: float) -> dict[str, Any]:
    """Plait's Job manifest for a one-task attempt, without an owner."""
    manifest = build_job(
        JobRequest(
            namespace=namespace,
            instance_name=name,
            instance_uid=str(uuid.uuid4()),
            task="only",
            attempt=1,
            template=ContainerTemplate.model_validate(template(duration_s)),
            inputs={},
        )
    )
    manifest["metadata"]["name"] = name
    del manifest["metadata"]["ownerReferences"]
    return manifest


def run_raw_levels(
    env: Environment, namespace: str, levels: list[int], duration_s: float, timeout: float
) -> dict[str, Any]:
    """The raw ceiling of a DAG shaped as ``levels`` (widths of successive levels): the
    benchmark itself creates each level's Jobs as soon as its watch sees the previous level
    finished, as an ideal orchestrator with zero overhead of its own would."""
    names = [[f"raw-{li}-{i}" for i in range(width)] for li, width in enumerate(levels)]
    with Watcher(env, namespace, "jobs") as watcher:
        start = time.monotonic()
        for level in names:
            create_many(
                lambda body: env.batch.create_namespaced_job(namespace, body),
                (raw_job(namespace, n, duration_s) for n in level),
            )
            left = timeout - (time.monotonic() - start)
            if not watcher.wait_for(level, left):
                done = sum(len(set(lv) & watcher.finished.keys()) for lv in names)
                raise TimeoutError(f"raw Jobs: {done}/{sum(levels)} finished in {timeout:.0f}s")
        end = watcher.last(names[-1])
        failed = watcher.failures(n for level in names for n in level)
    if failed:
        raise RuntimeError(f"raw Jobs failed: {dict(list(failed.items())[:5])}")
    return {"jobs": sum(levels), "wall_s": round(end - start, 3)}


def run_plait_instances(
    env: Environment, namespace: str, workflow: str, names: list[str], timeout: float
) -> dict[str, Any]:
    """Create WorkflowInstances of ``workflow`` and wait, by watching, for all to finish."""
    with Watcher(env, namespace, "workflowinstances") as watcher:
        start = time.monotonic()
        create_many(
            lambda body: env.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, "workflowinstances", body
            ),
            (instance(n, workflow) for n in names),
        )
        if not watcher.wait_for(names, timeout):
            done = len(set(names) & watcher.finished.keys())
            progress = [
                (
                    env.custom.get_namespaced_custom_object(
                        API_GROUP, API_VERSION, namespace, "workflowinstances", n
                    ).get("status")
                    or {}
                ).get("progress")
                for n in names[:3]
            ]
            raise TimeoutError(
                f"Plait: {done}/{len(names)} instances finished in {timeout:.0f}s "
                f"(progress of the first: {progress})"
            )
        end = watcher.last(names)
        failed = watcher.failures(names)
    if failed:
        raise RuntimeError(f"instances did not succeed: {dict(list(failed.items())[:5])}")
    return {"instances": len(names), "wall_s": round(end - start, 3)}
