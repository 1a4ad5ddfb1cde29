"""How soon a run may be advanced again, from what its last advance cost.

Planning a run takes time that grows with its tasks (a 10,000-item fan-out: milliseconds),
and every Job event asks for an advance. Advanced once per event, a big run costs time
that grows with the square of its size. So after an advance whose planning (with the
other synchronous work on the run's records that grows with it) took ``p`` seconds, the
run's next advance for its Job events (and other kicks) waits until ``factor * p`` has
passed (never more than ``ceiling``): the events recorded meanwhile make
one advance, and while ``factor * p`` is under the ceiling, planning one run takes at most
``1 / (1 + factor)`` of the process's time. Advances asked for directly (a change of the
run's object, a takeover) are not held back. A small run plans in well under a
millisecond, so it is not held back noticeably; what a run's events record is in
PostgreSQL at once, whatever the wait.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["ADVANCE_PACE_CEILING_SECONDS", "ADVANCE_PACE_FACTOR", "Pacing"]

#: The next advance of a run waits this many times its last advance's planning time, so
#: that planning a big run takes at most a tenth of the process's time (at 3 it could
#: take a quarter).
ADVANCE_PACE_FACTOR = 9.0
#: ... but never longer than this (a status write coalesces changes for as long).
ADVANCE_PACE_CEILING_SECONDS = 1.0


class Pacing:
    """Per run: the planning time of the advance under way, and when the next may start."""

    def __init__(
        self,
        factor: float = ADVANCE_PACE_FACTOR,
        ceiling: float = ADVANCE_PACE_CEILING_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._factor = factor
        self._ceiling = ceiling
        self._clock = clock
        self._spent: dict[uuid.UUID, float] = {}
        self._next: dict[uuid.UUID, float] = {}

    @contextmanager
    def planning(self, uid: uuid.UUID) -> Iterator[None]:
        """Count the time of this block (synchronous work on the run's records) against
        the advance under way."""
        began = self._clock()
        try:
            yield
        finally:
            self._spent[uid] = self._spent.get(uid, 0.0) + self._clock() - began

    def advanced(self, uid: uuid.UUID) -> None:
        """The run's advance is over: its next one waits for what this one's planning cost."""
        spent = self._spent.pop(uid, 0.0)
        wait = min(self._ceiling, self._factor * spent)
        if wait > 0:
            self._next[uid] = self._clock() + wait
        else:
            self._next.pop(uid, None)

    def delay(self, uid: uuid.UUID) -> float:
        """Seconds until the run may be advanced again (0: now)."""
        due = self._next.get(uid)
        if due is None:
            return 0.0
        left = due - self._clock()
        if left <= 0:
            del self._next[uid]
            return 0.0
        return left

    def forget(self, uid: uuid.UUID) -> None:
        """The run has ended: nothing is kept of it."""
        self._spent.pop(uid, None)
        self._next.pop(uid, None)
