"""Running a long-lived process until SIGTERM or SIGINT, as Kubernetes stops pods."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

__all__ = ["run_until_signalled"]


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` on a new event loop; SIGTERM and SIGINT set ``stop``, and ``main``
    is expected to wind down and return once it is set."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(run())
