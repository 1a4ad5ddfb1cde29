"""Offline checks of the chart: lint, schema, rendering, RBAC, security settings, docs."""

from __future__ import annotations

import ast
import base64
import filecmp
import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.install.conftest import (
    CHART,
    PRODUCTION_VALUES,
    RBAC_TABLE,
    ROOT,
    VALUES_DIR,
    Helm,
    Triple,
    find,
    granted_triples,
    table_triples,
)

PLAIT_KINDS = [
    "workflowdefinitions",
    "workflowinstances",
    "eventtriggers",
    "integrations",
    "eventdefinitions",
    "taskdefinitions",
    "workflowtests",
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


def rules_of(docs: list[dict[str, Any]], kind: str, suffix: str) -> set[Triple]:
    """(apiGroup, resource, verb) triples granted by one Role or ClusterRole."""
    return granted_triples([find(docs, kind, suffix)])


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
        ("Deployment", "plait-webhook"),
        ("Service", "plait-webhook-metrics"),
        ("PodDisruptionBudget", "plait-webhook"),
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
        "plait-webhook",
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
            if not name.endswith(("-migrate", "-initial-admin")):  # Jobs: run to completion
                assert "livenessProbe" in c, name
                assert "readinessProbe" in c, name


def test_processes_get_their_commands_probes_and_tokens(helm: Helm) -> None:
    specs = pod_specs(helm.render(values=[PRODUCTION_VALUES]))
    operator, api, migrate = specs["plait-operator"], specs["plait-api"], specs["plait-migrate"]
    webhook = specs["plait-webhook"]
    assert operator["containers"][0]["args"] == ["operator", "--all-namespaces"]
    assert webhook["containers"][0]["args"] == ["webhook", "--cert-dir=/etc/plait/webhook"]
    assert webhook["automountServiceAccountToken"] is True
    assert webhook["serviceAccountName"] == "plait-webhook"
    mount = next(m for m in webhook["containers"][0]["volumeMounts"] if m["name"] == "webhook-cert")
    assert mount == {"name": "webhook-cert", "mountPath": "/etc/plait/webhook", "readOnly": True}
    assert webhook["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["containers"][0]["args"] == ["api"]
    assert migrate["containers"][0]["args"] == ["migrate", "--create-roles"]
    assert operator["automountServiceAccountToken"] is True
    # The dashboard's run actions (api.dashboard.runActions, on by default) need its token.
    assert api["automountServiceAccountToken"] is True
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
    # Admission is the webhook's alone: the operator serves and mounts nothing of it.
    assert "WEBHOOK" not in str(operator)
    assert not [p for p in operator["containers"][0]["ports"] if p["containerPort"] == 9443]


API_COMPONENTS = ["event_processing", "observability", "auth", "integration", "web_application"]
#: What the API only reads (the dashboard, WorkflowTest results), as those components'
#: read-only roles (testing_framework's may also request a test run).
API_READS = ["workflow_orchestrator", "task_execution", "testing_framework"]


def dashed(component: str) -> str:
    return component.replace("_", "-")


def env_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in spec["containers"][0]["env"]}


@pytest.mark.parametrize(
    ("values", "secret"),
    [([], "plait-postgresql"), ([PRODUCTION_VALUES], "plait-database")],
    ids=["bundled", "production"],
)
def test_each_component_logs_in_as_its_own_role_by_default(
    helm: Helm, values: list[Path], secret: str
) -> None:
    """The operator gets one DSN per component, the API only its own and the read-only
    ones of what its dashboard reads; all from the Secret."""
    specs = pod_specs(helm.render(values=values))
    api_keys = {c: f"url-{dashed(c)}" for c in API_COMPONENTS}
    api_keys |= {c: f"url-{dashed(c)}-reader" for c in API_READS}
    for workload, keys in [
        ("plait-operator", {c: f"url-{dashed(c)}" for c in COMPONENTS}),
        ("plait-api", api_keys),
    ]:
        env = env_of(specs[workload])
        assert "PLAIT_DATABASE_URL" not in env
        dsns = {n: e for n, e in env.items() if n.startswith("PLAIT_DATABASE_URL_")}
        assert sorted(dsns) == sorted(f"PLAIT_DATABASE_URL_{c.upper()}" for c in keys)
        for c, key in keys.items():
            ref = dsns[f"PLAIT_DATABASE_URL_{c.upper()}"]["valueFrom"]["secretKeyRef"]
            # A Secret made before the read-only roles existed still installs.
            optional = {"optional": True} if key.endswith("-reader") else {}
            assert ref == {"name": secret, "key": key, **optional}
    migrate = specs["plait-migrate"]["containers"][0]
    assert migrate["args"] == ["migrate", "--create-roles"]
    env = env_of(specs["plait-migrate"])
    assert env["PLAIT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": secret,
        "key": "migration-url",
    }
    for c in COMPONENTS:
        ref = env[f"PLAIT_DATABASE_PASSWORD_{c.upper()}"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret, "key": f"password-{dashed(c)}"}
    for c in API_READS:
        ref = env[f"PLAIT_DATABASE_PASSWORD_{c.upper()}_READER"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret, "key": f"password-{dashed(c)}-reader", "optional": True}
    # No credential is ever a plain value of a container's environment.
    for name, spec in specs.items():
        for container in spec["containers"]:
            for e in container.get("env", []):
                if e["name"].startswith(("PLAIT_DATABASE_URL", "PLAIT_DATABASE_PASSWORD")):
                    assert "value" not in e, (name, e["name"])


def test_bundled_secret_holds_a_password_and_a_dsn_per_role(helm: Helm) -> None:
    data = {
        k: base64.b64decode(v).decode()
        for k, v in find(helm.render(), "Secret", "-postgresql")["data"].items()
    }
    superuser = data["password"]
    host = "plait-postgresql.plait.svc:5432/plait"
    assert data["migration-url"] == f"postgresql://postgres:{superuser}@{host}"
    assert "url" not in data  # no shared login
    roles = {dashed(c): f"plait_{c}" for c in COMPONENTS}
    roles |= {f"{dashed(c)}-reader": f"plait_{c}_reader" for c in API_READS}
    passwords = {data[f"password-{key}"] for key in roles} | {superuser}
    assert len(passwords) == len(roles) + 1  # all different
    for key, role in roles.items():
        password = data[f"password-{key}"]
        assert len(password) == 32
        assert data[f"url-{key}"] == f"postgresql://{role}:{password}@{host}"


def test_shared_login_and_database_per_component_modes(helm: Helm) -> None:
    specs = pod_specs(
        helm.render(
            values=[PRODUCTION_VALUES],
            sets=["database.componentRoles=false", "database.migration.createRoles=false"],
        )
    )
    for workload in ("plait-operator", "plait-api"):
        env = env_of(specs[workload])
        assert env["PLAIT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "plait-database",
            "key": "url",
        }
        assert not [n for n in env if n.startswith("PLAIT_DATABASE_URL_")]
    assert specs["plait-migrate"]["containers"][0]["args"] == ["migrate"]
    assert not [n for n in env_of(specs["plait-migrate"]) if "PASSWORD" in n]

    specs = pod_specs(helm.render(values=[PRODUCTION_VALUES], sets=["database.perComponent=true"]))
    for workload, prefix in [("plait-operator", "url-"), ("plait-migrate", "migration-url-")]:
        env = env_of(specs[workload])
        assert "PLAIT_DATABASE_URL" not in env
        for component in COMPONENTS:
            ref = env[f"PLAIT_DATABASE_URL_{component.upper()}"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "plait-database", "key": prefix + dashed(component)}
    # Without component roles there are no read-only roles: the API reads with the DSNs of
    # the components themselves.
    specs = pod_specs(
        helm.render(
            values=[PRODUCTION_VALUES],
            sets=["database.perComponent=true", "database.componentRoles=false"],
        )
    )
    env = env_of(specs["plait-api"])
    for component in [*API_COMPONENTS, *API_READS]:
        ref = env[f"PLAIT_DATABASE_URL_{component.upper()}"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "plait-database", "key": "url-" + dashed(component)}


def test_migration_hook_runs_before_install_and_upgrade(helm: Helm) -> None:
    job = find(helm.render(values=[PRODUCTION_VALUES]), "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # The bundled database only exists after the install: first migration is post-install.
    job = find(helm.render(), "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


@pytest.mark.parametrize("account", ["operator", "webhook"])
def test_rbac_cluster_wide_is_the_table(helm: Helm, account: str) -> None:
    docs = helm.render()
    mode = "allNamespaces"
    name = f"plait-{account}"
    assert rules_of(docs, "ClusterRole", name) == table_triples(account, mode, scope="watched")
    assert rules_of(docs, "ClusterRole", f"{name}-cluster") == table_triples(
        account, mode, scope="cluster"
    )
    binding = find(docs, "ClusterRoleBinding", f"{name}-cluster")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "plait"}]


def test_rbac_grants_nothing_unused(helm: Helm) -> None:
    docs = helm.render()
    roles = sorted(d["metadata"]["name"] for d in docs if d["kind"] in {"Role", "ClusterRole"})
    assert roles == [
        "plait-api",
        "plait-operator",
        "plait-operator-cluster",
        "plait-webhook",
        "plait-webhook-cluster",
    ]
    # The API: only the dashboard's changes of runs (api.dashboard.runActions), no Secret.
    api = granted_triples([d for d in docs if d["metadata"]["name"] == "plait-api"])
    assert api == {("plait.dev", "workflowinstances", v) for v in ("get", "patch", "create")}
    operator = granted_triples([d for d in docs if d["metadata"]["name"].startswith("plait-op")])
    # Nothing no code calls: Kopf runs standalone (no Leases, no peering objects), and
    # cluster-wide it needs no namespaces. Secrets are only read (an artifactRepository's
    # credentials), created and deleted (an attempt's artifact URLs), never listed or changed.
    assert not {t for t in operator if t[1] in {"leases", "namespaces"}}
    assert {t for t in operator if t[1] == "secrets"} == {
        ("", "secrets", "get"),
        ("", "secrets", "create"),
        ("", "secrets", "delete"),
    }
    # Pod logs are only read (task logs, plait.task_execution.logs), never anything else.
    assert {t for t in operator if t[1] == "pods/log"} == {("", "pods/log", "get")}
    assert {t for t in operator if t[1] == "pods"} == {("", "pods", "list"), ("", "pods", "watch")}
    webhook = granted_triples([d for d in docs if d["metadata"]["name"].startswith("plait-we")])
    assert ("authorization.k8s.io", "subjectaccessreviews", "create") in webhook
    # No wildcard anywhere, and no permission on webhook configurations.
    for doc in docs:
        for rule in doc.get("rules", []) if doc["kind"] in {"Role", "ClusterRole"} else []:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], doc["metadata"]["name"]
            assert "admissionregistration.k8s.io" not in rule["apiGroups"]
    # Without the webhook, its account and rules are gone.
    docs = helm.render(sets=["webhook.enabled=false"])
    assert not [d for d in docs if "webhook" in d["metadata"]["name"]]


