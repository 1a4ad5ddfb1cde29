"""``plait instances``: look at a run's DAG, and control runs.

Control goes through the WorkflowInstance's spec (exactly what ``kubectl patch`` does),
so the operator's reconciliation is the one path for every change. ``show`` reads the
task attempts from PostgreSQL, where the live state is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any, cast

import click
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from plait import API_GROUP, API_VERSION
from plait.errors import PlaitError
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.resources.foreach import split_item_name
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.task_execution.repository import TaskInstance, tasks_of_instance
from plait.workflow_orchestrator import repository
from plait.workflow_orchestrator.runtime import fan_out_sizes

__all__ = ["instances_command", "render_dag"]

PLURAL = "workflowinstances"


def _api() -> client.CustomObjectsApi:
    config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi()


def _namespace(namespace: str | None) -> str:
    if namespace:
        return namespace
    from plait.kernel.kube import current_namespace

    return current_namespace()


def _get(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    try:
        obj = api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise PlaitError(f"WorkflowInstance {namespace}/{name} not found") from None
        raise
    return cast(dict[str, Any], obj)


def _patch_spec(namespace: str, name: str, change: dict[str, Any], *, expect: str) -> None:
    api = _api()
    obj = _get(api, namespace, name)
    body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": change}
    api.patch_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name, body)
    click.echo(f"workflowinstance.{API_GROUP}/{name} {expect}")


@click.group("instances")
def instances_command() -> None:
    """Show and control workflow runs (WorkflowInstances)."""


namespace_option = click.option(
    "-n", "--namespace", help="Namespace of the run (default: the kubeconfig's)."
)


@instances_command.command("cancel")
@click.argument("name")
@namespace_option
def cancel(name: str, namespace: str | None) -> None:
    """Cancel a run: running tasks are stopped, nothing more starts."""
    _patch_spec(_namespace(namespace), name, {"cancel": True}, expect="cancel requested")


@instances_command.command("suspend")
@click.argument("name")
@namespace_option
def suspend(name: str, namespace: str | None) -> None:
    """Hold new tasks back; running ones finish."""
    _patch_spec(_namespace(namespace), name, {"suspend": True}, expect="suspend requested")


@instances_command.command("resume")
@click.argument("name")
@namespace_option
def resume(name: str, namespace: str | None) -> None:
    """Let a suspended run go on."""
    _patch_spec(_namespace(namespace), name, {"suspend": False}, expect="resume requested")


@instances_command.command("retry")
@click.argument("name")
@namespace_option
def retry(name: str, namespace: str | None) -> None:
    """Retry a Failed run from its unsuccessful tasks on."""
    ns = _namespace(namespace)
    obj = _get(_api(), ns, name)
    phase = (obj.get("status") or {}).get("phase")
    if phase not in ("Failed", "Error"):
        raise PlaitError(
            f"WorkflowInstance {ns}/{name} is {phase or 'not started'}; "
            "only a Failed (or Error) run can be retried"
        )
    count = int((obj.get("spec") or {}).get("retry", 0)) + 1
    _patch_spec(ns, name, {"retry": count}, expect=f"retry {count} requested")


def _duration(a: TaskInstance) -> str:
    if a.started_at is None:
        return "-"
    end = a.finished_at or dt.datetime.now(dt.UTC)
    return f"{(end - a.started_at).total_seconds():.1f}s"


#: Failed items of a fan-out listed under it; the rest are counted.
SHOWN_FAILED_ITEMS = 10


def _fan_out_rows(
    label: str, name: str, size: int | None, by_task: Mapping[str, list[TaskInstance]]
) -> list[tuple[str, str, str, str, str]]:
    """A fan-out as one line (``each[0..n-1]`` and its items counted by state), then a
    line for each of its first failed items."""
    items = {
        index: sorted(found, key=lambda a: a.attempt)
        for key, found in by_task.items()
        if (index := _item_index(key, name)) is not None
    }
    n = size if size is not None else (max(items) + 1 if items else 0)
    states = Counter(found[-1].state.value for found in items.values())
    if n > len(items):
        states["Pending"] += n - len(items)
    summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "-"
    head = (f"{label}[0..{n - 1}]" if n else f"{label}[]", summary, "", "", "")
    rows = [head]
    failed = sorted(
        (i, found) for i, found in items.items() if found[-1].state.value in ("Failed", "TimedOut")
    )
    indent = " " * (len(label) - len(label.lstrip()) + 2)
    for i, found in failed[:SHOWN_FAILED_ITEMS]:
        last = found[-1]
        detail = last.message or (f"exit code {last.exit_code}" if last.exit_code else "")
        rows.append(
            (
                f"{indent}{name}[{i}]",
                last.state.value,
                str(len(found)),
                _duration(last),
                detail[:80],
            )
        )
    if len(failed) > SHOWN_FAILED_ITEMS:
        rows.append((f"{indent}... {len(failed) - SHOWN_FAILED_ITEMS} more failed", "", "", "", ""))
    return rows


def _state(attempt: TaskInstance | None) -> str:
    """An attempt's state, marked when it reused a cached result instead of running."""
    if attempt is None:
        return "Pending"
    return attempt.state.value + (" (cached)" if attempt.cached_from is not None else "")


