"""Kubernetes ServiceAccount tokens (TokenRequest) checked with TokenReview against the
real kube-apiserver, mapped to roles by configuration."""

from __future__ import annotations

import asyncio
import json

import pytest
from kubernetes import client

from plait.auth.settings import AuthSettings, KubernetesAuth, RoleMapping
from tests.auth.conftest import AuthApi, bearer, fast_settings
from tests.fixtures.kube import Kube

pytestmark = pytest.mark.e2e


def service_account_token(kube: Kube, name: str, namespace: str | None = None) -> str:
    """A real, short-lived token of a ServiceAccount (created if missing)."""
    where: str = namespace or kube.namespace
    core = kube.core
    try:
        core.create_namespaced_service_account(
            where, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    answer = core.create_namespaced_service_account_token(name, where, request)
    assert answer.status is not None
    return str(answer.status.token)


@pytest.fixture
def auth_settings(kube: Kube) -> AuthSettings:
    ns = kube.namespace
    return fast_settings(
        kubernetes=KubernetesAuth(
            mappings=(
                RoleMapping(
                    role="publisher", user=f"system:serviceaccount:{ns}:sender", namespaces=(ns,)
                ),
                RoleMapping(role="viewer", group=f"system:serviceaccounts:{ns}"),
            ),
            cache_seconds=1.0,
            kubeconfig=str(kube.kubeconfig),
        )
    )


async def test_service_account_tokens_are_reviewed_and_mapped(auth: AuthApi, kube: Kube) -> None:
    ns = kube.namespace
    sender = service_account_token(kube, "sender")
    reader = service_account_token(kube, "reader")
    stranger = service_account_token(kube, "default", "default")
    auth.used |= {sender, reader, stranger}
    event = json.dumps({"specversion": "1.0", "id": "k1", "source": "/k", "type": "k.t"})
    headers = {"Content-Type": "application/cloudevents+json"}

    me = await (await auth.call("GET", "/v1/auth/whoami", headers=bearer(sender))).json()
    assert me["name"] == f"system:serviceaccount:{ns}:sender"
    assert me["kind"] == "kubernetes"
    assert me["namespaces"] == {ns: ["events:publish", "tokens:own"]}
    resp = await auth.client.post(
        f"/v1/namespaces/{ns}/events", data=event, headers={**headers, **bearer(sender)}
    )
    assert resp.status == 202, await resp.text()
    resp = await auth.client.post(
        "/v1/namespaces/elsewhere/events", data=event, headers={**headers, **bearer(sender)}
    )
    assert resp.status == 403
    # reader: only the group mapping (viewer everywhere).
    resp = await auth.client.post(
        f"/v1/namespaces/{ns}/events", data=event, headers={**headers, **bearer(reader)}
    )
    assert resp.status == 403
    resp = await auth.call("GET", "/v1/namespaces/elsewhere/deadletters", headers=bearer(reader))
    assert resp.status == 200
    # A valid identity that no mapping names, and a token the API server rejects.
    resp = await auth.call("GET", "/v1/auth/whoami", headers=bearer(stranger))
    assert resp.status == 401
    assert "no role mapping names it" in (await resp.json())["detail"]
    forged = sender[:-10] + ("A" * 10 if not sender.endswith("A" * 10) else "B" * 10)
    resp = await auth.call("GET", "/v1/auth/whoami", headers=bearer(forged))
    assert resp.status == 401
    assert "does not accept this token" in (await resp.json())["detail"]

    # Deleting the ServiceAccount ends its token once the caches have passed (Plait's 1 s
    # here; the API server's own token cache keeps a success for 10 s by default).
    kube.core.delete_namespaced_service_account("sender", ns)
    for _ in range(30):
        await asyncio.sleep(1)
        resp = await auth.call("GET", "/v1/auth/whoami", headers=bearer(sender))
        if resp.status != 200:
            break
    assert resp.status == 401
    assert "does not accept this token" in (await resp.json())["detail"]
    metrics = await (await auth.call("GET", "/metrics")).text()
    assert 'plait_auth_authentications_total{method="kubernetes",outcome="ok"}' in metrics
