"""The few Kubernetes calls Plait makes besides Kopf's own, as coroutines.

The official client is synchronous; its calls run in a thread pool sized for many
concurrent task launches. Credentials are whatever Kopf's login loaded into the client's
default configuration (in-cluster service account, or KUBECONFIG).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from plait import API_GROUP, API_VERSION

__all__ = [
    "EVENT_MESSAGE_LIMIT",
    "EVENT_SOURCE",
    "LIST_PAGE_SIZE",
    "REQUEST_TIMEOUT_SECONDS",
    "CallObserver",
    "Kube",
    "PodResult",
    "current_namespace",
    "load_client_modules",
    "pod_result_of",
]

#: Longest one of Plait's own Kubernetes calls may take (connect and read).
REQUEST_TIMEOUT_SECONDS = 30
#: The component named as the source of the Events Plait posts.
EVENT_SOURCE = "plait"
#: The longest Event message posted: longer ones are cut to the 1 KiB an Event note may hold.
EVENT_MESSAGE_LIMIT = 1024
#: Objects per page of Plait's own LISTs. A run's Jobs are listed at every resync, and a
#: 10,000-task run's Jobs read in one answer (and decoded at once) took about 580 MiB.
LIST_PAGE_SIZE = 500


@dataclass(frozen=True)
class PodResult:
    """How a task's container ended."""

    exit_code: int | None
    message: str | None
    reason: str | None
    pod_reason: str | None = None
    """The Pod's own reason (``Evicted``, ...), when the Pod was stopped around it."""


def pod_result_of(pod: Mapping[str, Any]) -> PodResult | None:
    """How a Pod (as JSON: a watch event's body or a listed item) ended, from the first
    terminated container: an init container that failed (no other container ran), then
    the others; None while none has terminated."""
    status = pod.get("status") or {}
    statuses = [
        s
        for s in status.get("initContainerStatuses") or ()
        if ((s.get("state") or {}).get("terminated") or {}).get("exitCode")
    ]
    statuses += status.get("containerStatuses") or ()
    for container in statuses:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated is not None:
            return PodResult(
                terminated.get("exitCode"),
                terminated.get("message"),
                terminated.get("reason"),
                status.get("reason"),
            )
    return None


#: Wraps each call: given the verb and the resource, a context manager around the call
#: (the operator passes one that counts and times calls for /metrics).
CallObserver = Callable[[str, str], AbstractContextManager[object]]


def load_client_modules() -> None:
    """Import the client's API classes the operator calls, with the models they use.

    The client imports them on first use, and the core API alone brings in some 270
    models, each a pydantic class built on import: about a second of CPU. Done at start-up
    (in a thread), that second is not spent on the first task's path, in every replica.
    """
    for name in ("CoreV1Api", "BatchV1Api", "CustomObjectsApi"):
        getattr(client, name)  # the package's lazy attribute: the import


