"""How a cron schedule becomes ticks: one function, used by the scheduler and by validation.

Admission validates a schedule by computing its next tick exactly as the scheduler does
(:func:`cron_ticks`), so a schedule is accepted if and only if the scheduler can run it.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator

from cronsim import CronSim, CronSimError

__all__ = ["CRON_MACROS", "cron_ticks", "schedule_problem"]

#: The standard cron macros, as five fields (cronsim reads only fields).
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


_FIELDS = "fields: minute hour day-of-month month day-of-week, as cronsim reads them"


def cron_ticks(cron: str, after: dt.datetime) -> Iterator[dt.datetime]:
    """The ticks of ``cron`` after ``after``, in ``after``'s time zone.

    Raises :class:`cronsim.CronSimError` for an expression cronsim cannot read.
    """
    return iter(CronSim(CRON_MACROS.get(cron.strip().lower(), cron), after))


def schedule_problem(cron: str, time_zone: str, now: dt.datetime | None = None) -> str | None:
    """Why the scheduler could never run this schedule, or None."""
    try:
        zone = zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {time_zone!r}"
    start = (now or dt.datetime.now(dt.UTC)).astimezone(zone)
    try:
        next(cron_ticks(cron, start))
    except CronSimError as exc:
        return f"invalid cron expression: {exc} ({_FIELDS})"
    except StopIteration:
        return "invalid cron expression: it never fires"
    return None
