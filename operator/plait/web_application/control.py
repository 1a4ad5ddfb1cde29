"""The dashboard's run actions: the same change of a WorkflowInstance's spec that
``plait instances cancel|suspend|resume|retry`` (and ``kubectl patch``) make, so the
operator's reconciliation stays the one path for every change of a run.

The Kubernetes credentials are ``PLAIT_DASHBOARD_KUBECONFIG`` (else ``KUBECONFIG``), or
the pod's ServiceAccount in a cluster. The patch carries the object's resourceVersion, so
a change made meanwhile is not overwritten.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from plait import API_GROUP, API_VERSION
from plait.errors import ConfigurationError, NotFoundError, PlaitError

__all__ = ["ACTIONS", "ActionRefused", "RunControl"]

KUBECONFIG_ENV = "PLAIT_DASHBOARD_KUBECONFIG"
PLURAL = "workflowinstances"
#: How many times an action reads and patches a run that changed in between (409).
CONFLICT_RETRIES = 5
#: Action -> the phases of the run it applies to.
ACTIONS: Mapping[str, frozenset[str]] = {
    "cancel": frozenset({"Pending", "Running", "Suspended"}),
    "suspend": frozenset({"Pending", "Running"}),
    "resume": frozenset({"Suspended"}),
    "retry": frozenset({"Failed", "Error"}),
}


class ActionRefused(PlaitError):
    """The run is not in a phase the action applies to (HTTP 409)."""


class RunControl:
    """Patches WorkflowInstance specs (one API client, made on first use)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._kubeconfig = env.get(KUBECONFIG_ENV) or env.get("KUBECONFIG") or None
        self._api: client.ApiClient | None = None

    def _client(self) -> client.ApiClient:
        if self._api is None:
            try:
                if self._kubeconfig:
                    self._api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                        config_file=self._kubeconfig
                    )
                else:
                    configuration = client.Configuration()
                    config.load_incluster_config(  # type: ignore[no-untyped-call]
                        client_configuration=configuration
                    )
                    self._api = client.ApiClient(configuration)
            except config.ConfigException as exc:
                raise ConfigurationError(
                    f"the dashboard cannot reach Kubernetes to change runs ({KUBECONFIG_ENV}, "
                    f"KUBECONFIG or a ServiceAccount): {exc}"
                ) from None
        return self._api

    def _apply(self, namespace: str, name: str, action: str, user: str) -> str:
        """Read the run, then patch it on that resourceVersion (its phase was checked and a
        retry counts from what was read); read again when the operator wrote its status in
        between, as it does while a new run starts."""
        for _ in range(CONFLICT_RETRIES):
            try:
                return self._apply_once(namespace, name, action, user)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise ActionRefused(
            f"{namespace}/{name} kept changing ({CONFLICT_RETRIES} tries): {action} again"
        )

    def _apply_once(self, namespace: str, name: str, action: str, user: str) -> str:
        api = client.CustomObjectsApi(self._client())
        try:
            obj = cast(
                dict[str, Any],
                api.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, name, _request_timeout=10
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFoundError(f"WorkflowInstance {namespace}/{name} not found") from None
            raise
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        if phase not in ACTIONS[action]:
            raise ActionRefused(
                f"{namespace}/{name} is {phase}: {action} applies to a run that is "
                f"{' or '.join(sorted(ACTIONS[action]))}"
            )
        spec = obj.get("spec") or {}
        changes: dict[str, dict[str, Any]] = {
            "cancel": {"cancel": True},
            "suspend": {"suspend": True},
            "resume": {"suspend": False},
            "retry": {"retry": int(spec.get("retry", 0)) + 1},
        }
        change = changes[action]
        body = {
            "metadata": {
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "annotations": {f"{API_GROUP}/last-action": f"{action} by {user}"[:256]},
            },
            "spec": change,
        }
        api.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name, body, _request_timeout=10
        )
        return f"{action} requested"

    def _create(
        self, namespace: str, definition: str, arguments: Mapping[str, Any], user: str
    ) -> str:
        api = client.CustomObjectsApi(self._client())
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": "WorkflowInstance",
            "metadata": {
                "generateName": f"{definition[:200]}-",
                "annotations": {f"{API_GROUP}/submitted-by": user[:256]},
            },
            "spec": {"workflowRef": {"name": definition}, "arguments": dict(arguments)},
        }
        try:
            created = cast(
                dict[str, Any],
                api.create_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, body, _request_timeout=10
                ),
            )
        except ApiException as exc:
            if exc.status in (400, 403, 404, 422):
                # The admission webhook's or the API server's own words.
                try:
                    message = str(json.loads(exc.body or "{}").get("message") or exc.reason)
                except ValueError:
                    message = str(exc.reason)
                raise ActionRefused(message) from None
            raise
        return str(created["metadata"]["name"])

    async def create(
        self, namespace: str, definition: str, arguments: Mapping[str, Any], user: str
    ) -> str:
        """Start a run of ``definition`` (a WorkflowInstance, as ``kubectl create`` makes
        one); the name it got."""
        return await asyncio.to_thread(self._create, namespace, definition, arguments, user)

    async def apply(self, namespace: str, name: str, action: str, user: str) -> str:
        """Ask for ``action`` on the run; what was asked, for the page to say."""
        if action not in ACTIONS:
            raise NotFoundError(f"no action {action[:40]!r}")
        return await asyncio.to_thread(self._apply, namespace, name, action, user)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]
            self._api = None
