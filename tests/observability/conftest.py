"""Fixtures of the observability tests: the component's own DSN and connections."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from plait.observability.batching import DsnConnections
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
