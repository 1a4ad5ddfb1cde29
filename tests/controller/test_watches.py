"""The Kopf transport of the operator's watches (``--peering``): the same handlers as
Kopf event handlers, with the API server's selectors, against the real API server.

(Plait's own streams, the default, are tested in ``tests/kernel/test_watching.py``.)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import kopf
import pytest

from plait.controller.watches import register_with_kopf
from plait.kernel.watching import Watched
from tests.fixtures.kube import Kube

pytestmark = pytest.mark.e2e

LABEL = "plait.dev/watch-test"


def configmap(kube: Kube, name: str, *, labelled: bool) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {LABEL: "yes"} if labelled else {}},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(manifest))


async def test_under_peering_the_handlers_run_as_kopf_event_handlers(
    kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What Kopf's login reads (the client takes KUBECONFIG when it is first imported).
    monkeypatch.setattr(
        "kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kube.kubeconfig)
    )
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    seen: list[tuple[str | None, str]] = []
    awaited: list[str] = []

    async def later(name: str) -> None:
        awaited.append(name)

    def handler(kind: str | None, obj: Mapping[str, Any]) -> Any:
        name = obj["metadata"]["name"]
        seen.append((kind, name))
        return later(name)  # what a handler returns is awaited, as by Plait's streams

    register_with_kopf(registry, [(Watched("", "v1", "configmaps", label_selector=LABEL), handler)])
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    stop = asyncio.Event()
    configmap(kube, "before", labelled=True)
    configmap(kube, "unlabelled", labelled=False)
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            namespaces=[kube.namespace],
            stop_flag=stop,
        )
    )
    try:
        deadline = time.monotonic() + 60
        while "before" not in awaited:
            assert time.monotonic() < deadline, f"Kopf handed over nothing: {seen}"
            await asyncio.sleep(0.1)
        configmap(kube, "during", labelled=True)
        while "during" not in awaited:
            assert time.monotonic() < deadline, f"no event of a new object: {seen}"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(operator, 30)
    assert (None, "before") in seen
    assert ("ADDED", "during") in seen
    assert all(name != "unlabelled" for _, name in seen), "the label selector is the server's"
