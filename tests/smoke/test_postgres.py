"""The PostgreSQL the suite runs against is real: it accepts connections and transactions."""

import psycopg
import pytest


def test_connection_and_committed_transaction(postgres: str) -> None:
    with psycopg.connect(postgres) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
    with psycopg.connect(postgres) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
        version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None
        assert int(version[0]) >= 150000


def test_rolled_back_transaction_leaves_nothing(postgres: str) -> None:
    with psycopg.connect(postgres) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (1)")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_password_is_enforced_over_tcp(postgres: str) -> None:
    wrong = postgres.replace("postgres:", "postgres:wrong", 1)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong)


def test_each_test_gets_its_own_database(postgres: str) -> None:
    with psycopg.connect(postgres) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
