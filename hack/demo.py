"""`make demo`: Plait end to end on the embedded local setup.

Starts a private PostgreSQL and the local control plane (kwok node), shows that both are
live, and stops everything on exit (Ctrl-C included).
"""

from __future__ import annotations

import contextlib
import sys
import time

import psycopg

from plait.testing import PostgresServer
from plait.testing.cluster import LocalCluster


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def main() -> int:
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        step("starting a private PostgreSQL")
        pg = stack.enter_context(PostgresServer())
        step("starting the local Kubernetes control plane (etcd, apiserver, controllers, kwok)")
        cluster = stack.enter_context(LocalCluster())

        step("kubectl get nodes")
        print(cluster.kubectl("get", "nodes", "-o", "wide").stdout, end="")
        step("kubectl version")
        print(cluster.kubectl("version").stdout, end="")
        step("PostgreSQL")
        with psycopg.connect(pg.dsn()) as conn:
            row = conn.execute("SELECT version()").fetchone()
            print(row[0] if row else "?")
        step(f"all live after {time.monotonic() - started:.1f}s; stopping everything")
    return 0


if __name__ == "__main__":
    sys.exit(main())
