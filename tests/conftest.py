"""Session-scoped real servers for the whole suite.

PostgreSQL is started once per session (a private server in a temporary directory); the
per-test databases on it (``postgres``, empty, and ``migrated_database``) are in
``tests/fixtures/database.py``, the Kubernetes fixtures in ``tests/fixtures/kube.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plait.testing import PostgresServer

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.kube",
    "tests.fixtures.operator",
    "tests.fixtures.s3",
]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the session."""
    with PostgresServer() as server:
        yield server
