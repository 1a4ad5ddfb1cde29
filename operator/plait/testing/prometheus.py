"""A real Prometheus server (Debian's ``prometheus`` package) scraping given targets.

Tests and demos use it to prove that what Plait serves on ``/metrics`` is scraped and
queryable, not just well-formed text:

    with PrometheusServer(["127.0.0.1:8080"]) as prom:
        prom.wait_for("up", lambda r: r and r[0]["value"][1] == "1")

It scrapes every second, keeps its data in a temporary folder, and listens on a free
loopback port. :meth:`query` speaks the HTTP API (``/api/v1/query``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from plait.errors import ConfigurationError
from plait.testing._process import free_port, stop_process, wait_until

__all__ = ["PrometheusServer", "find_prometheus"]


def find_prometheus() -> Path:
    """The ``prometheus`` binary: ``PLAIT_PROMETHEUS_BIN`` or PATH."""
    configured = os.environ.get("PLAIT_PROMETHEUS_BIN")
    found = configured or shutil.which("prometheus")
    if not found or not Path(found).exists():
        raise ConfigurationError(
            "the prometheus binary was not found: install Debian's 'prometheus' package "
            "(hack/install-deps.sh does) or set PLAIT_PROMETHEUS_BIN"
        )
    return Path(found)


class PrometheusServer:
    """Start with :meth:`start` (or ``with``); everything it wrote goes with :meth:`stop`."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        metrics_path: str = "/metrics",
        job: str = "plait",
        scrape_interval: str = "1s",
    ) -> None:
        self.binary = find_prometheus()
        self.targets = list(targets)
        self.metrics_path = metrics_path
        self.job = job
        self.scrape_interval = scrape_interval
        self.port = free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix="plait-prometheus-"))
        self.log_file = self.base_dir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """The generated configuration (JSON is valid YAML)."""
        return json.dumps(
            {
                "global": {
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "evaluation_interval": self.scrape_interval,
                },
                "scrape_configs": [
                    {
                        "job_name": self.job,
                        "metrics_path": self.metrics_path,
                        "static_configs": [{"targets": self.targets}],
                    }
                ],
            },
            indent=2,
        )

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        config = self.base_dir / "prometheus.yml"
        config.write_text(self.config())
        with self.log_file.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.base_dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,
            )
        try:
            wait_until(self._ready, timeout=timeout, what=f"prometheus on port {self.port}")
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}; its log: {self._log_tail()}") from None
        return self

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with code {self._proc.returncode}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)

    def _log_tail(self) -> str:
        return self.log_file.read_text()[-2000:] if self.log_file.exists() else ""

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the HTTP API ------------------------------------------------------------------------
    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now: ``[{"metric": {...}, "value": [t, "v"]}]``."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query {expr!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (None when the vector is empty)."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise RuntimeError(f"{expr!r} has {len(result)} series; aggregate it")
        return float(result[0]["value"][1])

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[float | None], bool],
        *,
        timeout: float = 30.0,
    ) -> float | None:
        """Poll :meth:`value` of ``expr`` until ``predicate`` holds; its last value."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.value(expr)
            if predicate(current):
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{expr!r} was {current} after {timeout:.0f}s; targets: {self.targets_health()}"
                )
            time.sleep(0.2)

    def targets_health(self) -> list[dict[str, Any]]:
        """Each active target's scrape URL, health and last error (for failure messages)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as resp:
            body = json.load(resp)
        return [
            {k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
            for t in body["data"]["activeTargets"]
        ]
