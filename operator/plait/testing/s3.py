"""A real S3-compatible server (versitygw, folder backend) for artifacts in tests and demos.

``hack/build-artifacts.sh`` builds versitygw (and ``plait-artifacts``) into the cache; a
:class:`S3Server` runs it on a free port with a fresh folder, where every subfolder is a
bucket:

    with S3Server(host="127.0.0.1") as s3:
        s3.create_bucket("artifacts")
        s3.endpoint  # http://127.0.0.1:<port>

Pods on the local cluster's real node live on its bridge, which has no address of its own:
:func:`bridge_address` gives the bridge the first address of the pod subnet (taken back with
the bridge when the node is torn down), so a server bound there is reachable from the pods
and from this host alike.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from plait.testing._process import run_cache_script, stop_process, wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Server", "artifacts_bin_dir", "bridge_address"]

REPO_ROOT = Path(__file__).resolve().parents[3]
REGION = "us-east-1"


def artifacts_bin_dir(*, progress: bool = False) -> Path:
    """The folder of ``plait-artifacts`` and ``versitygw`` (built by
    ``hack/build-artifacts.sh`` on first use, then cached)."""
    return run_cache_script(
        REPO_ROOT / "hack" / "build-artifacts.sh",
        progress=progress,
        failure="building plait-artifacts and versitygw failed",
    )


def bridge_address(bridge: str, subnet: str) -> str:
    """Give ``bridge`` (created when missing, as the CNI bridge plugin would) the first
    address of ``subnet``, so the host and the pods on it reach each other; returns it."""
    network = ipaddress.ip_network(subnet)
    address = str(next(network.hosts()))
    if not Path(f"/sys/class/net/{bridge}").exists():
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True
    ).stdout
    if f" {address}/" not in shown:
        subprocess.run(
            ["ip", "addr", "add", f"{address}/{network.prefixlen}", "dev", bridge], check=True
        )
    return address


class S3Server:
    """versitygw over a temporary folder; :meth:`stop` removes the folder."""

    def __init__(self, *, host: str = "127.0.0.1", bin_dir: Path | None = None) -> None:
        self.binary = (bin_dir or artifacts_bin_dir()) / "versitygw"
        self.host = host
        self.access_key = "plait-test"
        self.secret_key = secrets.token_hex(16)
        self.region = REGION
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def root(self) -> Path:
        """The folder behind the server: ``<root>/<bucket>/<key>`` is an object."""
        assert self._dir is not None, "the server is not started"
        return self._dir / "data"

    def start(self) -> S3Server:
        self._dir = Path(tempfile.mkdtemp(prefix="plait-s3-"))
        self.root.mkdir()
        with socket.socket() as s:  # a free port on the address it will listen on
            s.bind((self.host, 0))
            self.port = int(s.getsockname()[1])
        log = (self._dir / "versitygw.log").open("wb")
        self._proc = subprocess.Popen(
            [
                str(self.binary),
                "--access",
                self.access_key,
                "--secret",
                self.secret_key,
                "--region",
                self.region,
                "--port",
                f"{self.host}:{self.port}",
                "posix",
                str(self.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

        def listening() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"versitygw exited:\n{self.log()[-2000:]}")
            with socket.create_connection((self.host, self.port), timeout=1):
                return True

        wait_until(listening, timeout=30, what=f"versitygw on {self.host}:{self.port}")
        return self

    def client(self) -> S3Client:
        """A boto3 client of the server as its root user (path-style addressing)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object of ``bucket`` and its size, read from the folder itself."""
        base = self.root / bucket
        return {
            p.relative_to(base).as_posix(): p.stat().st_size
            for p in sorted(base.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
        }

    def log(self) -> str:
        if self._dir is None:
            return ""
        path = self._dir / "versitygw.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=10)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
