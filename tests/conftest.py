"""Session-scoped real servers for the whole suite.

PostgreSQL is started once per session (a private server in a temporary directory) and
every test that asks for ``postgres`` gets a fresh, empty database on it. The Kubernetes
fixtures live in ``tests/fixtures/kube.py``; the migrated-database fixtures in
``tests/fixtures/database.py``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from plait.testing import PostgresServer

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.kube",
    "tests.fixtures.operator",
    "tests.fixtures.s3",
]

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> str:
    """Superuser DSN of a fresh, empty database that belongs to this test alone."""
    name = f"t{os.getpid()}_{next(_db_counter)}"
    return postgres_server.create_database(name)
