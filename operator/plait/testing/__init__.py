"""Real servers for development and tests: a private PostgreSQL and a local control plane.

Nothing here is a mock. :class:`PostgresServer` runs PostgreSQL's own binaries in a
temporary data directory; :class:`LocalCluster` runs etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok as plain processes on loopback, and on
demand a real node (kubelet, containerd, runc) beside kwok's.
"""

from plait.testing.postgres import PostgresServer

__all__ = ["PostgresServer"]