def test_rbac_namespaced(helm: Helm) -> None:
    docs = helm.render(
        sets=["operator.allNamespaces=false", "operator.watchNamespaces={team-a,team-b}"]
    )
    for account in ("operator", "webhook"):
        name = f"plait-{account}"
        roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == name]
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
        for role in roles:
            assert rules_of([role], "Role", name) == table_triples(
                account, "namespaced", scope="watched"
            )
        assert not [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == name]
        assert rules_of(docs, "ClusterRole", f"{name}-cluster") == table_triples(
            account, "namespaced", scope="cluster"
        )
    # Kopf lists and watches namespaces when it serves only some of them.
    assert {("", "namespaces", "list"), ("", "namespaces", "watch")} <= rules_of(
        docs, "ClusterRole", "plait-operator-cluster"
    )
    operator = pod_specs(docs)["plait-operator"]["containers"][0]
    assert operator["args"] == ["operator", "--namespace=team-a", "--namespace=team-b"]
    for webhook in find(docs, "ValidatingWebhookConfiguration")["webhooks"]:
        expr = webhook["namespaceSelector"]["matchExpressions"][0]
        assert expr["values"] == ["team-a", "team-b"]


def defines(ref: str) -> bool:
    """Whether ``module:qualname`` names a function or class in that module's source (read,
    not imported: importing would run the module's side effects, metrics among them)."""
    module_name, _, qualname = ref.partition(":")
    path = ROOT / "operator" / Path(*module_name.split("."))
    source = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
    body: list[ast.stmt] = ast.parse(source.read_text()).body
    for part in qualname.split("."):
        found = [
            node
            for node in body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name == part
        ]
        if not found:
            return False
        body = found[0].body
    return True


