"""`make demo`: Plait end to end on the embedded local setup.

Starts a private PostgreSQL and the local control plane with its two nodes (kwok, and a real
kubelet with containerd), migrates the database with per-component roles, installs the CRDs,
runs `plait operator`, applies the examples, runs the example workflow on the real node (each
task a Job whose busybox container computes its outputs), and prints its DAG, what each
container wrote to its termination message and its log, and the run's outputs. Then
it starts `plait api` and sends CloudEvents with `plait events send`: one starts the example
workflow through the example EventTrigger, a redelivery of it is stored once, and malformed
input is refused.
Everything stops on exit (Ctrl-C too).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

from plait.kernel.components import COMPONENTS, component_by_name
from plait.testing import PostgresServer
from plait.testing._process import free_port, stop_process, wait_until
from plait.testing.cluster import LocalCluster
from plait.testing.node import NODE_KIND_LABEL, REAL_NODE_TAINT

#: Where the example workflow's tasks run: the local cluster's real node (docs/workflows.md).
REAL_NODE_PLACEMENT = {
    "nodeSelector": {NODE_KIND_LABEL: "real"},
    "tolerations": [{"operator": "Equal", **REAL_NODE_TAINT}],
}

ROOT = Path(__file__).resolve().parents[1]
EVENTS = component_by_name("event_processing")
BOLD, RESET = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def step(title: str) -> None:
    print(f"\n{BOLD}==> {title}{RESET}", flush=True)


def show(cluster: LocalCluster, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}")
    out = cluster.kubectl(*args).stdout
    print(out, end="")
    return out


def show_containers(cluster: LocalCluster, run: str) -> None:
    """Each pod of the run, oldest first: its node, exit code, termination message (the
    task's outputs) and log, read from the pods API while the Jobs keep their pods."""
    pods = json.loads(
        cluster.kubectl("get", "pods", "-l", f"plait.dev/instance={run}", "-o", "json").stdout
    )["items"]
    for pod in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"]):
        name = pod["metadata"]["name"]
        task = pod["metadata"]["labels"].get("plait.dev/task", "?")
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        ended = statuses[0].get("state", {}).get("terminated", {})
        print(
            f"{BOLD}{task}{RESET} (pod {name} on {pod['spec'].get('nodeName')}): "
            f"exit {ended.get('exitCode')}, termination message {ended.get('message', '')!r}"
        )
        print(f"$ kubectl logs {name}")
        for line in cluster.kubectl("logs", name).stdout.splitlines():
            print(f"  {line}")


def main() -> int:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        step("starting a private PostgreSQL")
        pg = stack.enter_context(PostgresServer())
        with psycopg.connect(pg.dsn()) as conn:
            row = conn.execute("SELECT version()").fetchone()
        print(row[0] if row else "?")

        step(
            "starting the local Kubernetes control plane (etcd, apiserver, controllers, a kwok"
            " node, a real node: kubelet, containerd, runc)"
        )
        cluster = stack.enter_context(LocalCluster(real_node=True))
        show(cluster, "get", "nodes", "-o", "wide")

        step("plait migrate --create-roles (8 schemas, one role per component)")
        dsn = pg.create_database("plait")
        passwords = {c.name: secrets.token_urlsafe(12) for c in COMPONENTS}
        env = {
            **os.environ,
            "PLAIT_DATABASE_URL": dsn,
            **{f"PLAIT_DATABASE_PASSWORD_{c.env_suffix}": passwords[c.name] for c in COMPONENTS},
        }
        subprocess.run(
            [sys.executable, "-m", "plait", "migrate", "--create-roles"], env=env, check=True
        )

        step("installing the CRDs")
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        show(cluster, "get", "crds")

        # Every Plait process below connects as the components' own roles, never as the
        # superuser: each component reaches its own schema only.
        role_dsns = {
            f"PLAIT_DATABASE_URL_{c.env_suffix}": pg.dsn(
                "plait", user=c.role, password=passwords[c.name]
            )
            for c in COMPONENTS
        }
        as_roles = {k: v for k, v in os.environ.items() if k != "PLAIT_DATABASE_URL"}
        as_roles.update(role_dsns)

        step("each component's role is confined to its own schema")
        events_dsn = role_dsns[f"PLAIT_DATABASE_URL_{EVENTS.env_suffix}"]
        with psycopg.connect(events_dsn, autocommit=True) as conn:
            print(f"$ psql (as {EVENTS.role}) -c 'SELECT count(*) FROM auth_service.users'")
            try:
                conn.execute("SELECT count(*) FROM auth_service.users")
                raise SystemExit("the event_processing role could read the auth schema")
            except psycopg.errors.InsufficientPrivilege as exc:
                print(f"ERROR:  {exc}")

        step("starting plait operator (each component connects as its own database role)")
        health = free_port()
        op_env = {**as_roles, "KUBECONFIG": str(cluster.kubeconfig)}
        log = (cluster.state_dir / "operator.log").open("wb")
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plait",
                "operator",
                "--namespace",
                "default",
                "--health-port",
                str(health),
            ],
            env=op_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(stop_process, operator)

        # Admission is its own stateless process (no database), registered for this
        # cluster by --manage and unregistered when it stops.
        hook_health = free_port()
        hook_log = (cluster.state_dir / "webhook.log").open("wb")
        webhook = subprocess.Popen(
            [sys.executable, "-m", "plait", "webhook", "--port", str(free_port()),
             "--health-port", str(hook_health), "--manage", "--host", "127.0.0.1",
             "--namespace", "default"],
            env={**{k: v for k, v in os.environ.items() if not k.startswith("PLAIT_DATABASE")},
                 "KUBECONFIG": str(cluster.kubeconfig)},
            stdout=hook_log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(stop_process, webhook)

        def healthy() -> bool:
            if operator.poll() is not None:
                log.flush()
                tail = (cluster.state_dir / "operator.log").read_text()[-3000:]
                raise SystemExit(f"the operator exited with {operator.returncode}:\n{tail}")
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as r:
                return bool(r.status == 200)

        wait_until(healthy, timeout=60, what="the operator")

        def webhook_healthy() -> bool:
            if webhook.poll() is not None:
                tail = (cluster.state_dir / "webhook.log").read_text()[-3000:]
                raise SystemExit(f"plait webhook exited with {webhook.returncode}:\n{tail}")
            with urllib.request.urlopen(f"http://127.0.0.1:{hook_health}/healthz", timeout=2) as r:
                return bool(r.status == 200)

        wait_until(webhook_healthy, timeout=60, what="plait webhook")
        print(f"operator healthy on :{health} (logs: {cluster.state_dir / 'operator.log'})")

        step("kubectl apply -f examples/ (the run last, once its workflow runs on the real node)")
        print("$ kubectl create secret generic notifier-credentials --from-literal=token=...")
        cluster.kubectl(
            "create", "secret", "generic", "notifier-credentials",
            f"--from-literal=token={secrets.token_urlsafe(16)}",
        )  # fmt: skip
        for path in sorted((ROOT / "examples").glob("*.yaml")):
            if path.name != "workflowinstance.yaml":
                print(cluster.kubectl("apply", "-f", str(path)).stdout, end="")
        placement = json.dumps({"spec": REAL_NODE_PLACEMENT})
        print(f"$ kubectl patch workflowdefinition diamond --type merge -p '{placement}'")
        cluster.kubectl(
            "patch", "workflowdefinition", "diamond", "--type", "merge", "-p", placement
        )

        def all_reconciled() -> bool:
            # WorkflowTests are run by `plait test run`; the operator does not reconcile them.
            items = json.loads(cluster.kubectl("get", "plait", "-o", "json").stdout)["items"]
            return all(
                o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
                for o in items
                if o["kind"] != "WorkflowTest"
            )

        wait_until(all_reconciled, timeout=60, what="every example to be reconciled")
        print(cluster.kubectl("apply", "-f", str(ROOT / "examples/workflowinstance.yaml")).stdout)
        wait_until(all_reconciled, timeout=60, what="every example to be reconciled")
        show(cluster, "get", "plait")

        step("the example run: kubectl get workflowinstances")

        def finished() -> bool:
            phase = cluster.kubectl(
                "get", "wfi", "diamond-run-1", "-o", "jsonpath={.status.phase}"
            ).stdout
            return phase in ("Succeeded", "Failed", "Cancelled", "Error")

        wait_until(finished, timeout=180, what="the example run to finish")
        show(cluster, "get", "workflowinstances")
        print("$ kubectl get jobs")
        print(cluster.kubectl("get", "jobs").stdout, end="")

        step("what the containers computed and logged (read from their pods on the real node)")
        show_containers(cluster, "diamond-run-1")

        step("plait instances show diamond-run-1 (the DAG, from PostgreSQL)")
        shown = subprocess.run(
            [sys.executable, "-m", "plait", "instances", "show", "diamond-run-1", "-n", "default"],
            env={**as_roles, "KUBECONFIG": str(cluster.kubeconfig)},
            capture_output=True,
            text=True,
            check=True,
        )
        print(shown.stdout, end="")

        step("plait api: CloudEvents in, committed before they are acknowledged")
        api_port = free_port()
        token = secrets.token_urlsafe(24)
        # The API's two components only, each as its own role: events and its telemetry.
        api_env = {k: v for k, v in as_roles.items() if not k.startswith("PLAIT_DATABASE_URL_")}
        # Plus accounts and the dashboard's components (runs, attempts, ui components).
        dashboard = ("auth", "workflow_orchestrator", "task_execution", "web_application",
                     "integration")  # fmt: skip
        for c in (EVENTS, component_by_name("observability"), *map(component_by_name, dashboard)):
            api_env[f"PLAIT_DATABASE_URL_{c.env_suffix}"] = role_dsns[
                f"PLAIT_DATABASE_URL_{c.env_suffix}"
            ]
        api_env["PLAIT_API_TOKEN"] = token
        api_env["PLAIT_AUTH_TOKEN_KEY"] = secrets.token_hex(32)
        api_env["PLAIT_AUTH_COOKIE_SECURE"] = "false"  # plain HTTP on 127.0.0.1
        api_env["PLAIT_DASHBOARD_KUBECONFIG"] = str(cluster.kubeconfig)
        api_log = (cluster.state_dir / "api.log").open("wb")
        api = subprocess.Popen(
            [sys.executable, "-m", "plait", "api", "--host", "127.0.0.1", "--port", str(api_port)],
            env=api_env,
            stdout=api_log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(stop_process, api)

        def api_ready() -> bool:
            if api.poll() is not None:
                tail = (cluster.state_dir / "api.log").read_text()[-3000:]
                raise SystemExit(f"plait api exited with {api.returncode}:\n{tail}")
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/readyz", timeout=2) as r:
                return bool(r.status == 200)

        wait_until(api_ready, timeout=60, what="plait api")
        print(f"plait api ready on :{api_port} (bearer token required)")
        demo_password = secrets.token_urlsafe(12)
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/v1/auth/users",
            data=json.dumps(
                {"username": "demo", "password": demo_password, "roles": ["editor"]}
            ).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()
        dashboard_url = f"http://127.0.0.1:{api_port}/ui/"
        print(f"dashboard: {dashboard_url}  (sign in as demo / {demo_password})")
        send_env = {**os.environ, "PLAIT_API_URL": f"http://127.0.0.1:{api_port}"}

        def send(*args: str, token_value: str = token) -> None:
            shown = " ".join(a if " " not in a else repr(a) for a in args)
            print(f"$ plait events send {shown}")
            done = subprocess.run(
                [sys.executable, "-m", "plait", "events", "send", "--token", token_value, *args],
                env=send_env,
                capture_output=True,
                text=True,
                check=False,
            )
            print((done.stdout + done.stderr).strip())

        order = ["--type", "dev.plait.example.order.created", "--source", "/shop/orders"]
        send(*order, "--id", "order-1001", "--subject", "order-1001",
             "--data", '{"orderId": "1001", "amount": 250}')  # fmt: skip
        send(*order, "--id", "order-1001", "--subject", "order-1001",
             "--data", '{"orderId": "1001", "amount": 250}')  # fmt: skip
        send(*order, "--id", "order-1002", "--data", '{"orderId": "1002", "amount": 12}')
        print("# refused, and nothing stored: data that breaks the EventDefinition's schema")
        send(*order, "--id", "order-1003", "--data", '{"orderId": 1003}')
        print("# refused: a wrong token")
        send(*order, "--id", "order-1004", "--data", "{}", token_value="wrong")

        step("EventTrigger on-large-order started one run for order 1001 (amount > 100)")

        def triggered() -> bool:
            out = cluster.kubectl(
                "get", "wfi", "-l", "plait.dev/trigger=on-large-order", "-o", "json"
            ).stdout
            items = json.loads(out)["items"]
            return len(items) == 1 and items[0].get("status", {}).get("phase") in (
                "Succeeded",
                "Failed",
            )

        wait_until(triggered, timeout=120, what="the run started by the event")
        columns = (
            "custom-columns=NAME:.metadata.name,PHASE:.status.phase,MESSAGE:.spec.arguments.message"
        )
        show(cluster, "get", "wfi", "-l", "plait.dev/trigger=on-large-order", "-o", columns)
        show(cluster, "get", "eventtriggers")

        step("plait traces show: the event's trace, from ingestion to the run's tasks")
        run = json.loads(
            cluster.kubectl(
                "get", "wfi", "-l", "plait.dev/trigger=on-large-order", "-o", "json"
            ).stdout
        )["items"][0]["metadata"]["name"]
        traces: list[str] = []

        def traced() -> bool:
            shown = subprocess.run(
                [sys.executable, "-m", "plait", "traces", "show", run, "-n", "default"],
                env=as_roles,
                capture_output=True,
                text=True,
                check=False,
            )
            traces[:] = [shown.stdout]
            # Complete once the run's root span is in (it is recorded when the run ends).
            out = shown.stdout
            return "plait.event.dispatch" in out and "not recorded yet" not in out

        wait_until(traced, timeout=30, what="the run's spans")
        print(f"$ plait traces show {run} -n default")
        print(traces[0], end="")

        step("a cyclic workflow is refused by the admission webhook")
        cyclic = {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowDefinition",
            "metadata": {"name": "loop"},
            "spec": {
                "tasks": [
                    {"name": "a", "dependencies": ["b"], "template": {"image": "busybox"}},
                    {"name": "b", "dependencies": ["a"], "template": {"image": "busybox"}},
                ]
            },
        }
        refused = subprocess.run(
            [
                str(cluster.bin_dir / "kubectl"),
                f"--kubeconfig={cluster.kubeconfig}",
                "apply",
                "-f",
                "-",
            ],
            input=json.dumps(cyclic),
            capture_output=True,
            text=True,
            check=False,
        )
        print(refused.stderr.strip())

        step("the same resources, as rows in PostgreSQL (read as the superuser)")
        with psycopg.connect(dsn) as conn:
            for query in (
                "SELECT namespace, name, version, left(spec_hash, 12) AS spec_hash "
                "FROM workflow_orchestrator_service.workflow_definitions",
                "SELECT name, workflow_name, workflow_version, phase "
                "FROM workflow_orchestrator_service.workflow_instances",
                "SELECT name, version FROM task_execution_service.task_definitions",
                "SELECT name, integration_type, secret_name "
                "FROM integration_service.integration_instances",
                "SELECT e.event_id, e.type, e.partition_key, e.sequence_position, q.state "
                "FROM event_processing_service.event_instances e JOIN "
                "event_processing_service.event_queue_state q ON q.event_instance_id = e.id",
            ):
                cur = conn.execute(query)
                print(f"-- {query}")
                names = [d.name for d in cur.description or ()]
                print("   " + " | ".join(names))
                for record in cur.fetchall():
                    print("   " + " | ".join(str(v) for v in record))

        print(f"\ndashboard: {dashboard_url}  (sign in as demo / {demo_password})")
        if sys.stdin.isatty():
            input("the dashboard stays up until you press Enter ")
        step(f"done in {time.monotonic() - started:.1f}s; stopping everything")
        cluster.kubectl(
            "delete", "validatingwebhookconfiguration", "plait.dev", "--ignore-not-found"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
