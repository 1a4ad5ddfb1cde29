"""docs/data-model.md is generated from the migrated schema and must match it."""

from __future__ import annotations

from pathlib import Path

import psycopg

from plait.kernel.components import COMPONENTS
from plait.kernel.describe import render_data_model

DOC = Path(__file__).parents[2] / "docs" / "data-model.md"


def test_committed_data_model_matches_the_migrations(migrated_template_dsn: str) -> None:
    with psycopg.connect(migrated_template_dsn, autocommit=True) as conn:
        text = render_data_model([(conn, COMPONENTS)])
    assert DOC.read_text() == text, (
        "docs/data-model.md is stale: run `plait db describe --scratch --output "
        "docs/data-model.md` and commit the result"
    )


def test_every_table_and_its_reason_is_documented(migrated_template_dsn: str) -> None:
    with psycopg.connect(migrated_template_dsn) as conn:
        undocumented = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c "
            "WHERE c.relnamespace::regnamespace::text LIKE '%\\_service' "
            "AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND obj_description(c.oid, 'pg_class') IS NULL"
        ).fetchall()
    assert undocumented == []
    text = DOC.read_text()
    for component in COMPONENTS:
        assert f"## `{component.schema}`" in text
