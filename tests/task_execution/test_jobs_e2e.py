"""Task Jobs on the control plane: Pod Security admission and Integrations.

The kube-apiserver runs Pod Security admission whatever the nodes are, so a namespace
labelled ``pod-security.kubernetes.io/enforce=restricted`` refuses a non-compliant Pod even
with kwok's simulated nodes: the Job controller reports FailedCreate, and Plait has to turn
that into a failed task.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import psycopg
import pytest

from plait.testing._process import wait_until
from tests.controller.test_operator import condition, wait_condition
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import attempts, jobs, submit, task, wait_phase

pytestmark = pytest.mark.e2e


@pytest.fixture
def restricted(plait_crds: KubeCluster, kube: Kube) -> Kube:
    """The test's namespace, enforcing the restricted Pod Security level."""
    plait_crds.kubectl(
        "label",
        "namespace",
        kube.namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    return kube


def pods_of(kube: Kube, job: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "pods", "-l", f"job-name={job}", "-o", "json")
    return list(json.loads(out)["items"])


def test_default_tasks_run_where_restricted_is_enforced_and_overrides_are_refused(
    restricted: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    privileged = task("privileged")
    privileged["template"]["securityContext"] = {"privileged": True}
    no_account = task("no-account")
    no_account["template"]["serviceAccountName"] = "missing"
    submit(
        restricted,
        "hardened",
        [task("plain", outputs={"ok": True}), privileged, no_account],
        # A workflow-wide default the tasks inherit (the run of test_a_task_gets_... below
        # has Plait's own defaults only): still restricted-compliant.
        securityContext={"runAsUser": 1000, "fsGroup": 2000},
    )
    status = wait_phase(restricted, "hardened-run")
    assert status["phase"] == "Failed"
    rows = {row[0]: row for row in attempts(migrated_database, "hardened-run")}
    assert rows["plain"][2] == "Succeeded"

    # The Pods that ran carry Plait's defaults under the workflow's own fields.
    ran = pods_of(restricted, rows["plain"][6])
    assert len(ran) == 1
    spec = ran[0]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "fsGroup": 2000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert not any("kube-api-access" in v["name"] for v in spec.get("volumes", ())), (
        "no ServiceAccount token is mounted"
    )

    # The privileged one: refused by the API server, failed by Plait with the reason.
    _, _, state, _, _, message, job = rows["privileged"]
    assert state == "Failed"
    assert message.startswith("the cluster refused the task's Pod: ")
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "privileged" in message
    assert job not in jobs(restricted), "the refused Job is deleted (its controller would retry)"
    assert pods_of(restricted, job) == []

    _, _, state, _, _, message, _ = rows["no-account"]
    assert state == "Failed"
    assert 'serviceaccount "missing" not found' in message

    assert status["counts"]["failed"] == 2
    failed = status["failure"]["task"]
    assert failed in {"privileged", "no-account"}
    assert status["failure"]["message"].startswith(
        f"task {failed} attempt 1 failed: the cluster refused the task's Pod: "
    )


def test_a_task_gets_its_integrations_and_no_secret_value_is_in_any_object(
    restricted: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    token = f"tok-{secrets.token_hex(16)}"
    restricted.kubectl(
        "create", "secret", "generic", "notifier-credentials", f"--from-literal=token={token}"
    )
    integrations = [
        {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": "notifier"},
            "spec": {
                "type": "http",
                "settings": {"baseUrl": "https://hooks.example.com/plait", "timeoutSeconds": 10},
                "secretRef": {"name": "notifier-credentials"},
            },
        },
        {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": "chat"},
            "spec": {"type": "slack", "secretRef": {"name": "slack", "keys": {"bot": "b"}}},
        },
    ]
    for obj in integrations:
        restricted.kubectl("apply", "-f", "-", input=json.dumps(obj))
    start_operator()
    wait_condition(restricted, "integrations", "notifier", "Ready", "True")
    chat_object = wait_condition(restricted, "integrations", "chat", "Ready", "False")
    refused = condition(chat_object, "Ready")
    assert refused["reason"] == "InvalidSecretRef"
    assert refused["message"] == (
        "spec.secretRef.keys.bot: 'bot' is not a secret key of type 'slack' "
        "(its secret keys: token, signingSecret)"
    )

    notify = task("notify", outputs={"sent": True})
    notify["template"]["integrations"] = [{"name": "notifier"}]
    chat = task("chat")
    chat["template"]["integrations"] = [{"name": "chat"}]
    submit(restricted, "notify", [notify, chat])
    wait_phase(restricted, "notify-run")
    rows = {row[0]: row for row in attempts(migrated_database, "notify-run")}
    assert rows["notify"][2] == "Succeeded"
    # The refused Integration was never stored: its task fails, saying so.
    assert rows["chat"][2] == "Failed"
    assert rows["chat"][5] == (
        "the task cannot start: Integration 'chat' does not exist in namespace "
        f"'{restricted.namespace}' (or was refused: see its Ready condition)"
    )

    job = jobs(restricted)[rows["notify"][6]]
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod_spec["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in pod_spec["containers"][0]["env"]}
    assert env["PLAIT_INTEGRATION_NOTIFIER_BASE_URL"] == "https://hooks.example.com/plait"
    assert env["PLAIT_INTEGRATION_NOTIFIER_TIMEOUT_SECONDS"] == "10"
    assert json.loads(env["PLAIT_INTEGRATIONS"])["notifier"]["secretsDir"] == (
        "/var/run/plait/integrations/notifier"
    )
    assert pod_spec["volumes"] == [
        {
            "name": "plait-integrations",
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {
                        "secret": {
                            "name": "notifier-credentials",
                            "items": [{"key": "token", "path": "notifier/token"}],
                        }
                    }
                ],
            },
        }
    ]
    assert pod_spec["containers"][0]["volumeMounts"] == [
        {"name": "plait-integrations", "mountPath": "/var/run/plait/integrations", "readOnly": True}
    ]

    # The token is in its Secret only: not in the Job, its Pod, nor any row Plait wrote.
    assert token not in json.dumps(job)
    assert token not in json.dumps(pods_of(restricted, rows["notify"][6]))
    with psycopg.connect(migrated_database) as conn:
        tables = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema LIKE '%_service' AND table_type = 'BASE TABLE'"
        ).fetchall()
        for (table,) in tables:
            hits = conn.execute(
                f"SELECT count(*) FROM {table} t WHERE t::text LIKE %s", (f"%{token}%",)
            ).fetchone()
            assert hits == (0,), table


def test_a_resumed_attempt_whose_job_cannot_be_built_fails_and_ends_the_run(
    restricted: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    """A quota refusal leaves the attempt Pending (the Job controller retries it); after a
    restart the missing Job cannot be rebuilt (its Integration is gone): the attempt fails
    and the run ends then, not at some later wake-up."""
    restricted.kubectl("create", "quota", "no-pods", "--hard=pods=0")
    integration = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": "notifier"},
        "spec": {"type": "http", "settings": {"baseUrl": "https://hooks.example.com"}},
    }
    restricted.kubectl("apply", "-f", "-", input=json.dumps(integration))
    operator = start_operator()
    wait_condition(restricted, "integrations", "notifier", "Ready", "True")
    notify = task("notify")
    notify["template"]["integrations"] = [{"name": "notifier"}]
    submit(restricted, "quota", [notify])

    def refused_for_quota() -> bool:
        out = restricted.kubectl(
            "get", "events", "--field-selector=reason=FailedCreate", "-o", "json"
        )
        return any("exceeded quota" in e["message"] for e in json.loads(out)["items"])

    wait_until(refused_for_quota, timeout=60, what="the quota's FailedCreate Event")
    time.sleep(2)  # the operator has seen that Event: it must leave the attempt alone
    ((_, _, state, _, _, _, job),) = attempts(migrated_database, "quota-run")
    assert state == "Pending"

    operator.stop()
    restricted.kubectl("delete", "job", job, "--wait=true")
    # The Integration goes while no operator runs: what its finalizer would have recorded
    # is written by hand, so the restarted operator finds it deleted.
    restricted.kubectl(
        "patch", "integration", "notifier", "--type=merge", "-p", '{"metadata":{"finalizers":[]}}'
    )
    restricted.kubectl("delete", "integration", "notifier", "--wait=true")
    with psycopg.connect(migrated_database) as conn:
        conn.execute(
            "UPDATE integration_service.integration_instances SET deleted_at = now() "
            "WHERE name = 'notifier'"
        )
    start_operator()
    status = wait_phase(restricted, "quota-run", timeout=30)
    assert status["phase"] == "Failed"
    ((_, _, state, _, _, message, _),) = attempts(migrated_database, "quota-run")
    assert state == "Failed"
    assert message.startswith("the task cannot start: Integration 'notifier' does not exist")
