"""Event processing: CloudEvents ingestion, event definitions, sequences, queue, dead letters.

Owns the ``event_processing_service`` schema; :mod:`.repository` is its only SQL.
"""

from plait.event_processing.states import DeadLetterStatus, QueueState

__all__ = ["DeadLetterStatus", "QueueState"]
