"""Phases of a workflow instance and statuses of an event subscription, with the moves
allowed between them.

Declared once here; the CHECK constraints and the transition triggers in
sql/workflow_orchestrator_service list the same values and moves, and tests keep them
equal (see :mod:`plait.kernel.transitions`).
"""

from enum import StrEnum

from plait.kernel.transitions import StateMachine

__all__ = [
    "FINAL_PHASES",
    "PHASES",
    "RETRYABLE_PHASES",
    "SUBSCRIPTIONS",
    "SubscriptionStatus",
    "WorkflowPhase",
]


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

#: Phases a retry (spec.retry) can reopen.
RETRYABLE_PHASES = frozenset({WorkflowPhase.FAILED, WorkflowPhase.ERROR})


class SubscriptionStatus(StrEnum):
    """State of a "wait for event" subscription (``workflow_event_subscriptions.status``)."""

    WAITING = "Waiting"
    MATCHED = "Matched"
    CANCELLED = "Cancelled"
    EXPIRED = "Expired"


#: How a run moves. It starts Pending; its first launch makes it Running (a run whose
#: every task was skipped ends without running anything); suspend and resume go between
#: Running and Suspended, and a suspended run still ends when its running tasks do or its
#: timeout passes. Succeeded and Cancelled are for good; a retry (spec.retry) reopens a
#: Failed or Error run.
PHASES = StateMachine(
    WorkflowPhase,
    initial={WorkflowPhase.PENDING},
    transitions={
        WorkflowPhase.PENDING: {
            WorkflowPhase.RUNNING,
            WorkflowPhase.SUCCEEDED,
            WorkflowPhase.FAILED,
            WorkflowPhase.CANCELLED,
            WorkflowPhase.ERROR,
        },
        WorkflowPhase.RUNNING: {
            WorkflowPhase.SUSPENDED,
            WorkflowPhase.SUCCEEDED,
            WorkflowPhase.FAILED,
            WorkflowPhase.CANCELLED,
            WorkflowPhase.ERROR,
        },
        WorkflowPhase.SUSPENDED: {
            WorkflowPhase.RUNNING,
            WorkflowPhase.SUCCEEDED,
            WorkflowPhase.FAILED,
            WorkflowPhase.CANCELLED,
            WorkflowPhase.ERROR,
        },
        WorkflowPhase.SUCCEEDED: set(),
        WorkflowPhase.FAILED: {WorkflowPhase.RUNNING},
        WorkflowPhase.CANCELLED: set(),
        WorkflowPhase.ERROR: {WorkflowPhase.RUNNING},
    },
)

#: A subscription waits, then is matched by one event, expires or is cancelled, for good.
SUBSCRIPTIONS = StateMachine(
    SubscriptionStatus,
    initial={SubscriptionStatus.WAITING},
    transitions={
        SubscriptionStatus.WAITING: {
            SubscriptionStatus.MATCHED,
            SubscriptionStatus.CANCELLED,
            SubscriptionStatus.EXPIRED,
        },
        SubscriptionStatus.MATCHED: set(),
        SubscriptionStatus.CANCELLED: set(),
        SubscriptionStatus.EXPIRED: set(),
    },
)