def _item_index(key: str, task: str) -> int | None:
    base, index = split_item_name(key)
    return index if base == task else None


def render_dag(
    spec: WorkflowDefinitionSpec,
    attempts: list[TaskInstance],
    fan_outs: Mapping[str, int] | None = None,
) -> str:
    """One line per task, dependencies first, indented by depth: state, attempts,
    duration, and outputs (or the message of a task that did not succeed). A fan-out is
    one line counting its items by state (``fan_outs``: their number, when known), with
    its failed items under it."""
    by_task: dict[str, list[TaskInstance]] = {}
    for a in attempts:
        by_task.setdefault(a.task_name, []).append(a)
    tasks = spec.all_tasks()
    depth: dict[str, int] = {}
    for t in tasks:  # definitions are validated acyclic; dependencies may come later
        depth[t.name] = 0
    changed = True
    while changed:
        changed = False
        for t in tasks:
            d = max((depth.get(dep, 0) + 1 for dep in t.dependencies), default=0)
            if d != depth[t.name]:
                depth[t.name], changed = d, True
    rows = [("TASK", "STATE", "ATTEMPTS", "DURATION", "OUTPUTS / MESSAGE")]
    exit_name = spec.on_exit.name if spec.on_exit else None
    for t in sorted(tasks, key=lambda t: (t.name == exit_name, depth[t.name], tasks.index(t))):
        mine = sorted(by_task.get(t.name, []), key=lambda a: a.attempt)
        last = mine[-1] if mine else None
        label = "  " * depth[t.name] + ("└ " if depth[t.name] else "") + t.name
        if t.name == exit_name:
            label += " (on exit)"
        if t.for_each is not None and t.name not in by_task:
            rows += _fan_out_rows(label, t.name, (fan_outs or {}).get(t.name), by_task)
            continue
        detail = ""
        if last is not None:
            detail = json.dumps(last.outputs) if last.outputs else (last.message or "")
        rows.append(
            (
                label,
                _state(last),
                str(len(mine)),
                _duration(last) if last else "-",
                detail[:80],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4] for r in rows
    )


async def _show(namespace: str, name: str) -> str:
    obj = _get(_api(), namespace, name)
    uid = uuid.UUID(obj["metadata"]["uid"])
    settings = Settings()
    components = [component_by_name("workflow_orchestrator"), component_by_name("task_execution")]
    async with await Database.open(settings, components) as db:
        async with db.connection("workflow_orchestrator") as conn:
            instance = await repository.get_workflow_instance(conn, uid)
            if instance is None:
                raise PlaitError(f"{namespace}/{name} has no record yet: is the operator running?")
            definition = await repository.get_workflow_definition(
                conn, namespace, instance.workflow_name, instance.workflow_version
            )
        async with db.connection("task_execution") as conn:
            attempts = [a for a in await tasks_of_instance(conn, uid) if a.superseded_at is None]
    assert definition is not None
    spec = WorkflowDefinitionSpec.model_validate(definition.spec)
    status = obj.get("status") or {}
    lines = [
        f"{name}  {instance.workflow_name} v{instance.workflow_version}  {instance.phase.value}"
        f"  {status.get('progress', '')}  {status.get('duration', '')}".rstrip(),
        "",
        render_dag(spec, attempts, fan_out_sizes(instance, spec, attempts)),
    ]
    if instance.outputs:
        lines += ["", "outputs: " + json.dumps(instance.outputs)]
    if instance.failure:
        lines += ["", "failure: " + json.dumps(instance.failure)]
    return "\n".join(lines)


@instances_command.command("show")
@click.argument("name")
@namespace_option
def show(name: str, namespace: str | None) -> None:
    """Print a run's DAG: each task's state, attempts, duration and outputs."""
    click.echo(asyncio.run(_show(_namespace(namespace), name)))
