"""States of a task attempt, with the moves allowed between them.

Declared once here; the CHECK constraint and the transition trigger in
sql/task_execution_service list the same values and moves, and tests keep them equal (see
:mod:`plait.kernel.transitions`).
"""

from enum import StrEnum

from plait.kernel.transitions import StateMachine

__all__ = ["FINAL_STATES", "STATES", "FailureCause", "TaskState"]


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


class FailureCause(StrEnum):
    """Why a Failed or TimedOut attempt did not succeed (``task_instances.failure_cause``);
    a retry policy's ``retryOn`` chooses which causes it retries."""

    FAILURE = "Failure"
    """The task itself: its process exited non-zero, or ran past its timeout."""
    ERROR = "Error"
    """Around the task: its Pod was refused or evicted, its container could not start or
    reported no exit, or its Job could not be built (an Integration missing or unfit)."""
    INVALID = "Invalid"
    """Its inputs or ``when`` could not be evaluated: a data problem, never retried."""


FINAL_STATES = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.SKIPPED,
        TaskState.CANCELLED,
        TaskState.TIMED_OUT,
    }
)


_ENDS = {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.TIMED_OUT, TaskState.CANCELLED}

#: How an attempt moves. It is recorded Pending before its Job is created (or Skipped
#: outright when its run ended before it could start); its Job's pod running makes it
#: Running, a wait for an event Waiting. A Job may finish before it was seen running, and
#: an attempt that never started may be skipped or fail (an expression that cannot be
#: evaluated). Final states are for good: a retry is a new attempt.
STATES = StateMachine(
    TaskState,
    initial={TaskState.PENDING, TaskState.SKIPPED},
    transitions={
        TaskState.PENDING: {TaskState.RUNNING, TaskState.WAITING, TaskState.SKIPPED, *_ENDS},
        TaskState.RUNNING: _ENDS,
        TaskState.WAITING: _ENDS,
        **{s: set() for s in FINAL_STATES},
    },
)