def _json_of(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a client method and decode its answer as plain JSON, not into its models."""
    response: Any = fn(*args, _preload_content=False, **kwargs)
    try:
        return cast(dict[str, Any], json.loads(response.data))
    finally:
        response.release_conn()


class Kube:
    """Job, Pod, Secret, Event and Plait-object calls."""

    def __init__(
        self,
        pool_size: int = 32,
        observe_call: CallObserver | None = None,
        list_page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self._pool_size = pool_size
        self._list_page_size = list_page_size
        self._observe_call: CallObserver = observe_call or (lambda _verb, _resource: nullcontext())
        self._api: client.ApiClient | None = None

    def _client(self) -> client.ApiClient:
        # Made on first use: the credentials are loaded by Kopf's login, after start-up.
        if self._api is None:
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = self._pool_size
            self._api = client.ApiClient(configuration)
        return self._api

    @property
    def _batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self._client())

    @property
    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._client())

    @property
    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self._client())

    async def _call(self, verb: str, resource: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call in the thread pool, seen by the call observer, and bounded
        in time: a hung connection must not hold the locks and leases of its caller."""
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_SECONDS)
        with self._observe_call(verb, resource):
            return await asyncio.to_thread(fn, *args, **kwargs)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]

    async def _create(self, resource: str, fn: Any, *args: Any) -> bool:
        """Create an object whose name makes the create idempotent: False when it exists."""
        try:
            await self._call("create", resource, fn, *args)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def post_warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        """Post a Warning Event about ``obj`` (what ``kubectl describe`` shows under it)."""
        meta = obj["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta.get("uid"),
            },
            "type": "Warning",
            "reason": reason,
            "message": message[:EVENT_MESSAGE_LIMIT],
            "source": {"component": EVENT_SOURCE},
            "reportingComponent": EVENT_SOURCE,
            "reportingInstance": EVENT_SOURCE,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._call("create", "events", self._create_event, meta["namespace"], event)

    def _create_event(self, namespace: str, event: Mapping[str, Any], **kwargs: Any) -> None:
        """Create an Event without decoding the answer into the client's models; the
        answer is read so that its connection goes back to the pool."""
        response: Any = self._core.create_namespaced_event(
            namespace, cast(Any, dict(event)), _preload_content=False, **kwargs
        )
        response.drain_conn()
        response.release_conn()

    async def create_job(self, manifest: Mapping[str, Any]) -> bool:
        """Create a Job; False when it exists already (the name makes this idempotent)."""
        namespace = manifest["metadata"]["namespace"]
        return await self._create(
            "jobs", self._batch.create_namespaced_job, namespace, cast(Any, dict(manifest))
        )

    async def job_exists(self, namespace: str, name: str) -> bool:
        try:
            await self._call("get", "jobs", self._batch.read_namespaced_job, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its Pods; a Job already gone is fine."""
        try:
            await self._call(
                "delete",
                "jobs",
                self._batch.delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def list_jobs(self, namespace: str, label_selector: str) -> AsyncIterator[list[dict[str, Any]]]:
        """The Jobs matching ``label_selector``, a page at a time, as the watch delivers
        them (plain JSON)."""
        return self._pages(
            "jobs", self._batch.list_namespaced_job, namespace, label_selector=label_selector
        )

    async def _pages(
        self, resource: str, fn: Any, *args: Any, label_selector: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page of a LIST, ``list_page_size`` objects at most, decoded as plain JSON
        (not into the client's models): what is held at once does not grow with what is
        listed. Every page comes from the first one's snapshot (the continue token)."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "label_selector": label_selector,
                "limit": self._list_page_size,
            }
            if token:
                kwargs["_continue"] = token
            body = await self._call("list", resource, _json_of, fn, *args, **kwargs)
            yield cast(list[dict[str, Any]], body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return

    async def pod_result(self, namespace: str, job: str) -> PodResult | None:
        """The terminated state of the Job's container, if a Pod of it is still there."""
        pages = self._pages(
            "pods", self._core.list_namespaced_pod, namespace, label_selector=f"job-name={job}"
        )
        async for page in pages:
            for pod in page:
                result = pod_result_of(pod)
                if result is not None:
                    return result
        return None

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, decoded (None when it does not exist): only an artifact
        repository's credentials are read, to sign URLs and delete expired objects."""
        try:
            secret = await self._call(
                "get", "secrets", self._core.read_namespaced_secret, name, namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {
            key: base64.b64decode(value).decode(errors="replace")
            for key, value in (secret.data or {}).items()
        }

    async def create_secret(self, manifest: Mapping[str, Any]) -> bool:
        """Create a Secret (a task attempt's artifact URLs); False when it exists already
        (its name makes this idempotent)."""
        namespace = manifest["metadata"]["namespace"]
        return await self._create(
            "secrets", self._core.create_namespaced_secret, namespace, cast(Any, dict(manifest))
        )

    async def delete_secret(self, namespace: str, name: str) -> None:
        """Delete a Secret; one already gone is fine."""
        try:
            await self._call(
                "delete", "secrets", self._core.delete_namespaced_secret, name, namespace
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def patch_instance_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        """Merge-patch a WorkflowInstance's status: the object as written, or None on a
        resourceVersion conflict (someone wrote since that version) and when the instance
        is gone (a deleted instance is fine)."""
        body: dict[str, Any] = json.loads(json.dumps({"status": dict(status)}, default=str))
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            written = await self._call(
                "patch",
                "workflowinstances/status",
                self._custom.patch_namespaced_custom_object_status,
                API_GROUP,
                API_VERSION,
                namespace,
                "workflowinstances",
                name,
                body,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            raise
        return cast(dict[str, Any], written)

    async def get_instance(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self._call(
                "get",
                "workflowinstances",
                self._custom.get_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                namespace,
                "workflowinstances",
                name,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def create_instance(self, manifest: Mapping[str, Any]) -> bool:
        """Create a WorkflowInstance; False when that name exists (idempotent by name)."""
        return await self._create(
            "workflowinstances",
            self._custom.create_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            manifest["metadata"]["namespace"],
            "workflowinstances",
            dict(manifest),
        )

    def list_instances(
        self, namespace: str, label_selector: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The WorkflowInstances matching ``label_selector``, a page at a time."""
        return self._pages(
            "workflowinstances",
            self._custom.list_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace,
            "workflowinstances",
            label_selector=label_selector,
        )

    async def remove_instance_finalizer(self, namespace: str, name: str, finalizer: str) -> None:
        """Take ``finalizer`` off a WorkflowInstance (a JSON patch that tests the list it
        replaces, so a concurrent change of the finalizers is not overwritten)."""
        obj = await self.get_instance(namespace, name)
        finalizers = list((obj or {}).get("metadata", {}).get("finalizers") or ())
        if obj is None or finalizer not in finalizers:
            return
        body = [
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {
                "op": "replace",
                "path": "/metadata/finalizers",
                "value": [f for f in finalizers if f != finalizer],
            },
        ]
        try:
            await self._call(
                "patch",
                "workflowinstances",
                self._custom.patch_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                namespace,
                "workflowinstances",
                name,
                body,
                _content_type="application/json-patch+json",
            )
        except ApiException as exc:
            if exc.status not in (404, 409, 422):  # gone, or changed meanwhile: seen again
                raise

    async def patch_instance_spec(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        """Merge-patch a WorkflowInstance's spec (cancel, suspend); a deleted one is fine."""
        try:
            await self._call(
                "patch",
                "workflowinstances",
                self._custom.patch_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                namespace,
                "workflowinstances",
                name,
                {"spec": dict(spec)},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def patch_trigger_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge-patch an EventTrigger's status (last start, next schedule time)."""
        body = json.loads(json.dumps({"status": dict(status)}, default=str))
        try:
            await self._call(
                "patch",
                "eventtriggers/status",
                self._custom.patch_namespaced_custom_object_status,
                API_GROUP,
                API_VERSION,
                namespace,
                "eventtriggers",
                name,
                body,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def get_test(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A WorkflowTest, None when it does not exist."""
        try:
            obj = await self._call(
                "get",
                "workflowtests",
                self._custom.get_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                namespace,
                "workflowtests",
                name,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def patch_test_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, resource_version: str
    ) -> bool:
        """Merge-patch a WorkflowTest's status (its last run); False on a resourceVersion
        conflict (someone wrote since it was read). A deleted test is fine."""
        body = json.loads(json.dumps({"status": dict(status)}, default=str))
        body["metadata"] = {"resourceVersion": resource_version}
        try:
            await self._call(
                "patch",
                "workflowtests/status",
                self._custom.patch_namespaced_custom_object_status,
                API_GROUP,
                API_VERSION,
                namespace,
                "workflowtests",
                name,
                body,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status != 404:
                raise
        return True

    async def get_definition(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A WorkflowDefinition, None when it does not exist."""
        try:
            obj = await self._call(
                "get",
                "workflowdefinitions",
                self._custom.get_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                namespace,
                "workflowdefinitions",
                name,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def patch_definition_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, resource_version: str
    ) -> bool:
        """Merge-patch a WorkflowDefinition's status (its test gate); False on a
        resourceVersion conflict. A deleted definition is fine."""
        body = json.loads(json.dumps({"status": dict(status)}, default=str))
        body["metadata"] = {"resourceVersion": resource_version}
        try:
            await self._call(
                "patch",
                "workflowdefinitions/status",
                self._custom.patch_namespaced_custom_object_status,
                API_GROUP,
                API_VERSION,
                namespace,
                "workflowdefinitions",
                name,
                body,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status != 404:
                raise
        return True


def current_namespace() -> str:
    """The pod's namespace in a cluster, else the kubeconfig context's, else "default"."""
    in_cluster = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if in_cluster.exists():
        return in_cluster.read_text().strip()
    from kubernetes import config

    with contextlib.suppress(Exception):
        _, context = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
        namespace = context.get("context", {}).get("namespace")
        if namespace:
            return str(namespace)
    return "default"
