"""Slowing down password guessing: after a few failures for one username or one client
address, the next attempt must wait, twice as long after each further failure.

The counts live in the memory of each API replica (a guesser spread over N replicas gets
at most N times the attempts); a success clears the username's count.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["LoginThrottle"]

_MAX_ENTRIES = 100_000


class LoginThrottle:
    def __init__(
        self,
        free_failures: int = 3,
        base_seconds: float = 1.0,
        max_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = free_failures
        self._base = base_seconds
        self._max = max_seconds
        self._clock = clock
        # key -> (consecutive failures, time of the last one)
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _delay(self, count: int) -> float:
        if count <= self._free:
            return 0.0
        return float(min(self._max, self._base * 2 ** (count - self._free - 1)))

    def _remaining(self, key: str, now: float) -> float:
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        count, last = entry
        if now - last > max(self._max, 900.0):
            del self._failures[key]
            return 0.0
        return max(0.0, last + self._delay(count) - now)

    def wait(self, username: str, address: str | None) -> float:
        """Seconds before the next attempt for this username from this address may run."""
        now = self._clock()
        waits = [self._remaining(f"user:{username}", now)]
        if address:
            waits.append(self._remaining(f"addr:{address}", now))
        return max(waits)

    def failed(self, username: str, address: str | None) -> None:
        now = self._clock()
        for key in (f"user:{username}", *([f"addr:{address}"] if address else [])):
            count, _ = self._failures.pop(key, (0, now))
            self._failures[key] = (count + 1, now)
        while len(self._failures) > _MAX_ENTRIES:
            self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"user:{username}", None)
