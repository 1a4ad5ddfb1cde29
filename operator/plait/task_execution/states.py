"""States of a task attempt.

Declared once here; the CHECK constraint in sql/task_execution_service lists the same
values and a test keeps the two equal.
"""

from enum import StrEnum

__all__ = ["FINAL_STATES", "TaskState"]


class TaskState(StrEnum):
    """Lifecycle of one task attempt (``task_instances.state``)."""

    PENDING = "Pending"
    RUNNING = "Running"
    WAITING = "Waiting"  # a "wait for event" task, subscribed and not yet matched
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.SKIPPED,
        TaskState.CANCELLED,
        TaskState.TIMED_OUT,
    }
)
