"""The test PostgreSQL server's own helpers, on the session's server."""

from __future__ import annotations

import psycopg
import pytest

from plait.testing import PostgresServer


def test_a_database_is_dropped_even_with_a_session_still_on_it(
    postgres_server: PostgresServer,
) -> None:
    dsn = postgres_server.create_database("dropped_with_a_session_on_it")
    left_open = psycopg.connect(dsn, autocommit=True)
    try:
        left_open.execute("SELECT 1")
        postgres_server.drop_database("dropped_with_a_session_on_it")
        with pytest.raises(psycopg.OperationalError):
            left_open.execute("SELECT 1")  # ended by the drop
    finally:
        left_open.close()
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = 'dropped_with_a_session_on_it'"
        ).fetchone()
    assert found == (0,)
    postgres_server.drop_database("dropped_with_a_session_on_it")  # gone already: no error
