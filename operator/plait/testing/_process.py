"""Small process helpers shared by the local servers: free ports, waiting, stopping."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from plait.errors import ClusterError

__all__ = ["GaveUp", "free_port", "run_as_user", "stop_process", "wait_until"]


class GaveUp(Exception):
    """Raised by a ``wait_until`` check when waiting longer cannot help (a process exited)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``check`` until it is true; raise TimeoutError naming ``what`` past the deadline.

    Any other exception of ``check`` counts as "not yet", except ``GaveUp``, which ends the
    wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except GaveUp:
            raise
        except Exception:  # not ready yet; the deadline bounds the wait
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def run_as_user(username: str, *paths: Path) -> Callable[[], None] | None:
    """A ``preexec_fn`` dropping root to ``username`` (and chowning ``paths`` to it).

    PostgreSQL refuses to run as root; CI runs as root. Returns None when not root.
    """
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(username)
    for path in paths:
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in dirs + files:
                os.chown(
                    os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False
                )

    def demote() -> None:
        os.setgid(entry.pw_gid)
        os.setgroups([])
        os.setuid(entry.pw_uid)

    return demote


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; reaps the process either way."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_cache_script(script: Path, *, progress: bool, failure: str) -> Path:
    """Run a ``hack/`` script that fills a cache and prints the folder as its last line.

    Its progress goes to stderr (shown when ``progress``); a failure raises ``failure``
    with the exit code and, when hidden, what the script said.
    """
    proc = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=None if progress else subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip()
        raise ClusterError(
            f"{failure} (exit {proc.returncode})" + (f": {detail}" if detail else "")
        )
    return Path(proc.stdout.strip().splitlines()[-1])
