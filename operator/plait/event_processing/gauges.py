"""The event queue's gauges for ``/metrics``, read from this component's own tables."""

from __future__ import annotations

from plait.event_processing import repository
from plait.event_processing.states import DeadLetterStatus
from plait.kernel.database import Database
from plait.observability.metrics import GaugeSample

__all__ = ["queue_gauges"]


async def queue_gauges(database: Database) -> list[GaugeSample]:
    """Queue depth by state, the age of the oldest due event, dead letters by status."""
    async with database.connection("event_processing") as conn:
        stats = await repository.queue_stats(conn)
        rows = await (
            await conn.execute(
                "SELECT status, count(*) FROM event_processing_service.dead_letter_queue "
                "GROUP BY status"
            )
        ).fetchall()
    letters = {status.value: 0 for status in DeadLetterStatus}
    letters.update(dict(rows))
    return [
        *(
            GaugeSample("plait_event_queue_depth", count, {"state": state})
            for state, count in stats["depth"].items()
        ),
        GaugeSample("plait_event_queue_lag_seconds", stats["lag_seconds"]),
        *(
            GaugeSample("plait_dead_letters", count, {"status": status})
            for status, count in letters.items()
        ),
    ]
