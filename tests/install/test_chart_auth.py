"""The chart's accounts: the token key and first admin's password, the hook Job that makes
the admin, and Kubernetes identities (the values reach `plait api` as it reads them)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from plait.auth.secrets import MIN_KEY_BYTES
from plait.auth.settings import AuthSettings
from tests.install.conftest import Helm, find


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def _workload(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert found, f"no {kind} {name}"
    spec: dict[str, Any] = found[0]["spec"]["template"]["spec"]
    return spec


def test_defaults_generate_a_key_and_a_first_admin(helm: Helm) -> None:
    docs = helm.render()
    key = find(docs, "Secret", "plait-auth-key")
    assert len(base64.b64decode(key["data"]["key"])) >= MIN_KEY_BYTES
    admin = find(docs, "Secret", "plait-initial-admin")
    assert base64.b64decode(admin["data"]["username"]) == b"admin"
    assert len(base64.b64decode(admin["data"]["password"])) >= 16

    job = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "plait-initial-admin"]
    assert job[0]["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job[0]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["args"][:3] == ["auth", "bootstrap", "--if-missing"]
    assert "PLAIT_DATABASE_URL_AUTH" in _env(container)

    api = _workload(docs, "Deployment", "plait-api")
    # Mounted for the dashboard's run actions (api.dashboard.runActions), not TokenReview.
    assert api["automountServiceAccountToken"] is True
    env = _env(api["containers"][0])
    assert env["PLAIT_AUTH_TOKEN_KEY_FILE"] == "/etc/plait/auth-key/key"
    assert "PLAIT_DATABASE_URL_AUTH" in env
    assert "PLAIT_AUTH_KUBERNETES" not in env
    settings = AuthSettings.from_environment(
        {k: v for k, v in env.items() if k != "PLAIT_AUTH_TOKEN_KEY_FILE"}
    )
    assert settings.token_file_roles == ("admin",)
    assert settings.session_absolute_seconds == 43200
    assert settings.cookie_secure is True
    assert not [
        d
        for d in docs
        if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == "system:auth-delegator"
    ]


def test_kubernetes_identities_mount_the_token_and_may_review_tokens(
    helm: Helm, tmp_path: Path
) -> None:
    mappings = [
        {"group": "system:serviceaccounts:shop", "role": "publisher", "namespaces": ["shop"]},
        {"user": "system:serviceaccount:ops:deployer", "role": "editor"},
    ]
    values = tmp_path / "values.yaml"
    values.write_text(
        json.dumps({"auth": {"kubernetes": {"enabled": True, "roleMappings": mappings}}})
    )
    docs = helm.render(values=[values])
    api = _workload(docs, "Deployment", "plait-api")
    assert api["automountServiceAccountToken"] is True
    env = _env(api["containers"][0])
    settings = AuthSettings.from_environment(
        {k: v for k, v in env.items() if k != "PLAIT_AUTH_TOKEN_KEY_FILE"}
    )
    assert settings.kubernetes is not None
    assert [m.model_dump(exclude_none=True) for m in settings.kubernetes.mappings] == [
        {**mappings[0], "namespaces": ("shop",)},
        {**mappings[1], "namespaces": ()},
    ]
    binding = find(docs, "ClusterRoleBinding", "plait-api-tokenreview")
    assert binding["roleRef"]["name"] == "system:auth-delegator"
    assert binding["subjects"][0]["name"] == "plait-api"


def test_schema_refuses_a_mapping_without_one_subject(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"auth": {"kubernetes": {"roleMappings": [{"role": "x"}]}}}))
    proc = helm.template(values=[values], check=False)
    assert proc.returncode != 0
    assert "roleMappings/0" in proc.stderr


def test_oidc_values_reach_the_api(helm: Helm, tmp_path: Path) -> None:
    oidc = {
        "enabled": True,
        "issuer": "https://login.example.org/",
        "clientId": "plait",
        "clientSecretName": "plait-oidc",
        "redirectUri": "https://plait.example.org/v1/auth/oidc/callback",
        "roleMappings": [{"group": "platform", "role": "admin"}],
    }
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"auth": {"oidc": oidc}}))
    docs = helm.render(values=[values])
    container = _workload(docs, "Deployment", "plait-api")["containers"][0]
    env = _env(container)
    secret = next(e for e in container["env"] if e["name"] == "PLAIT_AUTH_OIDC_CLIENT_SECRET")
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "plait-oidc", "key": "client-secret"}
    settings = AuthSettings.from_environment(
        {
            **{k: v for k, v in env.items() if k != "PLAIT_AUTH_TOKEN_KEY_FILE"},
            "PLAIT_AUTH_OIDC_CLIENT_SECRET": "from-the-secret",
        }
    )
    assert settings.oidc is not None
    assert settings.oidc.issuer == oidc["issuer"]
    assert settings.oidc.scopes == ("openid", "profile", "email")
    assert [m.group for m in settings.oidc.mappings] == ["platform"]
    policy = find(docs, "NetworkPolicy", "plait-api")
    assert {"ports": [{"port": 443, "protocol": "TCP"}]} in policy["spec"]["egress"]
    # Enabled without an issuer is refused by the schema.
    values.write_text(json.dumps({"auth": {"oidc": {**oidc, "issuer": ""}}}))
    assert helm.template(values=[values], check=False).returncode != 0
