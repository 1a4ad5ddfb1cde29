"""Plait's own watch streams (``plait.kernel.watching``) against the real API server:
list then watch, selectors, resuming after the server ends a request, objects gone while
the stream was down, and the order of one object's events under concurrent handlers.

ConfigMaps stand in for Jobs and Pods: the stream is the same for every resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from kubernetes import config

from plait.kernel.apiserver import ApiServer
from plait.kernel.watching import Watched, Watcher, WatchSettings, _StreamState
from tests.fixtures.kube import Kube

pytestmark = pytest.mark.e2e

LABEL = "plait.dev/watch-test"
CONFIGMAPS = Watched("", "v1", "configmaps", label_selector=LABEL)

Seen = list[tuple[str | None, str]]


def configmap(kube: Kube, name: str, *, labelled: bool = True, data: str = "1") -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {LABEL: "yes"} if labelled else {}},
        "data": {"value": data},
    }
    kube.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def watching(watcher: Watcher) -> AsyncIterator[Watcher]:
    stop = asyncio.Event()
    running = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.wait_for(watcher.listed(), 30)
        yield watcher
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


def recorder(seen: Seen) -> Callable[[str | None, Mapping[str, Any]], None]:
    def record(kind: str | None, obj: Mapping[str, Any]) -> None:
        seen.append((kind, obj["metadata"]["name"]))

    return record


@pytest.fixture(autouse=True)
def credentials(kube: Kube) -> None:
    # What Kopf's login does in the operator: the client's default configuration.
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]


async def test_a_watch_lists_then_follows_the_selected_objects_only(kube: Kube) -> None:
    configmap(kube, "before")
    configmap(kube, "unlabelled", labelled=False)
    seen: Seen = []
    async with watching(Watcher(CONFIGMAPS, recorder(seen), [kube.namespace])):
        assert seen == [(None, "before")], "the list hands over what exists, as listed"
        configmap(kube, "during")
        configmap(kube, "before", data="2")
        kube.kubectl("delete", "configmap", "before")
        configmap(kube, "unlabelled", labelled=False, data="2")
        await until(lambda: ("DELETED", "before") in seen, "the deletion")
    assert seen == [
        (None, "before"),
        ("ADDED", "during"),
        ("MODIFIED", "before"),
        ("DELETED", "before"),
    ]


async def test_a_watch_ended_by_the_server_resumes_without_listing_again(kube: Kube) -> None:
    seen: Seen = []
    settings = WatchSettings(server_timeout_seconds=1)  # the server ends each request in 1 s
    async with watching(Watcher(CONFIGMAPS, recorder(seen), [kube.namespace], settings)):
        for i in range(4):
            configmap(kube, f"cm-{i}")
            await asyncio.sleep(0.6)  # across several requests
        await until(lambda: len(seen) >= 4, "four ADDED events")
        await asyncio.sleep(1.5)  # another request or two: nothing is handed over again
    assert seen == [("ADDED", f"cm-{i}") for i in range(4)]


async def test_objects_gone_while_the_stream_was_down_are_handed_over_as_deleted(
    kube: Kube,
) -> None:
    configmap(kube, "stays")
    configmap(kube, "goes")
    seen: Seen = []
    watcher = Watcher(CONFIGMAPS, recorder(seen), [kube.namespace])
    state = _StreamState()
    async with ApiServer() as session:
        await watcher._list(session, kube.namespace, state)
        first = state.version
        kube.kubectl("delete", "configmap", "goes")
        await watcher._list(session, kube.namespace, state)
    assert first
    assert state.version is not None
    assert int(state.version) > int(first), "the second list is a newer version"
    assert sorted(seen[:2]) == [(None, "goes"), (None, "stays")]
    assert seen[2:] == [(None, "stays"), ("DELETED", "goes")]


async def test_a_vanished_objects_deleted_carries_what_its_stream_keeps(kube: Kube) -> None:
    configmap(kube, "owner", labelled=False)
    owner_uid = kube.kubectl("get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}")
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "goes",
            "labels": {LABEL: "yes", "plait.dev/kept": "k", "plait.dev/dropped": "d"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
    }
    deleted: dict[str, Mapping[str, Any]] = {}

    def record(kind: str | None, obj: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            deleted[obj["metadata"]["name"]] = obj["metadata"]

    everything = Watcher(CONFIGMAPS, record, [kube.namespace])
    slim = Watcher(
        Watched(
            "",
            "v1",
            "configmaps",
            label_selector=LABEL,
            kept_labels=frozenset({"plait.dev/kept"}),
            kept_owners=False,
        ),
        record,
        [kube.namespace],
    )
    for watcher in (everything, slim):
        kube.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(owned))
        uid = kube.kubectl("get", "configmap", "goes", "-o", "jsonpath={.metadata.uid}")
        state = _StreamState()
        async with ApiServer() as session:
            await watcher._list(session, kube.namespace, state)
            kube.kubectl("delete", "configmap", "goes")
            await watcher._list(session, kube.namespace, state)
        meta = deleted.pop("goes")
        assert (meta["name"], meta["namespace"], meta["uid"]) == ("goes", kube.namespace, uid)
        if watcher is everything:
            assert meta["labels"] == owned["metadata"]["labels"]  # type: ignore[index]
            assert [o["uid"] for o in meta["ownerReferences"]] == [owner_uid]
        else:
            assert meta["labels"] == {"plait.dev/kept": "k"}
            assert "ownerReferences" not in meta


async def test_one_objects_events_are_handled_in_order_while_others_go_on(kube: Kube) -> None:
    handled: Seen = []
    gate = asyncio.Event()

    async def work(kind: str | None, name: str) -> None:
        if (kind, name) == ("ADDED", "slow"):
            await gate.wait()  # held until the other object's event is handled
        handled.append((kind, name))
        if name == "fast":
            gate.set()

    def handler(kind: str | None, obj: Mapping[str, Any]) -> Any:
        return work(kind, obj["metadata"]["name"])

    async with watching(Watcher(CONFIGMAPS, handler, [kube.namespace])):
        configmap(kube, "slow")
        configmap(kube, "slow", data="2")
        await asyncio.sleep(0.5)  # both of slow's events delivered before fast exists
        configmap(kube, "fast")
        await until(lambda: len(handled) == 3, "three handled events")
    assert handled == [("ADDED", "fast"), ("ADDED", "slow"), ("MODIFIED", "slow")]


async def test_a_handler_that_fails_does_not_stop_the_stream(kube: Kube) -> None:
    seen: Seen = []

    def handler(kind: str | None, obj: Mapping[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name == "bad":
            raise RuntimeError("a bug in a handler")
        seen.append((kind, name))

    async with watching(Watcher(CONFIGMAPS, handler, [kube.namespace])):
        configmap(kube, "bad")
        configmap(kube, "good")
        await until(lambda: ("ADDED", "good") in seen, "the event after the failure")


async def test_an_object_larger_than_a_read_buffer_comes_through_whole(kube: Kube) -> None:
    seen: list[int] = []

    def handler(kind: str | None, obj: Mapping[str, Any]) -> None:
        seen.append(len(obj["data"]["value"]))

    async with watching(Watcher(CONFIGMAPS, handler, [kube.namespace])):
        configmap(kube, "big", data="x" * 300_000)  # one watch event, one 300 KB line
        await until(lambda: bool(seen), "the large object's event")
    assert seen == [300_000]


async def test_a_watch_cut_short_resumes_after_its_last_event(kube: Kube) -> None:
    seen: Seen = []
    # Nothing read for 0.5 s counts as a dead connection: each pause below cuts a request.
    settings = WatchSettings(read_timeout_seconds=0.5, retry_delays=(0.1,))
    async with watching(Watcher(CONFIGMAPS, recorder(seen), [kube.namespace], settings)):
        for i in range(3):
            configmap(kube, f"cut-{i}")
            await until(lambda n=i + 1: len(seen) >= n, f"the event of cut-{i}")
            await asyncio.sleep(1.2)  # the request dies; the next starts after cut-{i}
    assert seen == [("ADDED", f"cut-{i}") for i in range(3)], "nothing handed over twice"
