"""The specs validation resolves references in (``plait.controller.indexes``), kept from
their own watch streams, against the real API server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from kubernetes import config

from plait.controller.indexes import ReferenceIndexes
from tests.fixtures.kube import Kube, KubeCluster

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def credentials(plait_crds: KubeCluster, kube: Kube) -> None:
    # What Kopf's login does in the operator: the client's default configuration.
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]


def task_definition(kube: Kube, name: str, image: str) -> None:
    manifest = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "TaskDefinition",
        "metadata": {"name": name},
        "spec": {"template": {"image": image}},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(manifest))


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_the_indexes_hold_each_referenced_spec_as_the_watch_gives_it(kube: Kube) -> None:
    task_definition(kube, "before", "busybox:1")
    indexes = ReferenceIndexes([kube.namespace])
    stop = asyncio.Event()
    running = asyncio.create_task(indexes.run(stop))
    try:
        await asyncio.wait_for(indexes.listed(), 30)
        lookup = indexes.lookup(kube.namespace)
        # Listed before the first lookup: an existing object is never judged missing.
        assert lookup("TaskDefinition", "before") == {"template": {"image": "busybox:1"}}
        assert lookup("TaskDefinition", "nowhere") is None
        assert lookup("WorkflowDefinition", "before") is None, "kinds are kept apart"
        assert indexes.lookup("elsewhere")("TaskDefinition", "before") is None

        task_definition(kube, "before", "busybox:2")
        task_definition(kube, "during", "busybox:3")
        await until(
            lambda: lookup("TaskDefinition", "before") == {"template": {"image": "busybox:2"}},
            "the changed spec",
        )
        await until(lambda: lookup("TaskDefinition", "during") is not None, "the new object")
        kube.kubectl("delete", "taskdefinition", "before")
        await until(lambda: lookup("TaskDefinition", "before") is None, "the deletion")
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_stopped_before_anything_is_listed_the_indexes_return(kube: Kube) -> None:
    indexes = ReferenceIndexes([kube.namespace])
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(indexes.run(stop), 30)
