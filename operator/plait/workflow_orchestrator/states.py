"""Phases of a workflow instance and statuses of an event subscription.

Declared once here; the CHECK constraints in sql/workflow_orchestrator_service list the same
values and a test keeps the two equal.
"""

from enum import StrEnum

__all__ = ["FINAL_PHASES", "SubscriptionStatus", "WorkflowPhase"]


class WorkflowPhase(StrEnum):
    """Lifecycle of one workflow run (``workflow_instances.phase``)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    ERROR = "Error"  # Plait itself could not run it (e.g. an invalid definition)

    @property
    def final(self) -> bool:
        return self in FINAL_PHASES


FINAL_PHASES = frozenset(
    {WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED, WorkflowPhase.CANCELLED, WorkflowPhase.ERROR}
)


class SubscriptionStatus(StrEnum):
    """State of a "wait for event" subscription (``workflow_event_subscriptions.status``)."""

    WAITING = "Waiting"
    MATCHED = "Matched"
    CANCELLED = "Cancelled"
    EXPIRED = "Expired"
