"""Run the whole suite as two pytest processes at once, each with its own control plane
and PostgreSQL (``make test``).

Most of the suite's time is spent waiting (for Jobs, operators, deadlines), and one
process keeps this machine's cores less than half busy; two lanes finish it in about two
thirds of the time (docs/development.md, "Lanes"). The ``nodes`` lane holds everything
that runs real containers or installs Plait (so only it starts a real node), and enough
else to balance the two; the ``core`` lane holds all the rest, so a new test file is
never left out.

Each output line is prefixed with its lane. With arguments (a file, ``-k``, ``-x``), with
``KUBECONFIG`` or ``PLAIT_TEST_KUBECONFIG`` set (one shared cluster: the admission
webhook's configuration is cluster-wide), or with ``PLAIT_TEST_LANES=1``, this is plain
``pytest`` with the same arguments.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

#: The ``nodes`` lane; ``core`` is ``tests`` without these.
NODES = (
    "tests/install",
    "tests/smoke",
    "tests/testing",
    "tests/testing_framework",
    "tests/web_application",
    "tests/integration",
    "tests/observability",
    "tests/event_processing",
    "tests/task_execution/test_artifacts_realnode.py",
    "tests/task_execution/test_jobs_realnode.py",
    "tests/task_execution/test_real_tasks.py",
    "tests/task_execution/test_task_logs_realnode.py",
)


def lanes() -> dict[str, list[str]]:
    return {
        "nodes": list(NODES),
        "core": ["tests", *(f"--ignore={path}" for path in NODES)],
    }


def _single(args: list[str]) -> bool:
    return bool(
        args
        or os.environ.get("KUBECONFIG")
        or os.environ.get("PLAIT_TEST_KUBECONFIG")
        or os.environ.get("PLAIT_TEST_LANES") == "1"
    )


def _relay(name: str, stream: IO[str], lock: threading.Lock) -> None:
    """Copy a lane's output line by line, each line prefixed with the lane's name."""
    for line in stream:
        with lock:
            sys.stdout.write(f"[{name:<5}] {line}")
            sys.stdout.flush()


def main(args: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if _single(args):
        os.execv(sys.executable, [*pytest, *args])
    started = time.monotonic()
    lock = threading.Lock()
    running: dict[str, subprocess.Popen[str]] = {}
    relays = []
    for name, selection in lanes().items():
        process = subprocess.Popen(
            [*pytest, *selection, "-o", f"cache_dir=.pytest_cache/lane-{name}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        running[name] = process
        assert process.stdout is not None
        relay = threading.Thread(target=_relay, args=(name, process.stdout, lock), daemon=True)
        relay.start()
        relays.append(relay)
    ended: dict[str, tuple[int, float]] = {}
    try:
        while len(ended) < len(running):
            for name, process in running.items():
                if name not in ended and process.poll() is not None:
                    ended[name] = (process.returncode, time.monotonic() - started)
            time.sleep(0.5)
    except KeyboardInterrupt:
        # Each lane tears its control plane and PostgreSQL down on SIGINT, as pytest does.
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in running.values():
            process.wait()
        return 130
    for relay in relays:
        relay.join()
    for name, (code, seconds) in ended.items():
        outcome = "passed" if code == 0 else f"FAILED (pytest exit code {code})"
        print(f"lane {name}: {outcome} in {seconds:.0f} s")
    return max(code for code, _ in ended.values())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