def test_rbac_table_names_its_code_and_the_docs_show_it() -> None:
    """Each rule says why and who needs it; every module:qualname it names exists."""
    table = yaml.safe_load(RBAC_TABLE.read_text())
    assert sorted(table) == ["api", "operator", "webhook"]
    doc = (ROOT / "docs" / "install.md").read_text()
    for rules in table.values():
        seen: set[Triple] = set()
        for rule in rules:
            assert rule["scope"] in {"watched", "cluster", "webhookSecrets"}, rule
            if rule.get("value"):  # a value of the chart turns it on
                lookup = yaml.safe_load((CHART / "values.yaml").read_text())
                for part in rule["value"].split("."):
                    lookup = lookup[part]
            assert rule.get("modes", "both") in {"both", "allNamespaces", "namespaced"}, rule
            assert rule["why"], rule
            assert rule["code"], rule
            assert rule["why"] in doc
            for ref in rule["code"]:
                if ": " not in ref:  # not a description ("kopf: ...")
                    assert defines(ref), f"{ref} (in {RBAC_TABLE.name}) does not exist"
            triples = {
                (g, r, v)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
            }
            assert not triples & seen, f"listed twice: {triples & seen}"
            seen |= triples


def test_api_token_secret_is_a_mounted_file_and_no_kubernetes_access(helm: Helm) -> None:
    """The API reads its token from the mounted Secret: no Kubernetes token, no Role (with
    the dashboard's run actions off and no webhook Secret)."""
    docs = helm.render(
        sets=["api.tokenSecretName=plait-api-token", "api.dashboard.runActions=false"]
    )
    rbac = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    assert not [d for d in docs if d["kind"] in rbac and "api" in d["metadata"]["name"]]
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
    assert "plait-webhook" not in pod_specs(docs)
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


