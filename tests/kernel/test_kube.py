"""What the operator loads of the Kubernetes client before its first task, and how it
reads a LIST."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
from kubernetes import config

from plait.kernel.kube import Kube as KubeCalls
from tests.fixtures.kube import Kube

CHECK = """
import sys
from plait.kernel.kube import load_client_modules
apis = ("core_v1_api", "batch_v1_api", "custom_objects_api")
modules = [f"kubernetes.client.api.{api}" for api in apis] + ["kubernetes.client.models.v1_pod"]
before = [m for m in modules if m in sys.modules]
load_client_modules()
after = [m for m in modules if m in sys.modules]
print(len(before), len(after))
"""


def test_the_api_classes_and_their_models_are_imported_up_front() -> None:
    # A fresh interpreter: the client imports its API modules on first use.
    out = subprocess.run(
        [sys.executable, "-c", CHECK], check=True, capture_output=True, text=True
    ).stdout
    assert out.split() == ["0", "4"]


def job(name: str, label: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"listed": label}},
        "spec": {
            "suspend": True,  # no Pods: only the Jobs are listed
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                }
            },
        },
    }


@pytest.mark.e2e
async def test_a_list_is_read_a_page_at_a_time_as_plain_json(kube: Kube) -> None:
    # A 10,000-task run's Jobs, read in one answer and decoded into the client's models,
    # took about 580 MiB of the operator at each resync.
    items = [job(f"listed-{i}", "yes") for i in range(5)] + [job("other", "no")]
    kube.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    calls: list[tuple[str, str]] = []

    def observe(verb: str, resource: str) -> AbstractContextManager[object]:
        calls.append((verb, resource))
        return nullcontext()

    api = KubeCalls(observe_call=observe, list_page_size=2)
    try:
        pages = [page async for page in api.list_jobs(kube.namespace, "listed=yes")]
    finally:
        api.close()

    assert [len(page) for page in pages] == [2, 2, 1]
    assert calls == [("list", "jobs")] * 3
    names = sorted(j["metadata"]["name"] for page in pages for j in page)
    assert names == [f"listed-{i}" for i in range(5)]
    assert all(type(j) is dict and j["spec"]["suspend"] is True for page in pages for j in page)
