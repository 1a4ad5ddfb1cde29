"""A 5,000-task workflow (root, 4,998 leaves, join) run through Plait on the local control plane.

Shows that a run of the largest size the schema allows completes and that its
WorkflowInstance stays small: the object's size is printed every 15 s until the run ends.
Run with `PLAIT_K8S_BIN_DIR=$(hack/build-k8s.sh) .venv/bin/python bench/big_run.py`.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from plait.kernel.components import COMPONENTS
from plait.kernel.migrations import migrate_database
from plait.testing import PostgresServer
from plait.testing._process import free_port, wait_until
from plait.testing.cluster import LocalCluster

t0 = time.monotonic()
with PostgresServer() as pg, LocalCluster(progress=False) as cluster:
    dsn = pg.create_database("plait")
    migrate_database(dsn, COMPONENTS, owner_role=None)
    cluster.kubectl(
        "apply", "--server-side", "-f", str(Path(__file__).resolve().parents[1] / "crds")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    port = free_port()
    op = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plait",
            "operator",
            "-n",
            "default",
            "--health-port",
            str(port),
        ],
        env={
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "PLAIT_DATABASE_URL": dsn,
            "PLAIT_LOG_LEVEL": "WARNING",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    wait_until(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").status == 200,
        timeout=60,
        what="operator",
    )
    tasks = [{"name": "root", "template": {"image": "b"}}]
    tasks += [
        {"name": f"t{i}", "dependencies": ["root"], "template": {"image": "b"}} for i in range(4998)
    ]
    tasks.append(
        {
            "name": "join",
            "dependencies": [f"t{i}" for i in range(0, 4998, 50)],
            "template": {"image": "b"},
        }
    )
    wfd = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "big"},
        "spec": {"tasks": tasks},
    }
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(wfd))
    wfi = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": "big-run"},
        "spec": {"workflowRef": {"name": "big"}},
    }
    start = time.monotonic()
    cluster.kubectl("create", "-f", "-", input=json.dumps(wfi))
    sizes = []

    def done() -> bool:
        obj = cluster.kubectl("get", "wfi", "big-run", "-o", "json").stdout
        sizes.append(len(obj))
        st = json.loads(obj).get("status", {})
        elapsed = time.monotonic() - start
        print(
            f"[{elapsed:6.1f}s] {st.get('phase')} {st.get('progress')} object {len(obj)} B",
            flush=True,
        )
        return st.get("phase") in ("Succeeded", "Failed") and st.get("progress") is not None

    wait_until(done, timeout=1500, what="the 5,000-task run", interval=15)
    status_lines = Path(f"/proc/{op.pid}/status").read_text().splitlines()
    rss = next(line for line in status_lines if line.startswith("VmHWM")).strip()
    print(
        f"RESULT 5000 tasks: {time.monotonic() - start:.1f}s, largest object {max(sizes)} B, "
        f"final {sizes[-1]} B, operator {rss}"
    )
    print(cluster.kubectl("get", "wfi").stdout)
    op.terminate()
    op.wait()
