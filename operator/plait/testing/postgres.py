"""A private PostgreSQL server in a temporary data directory, on a free loopback port.

Used by the test fixtures, ``make demo`` and the benchmarks, so nothing ever depends on
a server someone started by hand. The server is fast and disposable (``fsync=off``):
it is for development and tests, never for data that matters.

    with PostgresServer() as pg:
        print(pg.dsn())
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from plait.errors import DatabaseError
from plait.testing._process import free_port, run_as_user

__all__ = ["PostgresServer", "find_pg_bindir"]

_SEARCH = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


def find_pg_bindir() -> Path:
    """The folder with initdb and pg_ctl: ``PLAIT_PG_BINDIR``, PATH, or Debian's layout."""
    configured = os.environ.get("PLAIT_PG_BINDIR")
    if configured:
        return Path(configured)
    for candidate in _SEARCH:
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise DatabaseError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
        "'postgresql' package (make deps does) or set PLAIT_PG_BINDIR"
    )


class PostgresServer:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`; the data goes with it."""

    superuser = "postgres"

    def __init__(
        self,
        *,
        base_dir: Path | None = None,
        port: int | None = None,
        listen_addresses: Sequence[str] = ("127.0.0.1",),
        allow_networks: Sequence[str] = (),
    ) -> None:
        """``listen_addresses`` beyond loopback and ``allow_networks`` (CIDRs admitted with
        a password) let clients elsewhere in, such as pods on the real node."""
        self.bindir = find_pg_bindir()
        self.listen_addresses = tuple(listen_addresses)
        self.allow_networks = tuple(allow_networks)
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="plait-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "postgres.log"
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(16)
        self._running = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> PostgresServer:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        demote = run_as_user("postgres", self.base_dir) if os.geteuid() == 0 else None
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            preexec=demote,
        )
        pwfile.unlink()
        if self.allow_networks:
            with (self.data_dir / "pg_hba.conf").open("a") as hba:
                for network in self.allow_networks:
                    hba.write(f"host all all {network} scram-sha-256\n")
        self._start_server()
        return self

    def _start_server(self) -> None:
        demote = run_as_user("postgres", self.base_dir) if os.geteuid() == 0 else None
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                f"-c listen_addresses={','.join(self.listen_addresses)}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
                "-c shared_buffers=128MB",
            ]
        )
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            preexec=demote,
        )
        self._running = True

    def pause(self) -> None:
        """Stop the server but keep its data, like an outage; :meth:`resume` brings it back
        on the same port."""
        if self._running:
            self._running = False
            demote = run_as_user("postgres") if os.geteuid() == 0 else None
            self._run(
                "pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data_dir), preexec=demote
            )

    def resume(self) -> None:
        if not self._running:
            self._start_server()

    def stop(self) -> None:
        """Stop the server; one in a folder of its own is then deleted, so it is stopped
        at once (``immediate``: no shutdown checkpoint, which took minutes at the end of
        a suite that made hundreds of databases). A server in a given folder is stopped
        cleanly (``fast``), as it may be started again."""
        if self._running:
            self._running = False
            demote = run_as_user("postgres") if os.geteuid() == 0 else None
            self._run(
                "pg_ctl",
                "stop",
                "-m",
                "immediate" if self._owns_dir else "fast",
                "-w",
                "-D",
                str(self.data_dir),
                preexec=demote,
                check=False,
            )
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------
    def dsn(
        self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None
    ) -> str:
        """libpq URL for ``dbname`` (as the superuser unless ``user`` is given)."""
        if user is None:
            user, password = self.superuser, self.password
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its superuser DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still on it. A suite that makes hundreds
        drops each after its test: kept, their files (gigabytes) took the best part of a
        minute to delete at the end."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # -- internals -------------------------------------------------------------------------
    def _run(
        self, tool: str, *args: str, preexec: Callable[[], None] | None = None, check: bool = True
    ) -> None:
        proc = subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            preexec_fn=preexec,
            check=False,
            cwd="/",
        )
        if check and proc.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise DatabaseError(
                f"{tool} failed with exit code {proc.returncode}: "
                f"{proc.stderr.strip()}\n{log[-2000:]}"
            )


def main(argv: list[str] | None = None) -> None:
    """``python -m plait.testing.postgres``: run a server until interrupted, print its DSN.

    ``--listen ADDRESS --allow CIDR`` let clients elsewhere in, such as the real node's pods
    (``--listen 10.245.1.1 --allow 10.244.1.0/24``, see docs/development.md)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m plait.testing.postgres")
    parser.add_argument("--listen", action="append", default=[], help="address beside 127.0.0.1")
    parser.add_argument("--allow", action="append", default=[], help="CIDR admitted by password")
    args = parser.parse_args(argv)
    with PostgresServer(
        listen_addresses=("127.0.0.1", *args.listen), allow_networks=args.allow
    ) as pg:
        # Blocked (after the server started, so it does not inherit the mask), for sigwait
        # to receive them and the server to be stopped on the way out: unblocked, SIGTERM
        # would end this process at once and leave the server running.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        print(pg.dsn(), flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
