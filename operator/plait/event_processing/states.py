"""States of the dispatch queue and the dead-letter queue, with the moves allowed
between them.

Declared once here; the CHECK constraints and the transition triggers in
sql/event_processing_service list the same values and moves, and tests keep them equal
(see :mod:`plait.kernel.transitions`).
"""

from enum import StrEnum

from plait.kernel.transitions import StateMachine

__all__ = ["DEAD_LETTERS", "QUEUE", "DeadLetterStatus", "QueueState"]


class QueueState(StrEnum):
    """Dispatch state of a stored event (``event_queue_state.state``)."""

    PENDING = "Pending"
    LEASED = "Leased"
    DONE = "Done"
    DEAD_LETTERED = "DeadLettered"


class DeadLetterStatus(StrEnum):
    """What became of a dead letter (``dead_letter_queue.status``)."""

    OPEN = "Open"
    REPLAYED = "Replayed"
    DISCARDED = "Discarded"


#: A stored event waits (Pending), is leased by a dispatcher (an expired lease is leased
#: again), then is Done, back to Pending for a retry, or dead-lettered; a replayed dead
#: letter is Pending again.
QUEUE = StateMachine(
    QueueState,
    initial={QueueState.PENDING},
    transitions={
        QueueState.PENDING: {QueueState.LEASED},
        QueueState.LEASED: {QueueState.DONE, QueueState.PENDING, QueueState.DEAD_LETTERED},
        QueueState.DONE: set(),
        QueueState.DEAD_LETTERED: {QueueState.PENDING},
    },
)

#: A dead letter is replayed or discarded, once.
DEAD_LETTERS = StateMachine(
    DeadLetterStatus,
    initial={DeadLetterStatus.OPEN},
    transitions={
        DeadLetterStatus.OPEN: {DeadLetterStatus.REPLAYED, DeadLetterStatus.DISCARDED},
        DeadLetterStatus.REPLAYED: set(),
        DeadLetterStatus.DISCARDED: set(),
    },
)