def test_api_webhook_secrets_are_granted_by_name_only(helm: Helm, tmp_path: Path) -> None:
    """api.webhookSecrets: a Role per namespace with `get` on exactly the listed Secrets,
    bound to the API's ServiceAccount, whose pods then mount its token and may reach the
    Kubernetes API server."""
    values = tmp_path / "values.yaml"
    listed = [
        {"namespace": "team-a", "names": ["github-hooks"]},
        {"namespace": "team-b", "names": ["slack", "shop"]},
        {"namespace": "team-a", "names": ["other", "github-hooks"]},
    ]
    values.write_text(
        yaml.safe_dump({"api": {"webhookSecrets": listed, "dashboard": {"runActions": False}}})
    )
    docs = helm.render(values=[values], sets=["networkPolicy.kubeApiPorts={6443}"])
    roles = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "plait-api-webhook-secrets"
    }
    assert sorted(roles) == ["team-a", "team-b"]
    names = {"team-a": ["github-hooks", "other"], "team-b": ["slack", "shop"]}
    for namespace, role in roles.items():
        assert role["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": names[namespace],
                "verbs": ["get"],
            }
        ]
        binding = [
            d
            for d in docs
            if d["kind"] == "RoleBinding"
            and d["metadata"]["name"] == "plait-api-webhook-secrets"
            and d["metadata"]["namespace"] == namespace
        ]
        assert binding[0]["roleRef"]["name"] == "plait-api-webhook-secrets"
        assert binding[0]["subjects"] == [
            {"kind": "ServiceAccount", "name": "plait-api", "namespace": "plait"}
        ]
    # The rule is the table's: the same verbs and resources, only narrowed by name.
    assert granted_triples(list(roles.values())) == table_triples(
        "api", "allNamespaces", scope="webhookSecrets"
    )
    # No other Secret access and no ClusterRole for the API.
    assert not [d for d in docs if d["kind"] == "ClusterRole" and "api" in d["metadata"]["name"]]
    assert pod_specs(docs)["plait-api"]["automountServiceAccountToken"] is True
    policy = find(docs, "NetworkPolicy", "plait-api")
    assert {"ports": [{"port": 6443, "protocol": "TCP"}]} in policy["spec"]["egress"]
    # A bad entry is refused by the schema.
    values.write_text(yaml.safe_dump({"api": {"webhookSecrets": [{"namespace": "team-a"}]}}))
    proc = helm.template(values=[values], check=False)
    assert proc.returncode != 0
    assert "webhookSecrets" in proc.stderr


@pytest.mark.parametrize("all_namespaces", [True, False])
def test_dashboard_run_actions_follow_the_watched_namespaces(
    helm: Helm, all_namespaces: bool
) -> None:
    sets = [f"operator.allNamespaces={str(all_namespaces).lower()}"]
    if not all_namespaces:
        sets.append("operator.watchNamespaces={team-a,team-b}")
    docs = helm.render(sets=sets)
    kind = "ClusterRole" if all_namespaces else "Role"
    roles = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == "plait-api"]
    mode = "allNamespaces" if all_namespaces else "namespaced"
    assert granted_triples(roles) == table_triples("api", mode, scope="watched")
    if not all_namespaces:
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert pod_specs(docs)["plait-api"]["automountServiceAccountToken"] is True
    policy = find(docs, "NetworkPolicy", "plait-api")
    assert {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]} in (
        policy["spec"]["egress"]
    )
    # Off: no rule, no token, no way to the Kubernetes API server.
    docs = helm.render(sets=[*sets, "api.dashboard.runActions=false"])
    assert not [
        d
        for d in docs
        if d["kind"] in {"Role", "ClusterRole"} and d["metadata"]["name"] == "plait-api"
    ]
    assert pod_specs(docs)["plait-api"]["automountServiceAccountToken"] is False
    policy = find(docs, "NetworkPolicy", "plait-api")
    assert not [
        r
        for r in policy["spec"]["egress"]
        if {"port": 443, "protocol": "TCP"} in r.get("ports", [])
    ]
