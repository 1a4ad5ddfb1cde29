"""Fixtures of the observability tests: the component's own DSN and connections."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator

import psycopg
import pytest

from plait.errors import ConfigurationError
from plait.observability.batching import DsnConnections
from plait.testing.prometheus import find_prometheus
from tests.fixtures.database import ConnectAs


@pytest.fixture
def obs_dsn(component_dsns: dict[str, str]) -> str:
    """DSN of a fresh migrated database, logging in as the observability role."""
    return component_dsns["observability"]


@pytest.fixture
async def obs_conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("observability")


@pytest.fixture
async def connections(obs_dsn: str) -> AsyncIterator[DsnConnections]:
    """The connection factory the shipper, tracing and retention take, as the component."""
    factory = DsnConnections(obs_dsn)
    yield factory
    await factory.close()


@pytest.fixture(scope="session")
def prometheus_available() -> None:
    """Skip (saying why) only when the prometheus binary is missing and cannot be installed."""
    try:
        find_prometheus()
        return
    except ConfigurationError:
        pass
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
            capture_output=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    try:
        find_prometheus()
    except ConfigurationError as exc:
        pytest.skip(f"{exc} (and apt-get could not install it here)")
