"""States of the dispatch queue and the dead-letter queue.

Declared once here; the CHECK constraints in sql/event_processing_service list the same
values and a test keeps the two equal.
"""

from enum import StrEnum

__all__ = ["DeadLetterStatus", "QueueState"]


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
