"""Offline checks of the chart: lint, schema, rendering, RBAC, security settings, docs."""

from __future__ import annotations

import filecmp
import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.install.conftest import CHART, PRODUCTION_VALUES, ROOT, VALUES_DIR, Helm, find

PLAIT_KINDS = [
    "workflowdefinitions",
    "workflowinstances",
    "eventtriggers",
    "integrations",
    "eventdefinitions",
    "taskdefinitions",
]
COMPONENTS = [
    "workflow_orchestrator",
    "event_processing",
    "task_execution",
    "integration",
    "auth",
    "testing_framework",
    "web_application",
    "observability",
]


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Name -> pod spec of every workload in the render."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet", "Job"}
    }


def rules_of(docs: list[dict[str, Any]], kind: str, suffix: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples granted by one Role or ClusterRole."""
    role = find(docs, kind, suffix)
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def expected_operator_rules(*, secrets: bool, namespaces: bool) -> set[tuple[str, str, str]]:
    want: set[tuple[str, str, str]] = set()
    for kind in PLAIT_KINDS:
        want |= {("plait.dev", kind, v) for v in ("get", "list", "watch", "patch", "update")}
        want |= {("plait.dev", f"{kind}/status", v) for v in ("get", "patch", "update")}
        want.add(("plait.dev", f"{kind}/finalizers", "update"))
    want.add(("plait.dev", "workflowinstances", "create"))  # EventTriggers start runs
    want |= {("batch", "jobs", v) for v in ("get", "list", "watch", "create", "delete")}
    want |= {("", "pods", v) for v in ("get", "list", "watch")}
    want.add(("", "pods/log", "get"))
    want |= {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
    if secrets:
        want.add(("", "secrets", "get"))
    if namespaces:
        want |= {("", "namespaces", v) for v in ("get", "list", "watch")}
    return want


def test_helm_lint_strict(helm: Helm) -> None:
    for values in ([], ["-f", str(PRODUCTION_VALUES)]):
        proc = helm.run("lint", "--strict", str(CHART), *values, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout


def test_chart_crds_are_the_generated_crds() -> None:
    """helm/plait/crds/ must be byte-identical to crds/ (`plait crds` output)."""
    ours = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    theirs = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert ours == theirs, "run `make manifests` (it copies crds/ into the chart)"
    _, mismatch, errors = filecmp.cmpfiles(ROOT / "crds", CHART / "crds", theirs, shallow=False)
    assert not mismatch, f"stale: {mismatch}; run `make manifests`"
    assert not errors, f"unreadable: {errors}"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["operator.replicas=two"], "at '/operator/replicas': got string, want integer"),
        (["webhook.failurePolicy=Sometimes"], "at '/webhook/failurePolicy'"),
        (["webhok.enabled=false"], "additional properties 'webhok' not allowed"),
        (["api.antiAffinity=always"], "at '/api/antiAffinity'"),
        (["image.digest=latest"], "at '/image/digest'"),
        (["operator.watchNamespaces[0]=Not_A_Namespace"], "at '/operator/watchNamespaces/0'"),
        (["postgresql.enabled=false"], "at '/database/existingSecret'"),
    ],
)
def test_schema_rejects_wrong_values(helm: Helm, sets: list[str], message: str) -> None:
    proc = helm.template(sets=sets, check=False)
    assert proc.returncode != 0, f"{sets} was accepted"
    assert message in proc.stderr, proc.stderr


def test_defaults_render_every_part(helm: Helm) -> None:
    docs = helm.render()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("Deployment", "plait-operator"),
        ("Deployment", "plait-api"),
        ("Service", "plait-api"),
        ("Service", "plait-api-metrics"),
        ("Service", "plait-operator-metrics"),
        ("Service", "plait-webhook"),
        ("PodDisruptionBudget", "plait-api"),
        ("ValidatingWebhookConfiguration", "plait"),
        ("Secret", "plait-webhook-tls"),
        ("Job", "plait-migrate"),
        ("StatefulSet", "plait-postgresql"),
    ]:
        assert expected in kinds
    assert {n for k, n in kinds if k == "NetworkPolicy"} == {
        "plait-operator",
        "plait-api",
        "plait-migrate",
        "plait-postgresql",
    }
    # Optional parts stay off by default.
    assert not {k for k, _ in kinds} & {"ServiceMonitor", "Certificate"}


@pytest.mark.parametrize("values", [[], [PRODUCTION_VALUES]], ids=["default", "production"])
def test_every_pod_is_restricted_with_resources(helm: Helm, values: list[Path]) -> None:
    for name, spec in pod_specs(helm.render(values=values)).items():
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name
            if not name.endswith("-migrate"):
                assert "livenessProbe" in c, name
                assert "readinessProbe" in c, name


def test_processes_get_their_commands_probes_and_tokens(helm: Helm) -> None:
    specs = pod_specs(helm.render(values=[PRODUCTION_VALUES]))
    operator, api, migrate = specs["plait-operator"], specs["plait-api"], specs["plait-migrate"]
    assert operator["containers"][0]["args"] == ["operator", "--all-namespaces"]
    assert api["containers"][0]["args"] == ["api"]
    assert migrate["containers"][0]["args"] == ["migrate"]
    assert operator["automountServiceAccountToken"] is True
    assert api["automountServiceAccountToken"] is False
    assert migrate["automountServiceAccountToken"] is False
    assert api["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert operator["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Anti-affinity spreads API replicas over nodes.
    term = api["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    # Migrations run in the hook only, never at operator start.
    env = {e["name"]: e for e in operator["containers"][0]["env"]}
    assert env["PLAIT_MIGRATE_ON_START"]["value"] == "false"
    assert env["PLAIT_WEBHOOK_CERT_DIR"]["value"] == "/etc/plait/webhook"


def test_database_secret_shared_and_per_component(helm: Helm) -> None:
    specs = pod_specs(helm.render(values=[PRODUCTION_VALUES]))
    env = {e["name"]: e for e in specs["plait-api"]["containers"][0]["env"]}
    assert env["PLAIT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "plait-database",
        "key": "url",
    }
    migrate_env = {e["name"]: e for e in specs["plait-migrate"]["containers"][0]["env"]}
    assert migrate_env["PLAIT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "migration-url"

    specs = pod_specs(helm.render(values=[PRODUCTION_VALUES], sets=["database.perComponent=true"]))
    for workload, prefix in [("plait-operator", "url-"), ("plait-migrate", "migration-url-")]:
        env = {e["name"]: e for e in specs[workload]["containers"][0]["env"]}
        assert "PLAIT_DATABASE_URL" not in env
        for component in COMPONENTS:
            ref = env[f"PLAIT_DATABASE_URL_{component.upper()}"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "plait-database", "key": prefix + component.replace("_", "-")}


def test_migration_hook_runs_before_install_and_upgrade(helm: Helm) -> None:
    job = find(helm.render(values=[PRODUCTION_VALUES]), "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # The bundled database only exists after the install: first migration is post-install.
    job = find(helm.render(), "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_operator_rbac_cluster_wide_is_exact(helm: Helm) -> None:
    docs = helm.render()
    assert rules_of(docs, "ClusterRole", "plait-operator") == expected_operator_rules(
        secrets=True, namespaces=True
    )
    assert rules_of(docs, "ClusterRole", "-crds") == {
        ("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")
    }
    assert rules_of(docs, "Role", "-leases") == {
        ("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")
    }
    # No wildcard anywhere, and no permission on webhook configurations.
    for doc in docs:
        for rule in doc.get("rules", []) if doc["kind"] in {"Role", "ClusterRole"} else []:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], doc["metadata"]["name"]
            assert "admissionregistration.k8s.io" not in rule["apiGroups"]
    # The API gets no role at all.
    assert not [
        d for d in docs if d["kind"] in {"Role", "RoleBinding"} and "-api" in d["metadata"]["name"]
    ]


def test_operator_rbac_namespaced(helm: Helm) -> None:
    docs = helm.render(
        sets=[
            "operator.allNamespaces=false",
            "operator.watchNamespaces={team-a,team-b}",
            "operator.readSecrets=false",
        ]
    )
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "plait-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        got = rules_of([role], "Role", "plait-operator")
        assert got == expected_operator_rules(secrets=False, namespaces=False)
    assert not [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "plait-operator"
    ]
    operator = pod_specs(docs)["plait-operator"]["containers"][0]
    assert operator["args"] == ["operator", "--namespace=team-a", "--namespace=team-b"]
    for webhook in find(docs, "ValidatingWebhookConfiguration")["webhooks"]:
        expr = webhook["namespaceSelector"]["matchExpressions"][0]
        assert expr["values"] == ["team-a", "team-b"]


def test_api_token_secret_is_a_mounted_file_and_no_kubernetes_access(helm: Helm) -> None:
    """The API reads its token from the mounted Secret: no Kubernetes token, no Role."""
    docs = helm.render(sets=["api.tokenSecretName=plait-api-token"])
    assert not [
        d for d in docs if d["kind"] in {"Role", "RoleBinding"} and "api" in d["metadata"]["name"]
    ]
    pod = pod_specs(docs)["plait-api"]
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/plait/api-token")
    assert mount["readOnly"] is True
    assert env["PLAIT_API_TOKEN_FILE"].startswith("/etc/plait/api-token/")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "plait-api-token"


def test_webhook_self_signed_certificate_matches_service(helm: Helm, tmp_path: Path) -> None:
    docs = helm.render(namespace="ops")
    webhooks = find(docs, "ValidatingWebhookConfiguration")["webhooks"]
    # One per kind, each at the path of its Kopf handler (validate-<plural>).
    assert [w["clientConfig"]["service"]["path"] for w in webhooks] == [
        f"/validate-{kind}" for kind in PLAIT_KINDS
    ]
    assert [w["rules"][0]["resources"] for w in webhooks] == [[kind] for kind in PLAIT_KINDS]
    for w in webhooks:
        assert w["sideEffects"] == "None"
        assert w["failurePolicy"] == "Fail"
        assert w["timeoutSeconds"] <= 10
        assert w["clientConfig"]["caBundle"] == webhooks[0]["clientConfig"]["caBundle"]
    vwc = webhooks[0]
    assert vwc["clientConfig"]["service"] == {
        "name": "plait-webhook",
        "namespace": "ops",
        "path": "/validate-workflowdefinitions",
        "port": 443,
    }
    secret = find(docs, "Secret", "-webhook-tls")
    import base64

    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(vwc["clientConfig"]["caBundle"]))
    crt = tmp_path / "tls.crt"
    crt.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    # The serving certificate is signed by the CA in the bundle and names the Service.
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(crt)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(crt)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:plait-webhook.ops.svc" in text


def test_webhook_from_cert_manager(helm: Helm) -> None:
    docs = helm.render(sets=["webhook.certManager.enabled=true"])
    vwc = find(docs, "ValidatingWebhookConfiguration")
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "plait/plait-webhook"
    assert "caBundle" not in vwc["webhooks"][0]["clientConfig"]
    cert = find(docs, "Certificate")
    assert cert["spec"]["secretName"] == "plait-webhook-tls"
    assert cert["spec"]["issuerRef"] == {"kind": "Issuer", "name": "plait-webhook-selfsigned"}
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-tls")]


def test_optional_parts(helm: Helm) -> None:
    docs = helm.render(
        values=[PRODUCTION_VALUES],
        sets=["metrics.serviceMonitor.enabled=true", "webhook.enabled=false"],
    )
    monitor = find(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    metrics_services = [
        d
        for d in docs
        if d["kind"] == "Service" and d["metadata"]["labels"].get("plait.dev/metrics")
    ]
    assert sorted(s["metadata"]["name"] for s in metrics_services) == [
        "plait-api-metrics",
        "plait-operator-metrics",
    ]
    policies = {d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies == {"plait-operator", "plait-api", "plait-migrate"}
    assert not [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    assert "PLAIT_WEBHOOK_CERT_DIR" not in str(pod_specs(docs)["plait-operator"])
    # NetworkPolicies turned off: only the bundled database keeps its policy.
    docs = helm.render(sets=["networkPolicy.enabled=false"])
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"] == [
        "plait-postgresql"
    ]


def test_kwok_values_only_relax_what_kwok_cannot_do() -> None:
    """The e2e overrides stay minimal: the webhook policy and the database volume."""
    values = yaml.safe_load((VALUES_DIR / "kwok.yaml").read_text())
    assert values == {
        "webhook": {"failurePolicy": "Ignore"},
        "postgresql": {"persistence": {"enabled": False}},
    }


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), ROOT / "hack" / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_values_reference_is_up_to_date() -> None:
    proc = subprocess.run(
        ["python", str(ROOT / "hack" / "gen-values-doc.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_value_is_documented() -> None:
    """Each leaf of values.yaml is documented itself or by an ancestor."""
    gen = _load_script("gen-values-doc.py")
    documented = {path for path, _ in gen.documented_keys((CHART / "values.yaml").read_text())}

    def leaves(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict) and node:
            return [p for k, v in node.items() for p in leaves(v, f"{prefix}{k}.")]
        return [prefix.rstrip(".")]

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [
        leaf
        for leaf in leaves(values, "")
        if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert not missing, f"values without a `# --` comment: {missing}"


def test_values_doc_generator_reads_nested_and_multiline_comments() -> None:
    gen = _load_script("gen-values-doc.py")
    text = "a:\n  # -- first line\n  # second line\n  b: 1\n# plain comment\nc: 2\n# -- d\nd: {}\n"
    assert gen.documented_keys(text) == [("a.b", "first line second line"), ("d", "d")]
