"""What an operator process is told at start: scope, endpoints, resync."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FINALIZER", "OperatorOptions"]

#: The finalizer on every Plait object whose deletion must first update PostgreSQL.
FINALIZER = "plait.dev/finalizer"


@dataclass(frozen=True)
class OperatorOptions:
    """Options of ``plait operator`` (each is also a ``PLAIT_*`` environment variable)."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty with ``all_namespaces`` false means the current one."""

    all_namespaces: bool = False
    """Watch every namespace (cluster-wide RBAC needed)."""

    health_address: str = "0.0.0.0"
    """Address of the HTTP server for ``/healthz`` and ``/metrics``."""

    health_port: int = 8080
    """Port of that server; 0 disables it."""

    resync_seconds: float = 300.0
    """How often every object is reconciled again, repairing drift in the database (and
    every unfinished run this replica owns advanced)."""

    migrate: bool = False
    """Apply pending database migrations before starting."""

    job_ttl_seconds: int = 600
    """Finished Jobs are deleted by Kubernetes this long after they end (their results are
    in PostgreSQL by then); the operator must not be down longer than this."""

    api_threads: int = 32
    """Threads (and HTTP connections) for Plait's own Kubernetes calls."""

    dispatch: bool = True
    """Dispatch stored events to waiting workflows and EventTriggers, and start scheduled
    triggers' runs (every replica may; the queue and row locks keep it exactly-once)."""

    event_batch_size: int = 32
    """Events leased per round trip by the dispatcher."""

    event_visibility_timeout_seconds: float = 60.0
    """Lease length: an event whose dispatcher died is taken over after this."""

    event_poll_seconds: float = 2.0
    """Dispatcher poll interval besides LISTEN/NOTIFY wake-ups."""

    event_retention_days: float = 30.0
    """Dispatched events older than this are deleted (hourly, in small batches); 0 keeps
    them forever. Dead letters keep their own copy of the event."""

    schedule_poll_seconds: float = 1.0
    """How often cron triggers are checked for due ticks (their start lateness bound)."""

    share_runs: bool = True
    """Share the runs with the other replicas of the same scope (membership in PostgreSQL,
    each run advanced by its owner); off: this replica advances every run it sees (safe,
    but every replica then does all the work)."""

    peering: str | None = None
    """Kopf peering name: the replicas of one name are active/standby (one works). None
    (the default): replicas share the runs, each advancing those it owns among the live
    members (plait.workflow_orchestrator.members). Correctness never depends on either
    (deterministic names and database uniqueness do)."""
