"""Plait's migration runner: plain SQL files, applied in order, recorded in a ledger.

Layout: ``sql/<schema>/NNNN_description.sql``, one folder per component, so a database that
hosts one component gets only that component's files. Each database has one ledger,
``public.plait_schema_migrations`` (component, version, name, checksum, applied_at).

A run, per database: take a session advisory lock (concurrent starters wait, then find
nothing to do), create the ledger if missing, check every applied migration against the
files (an edited file or a database ahead of this code stops the run before any change),
then apply each pending file in its own transaction as the owner role, recording it in the
same transaction, and finally re-grant each component's role on its schema.

The SQL files are found at ``PLAIT_SQL_DIR`` if set, else inside the installed package
(``plait/sql``, a link to the repository's ``sql/`` that the wheel copies), else at the
repository root next to ``operator/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from plait.errors import (
    ChecksumMismatchError,
    DatabaseAheadError,
    DatabaseError,
    MigrationError,
)
from plait.kernel.components import COMPONENTS, Component, component_by_name
from plait.kernel.config import Settings
from plait.kernel.roles import (
    ensure_roles,
    grant_component,
    passwords_from_env,
    reader_passwords_from_env,
)

__all__ = [
    "LEDGER_TABLE",
    "LOCK_KEY",
    "AppliedMigration",
    "Migration",
    "applied_migrations",
    "describe_dsn",
    "load_migrations",
    "migrate",
    "migrate_command",
    "migrate_database",
    "sql_dir",
]

log = logging.getLogger(__name__)

LEDGER_TABLE = "plait_schema_migrations"
#: Advisory lock key shared by every migration runner on a database ("plaitmig" as bigint).
LOCK_KEY = int.from_bytes(b"plaitmig", "big")
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_LEDGER_DDL = f"""
CREATE TABLE IF NOT EXISTS public.{LEDGER_TABLE} (
    component   text        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    name        text        NOT NULL,
    checksum    text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{{64}}$'),
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
);
COMMENT ON TABLE public.{LEDGER_TABLE} IS
    'Ledger of applied migrations, one per database, written by plait migrate in the '
    'same transaction as the migration itself.';
COMMENT ON COLUMN public.{LEDGER_TABLE}.checksum IS
    'sha256 (hex) of the file as applied; a later edit of an applied file is reported, '
    'never silently ignored.';
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: ``sql/<schema>/<version>_<name>.sql``."""

    component: str
    version: int
    name: str
    path: Path
    sql: bytes

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.component} {self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """One ledger row."""

    component: str
    version: int
    name: str
    checksum: str
    applied_at: datetime


def sql_dir() -> Path:
    """The folder holding ``<schema>/NNNN_*.sql`` (see the module docstring for the order)."""
    configured = os.environ.get("PLAIT_SQL_DIR")
    if configured:
        return Path(configured)
    packaged = Path(__file__).resolve().parent.parent / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "sql"


def load_migrations(component: Component, root: Path | None = None) -> list[Migration]:
    """The component's migrations in version order; malformed folders raise MigrationError."""
    folder = (root or sql_dir()) / component.schema
    if not folder.is_dir():
        raise MigrationError(
            f"no migrations folder for component {component.name!r} at {folder} "
            "(set PLAIT_SQL_DIR to the folder holding <schema>/NNNN_name.sql)"
        )
    migrations: list[Migration] = []
    for path in sorted(folder.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files must be named NNNN_lower_case_name.sql")
        migrations.append(
            Migration(component.name, int(match["version"]), match["name"], path, path.read_bytes())
        )
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{migration.path}: expected version {expected:04d} next in {folder}; "
                "versions must count 1, 2, 3... without gaps or duplicates"
            )
    return migrations


def describe_dsn(dsn: str) -> str:
    """``user@host:port/dbname`` of a DSN, for messages: never includes the password."""
    info = conninfo_to_dict(dsn)
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"{info.get('user') or '?'}@{host}:{port}/{info.get('dbname') or '?'}"


def applied_migrations(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    """Every ledger row of this database (empty when the ledger does not exist yet)."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"public.{LEDGER_TABLE}",)).fetchone()
    if exists is None or exists[0] is None:
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT component, version, name, checksum, applied_at FROM public.{} "
            "ORDER BY component, version"
        ).format(sql.Identifier(LEDGER_TABLE))
    ).fetchall()
    return [AppliedMigration(*row) for row in rows]


def _pending(
    component: Component,
    files: Sequence[Migration],
    applied: Iterable[AppliedMigration],
    where: str,
) -> list[Migration]:
    """Check the ledger against the files; return the files not applied yet."""
    by_version = {m.version: m for m in files}
    done = {a.version: a for a in applied if a.component == component.name}
    known = max(by_version, default=0)
    for version, row in sorted(done.items()):
        if version > known:
            raise DatabaseAheadError(
                f"database {where} is ahead of this code: component {component.name!r} has "
                f"migration {version:04d}_{row.name} applied, but this Plait only knows "
                f"migrations up to {known:04d}. Run the newer Plait that migrated it (or point "
                "PLAIT_DATABASE_URL at the right database); refusing to run."
            )
        migration = by_version.get(version)
        if migration is None:  # pragma: no cover - impossible while versions have no gaps
            raise MigrationError(f"{where}: ledger row {component.name} {version} has no file")
        if migration.checksum != row.checksum:
            raise ChecksumMismatchError(
                f"{migration.path} was edited after it was applied to {where} "
                f"(ledger checksum {row.checksum[:12]}..., file {migration.checksum[:12]}...). "
                "Applied migrations are immutable: restore the file and add a new migration."
            )
    return [m for m in files if m.version not in done]


def _prepare_owner(conn: psycopg.Connection[Any], owner_role: str, where: str) -> None:
    """Check the owner role is usable here and may create schemas in this database."""
    row = conn.execute(
        "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s",
        (owner_role,),
    ).fetchone()
    if row is None:
        raise MigrationError(
            f"owner role {owner_role!r} does not exist: create it with "
            "`plait migrate --create-roles` (or `plait db roles`) as a user with CREATEROLE, "
            "or set PLAIT_DATABASE_OWNER_ROLE='' to let the connecting user own the schemas"
        )
    if not row[0]:
        raise MigrationError(
            f"the connecting user of {where} cannot SET ROLE {owner_role}: "
            f"GRANT {owner_role} TO it (plait db roles does)"
        )
    can_create = conn.execute(
        "SELECT has_database_privilege(%s, current_database(), 'CREATE')", (owner_role,)
    ).fetchone()
    if can_create is not None and not can_create[0]:
        try:
            conn.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(conn.info.dbname), sql.Identifier(owner_role)
                )
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MigrationError(
                f"role {owner_role} may not create schemas in {where} and the connecting user "
                f"cannot grant it: run GRANT CREATE ON DATABASE ... TO {owner_role} as its owner"
            ) from exc


def migrate_database(
    dsn: str,
    components: Sequence[Component],
    *,
    owner_role: str | None = "plait_owner",
    root: Path | None = None,
) -> list[Migration]:
    """Bring one database to the latest version of ``components``; return what was applied."""
    where = describe_dsn(dsn)
    files = {c.name: load_migrations(c, root) for c in components}
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to {where}: {exc}") from exc
    applied_now: list[Migration] = []
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            with conn.transaction():
                conn.execute(_LEDGER_DDL.encode())
            ledger = applied_migrations(conn)
            plan = {c.name: _pending(c, files[c.name], ledger, where) for c in components}
            if owner_role and any(plan.values()):
                _prepare_owner(conn, owner_role, where)
            for component in components:
                for migration in plan[component.name]:
                    _apply(conn, migration, owner_role, where)
                    applied_now.append(migration)
            for component in components:
                grant_component(conn, component, owner_role=owner_role or None)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now


def _apply(
    conn: psycopg.Connection[Any], migration: Migration, owner_role: str | None, where: str
) -> None:
    log.info("applying migration %s to %s", migration.label, where)
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "INSERT INTO public.{} (component, version, name, checksum) "
                    "VALUES (%s, %s, %s, %s)"
                ).format(sql.Identifier(LEDGER_TABLE)),
                (migration.component, migration.version, migration.name, migration.checksum),
            )
            if owner_role:
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner_role)))
            conn.execute(migration.sql)
    except psycopg.Error as exc:
        raise MigrationError(
            f"migration {migration.path} failed on {where} and was rolled back: {exc}"
        ) from exc


def migrate(
    settings: Settings,
    components: Sequence[Component] = COMPONENTS,
    *,
    create_roles: bool = False,
    environ: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> dict[str, list[Migration]]:
    """Migrate every component in its own database (components sharing a DSN share a run).

    Returns the migrations applied, keyed by the (password-free) database description.
    Also what the operator calls at start-up when ``PLAIT_MIGRATE_ON_START`` is set.
    """
    by_dsn: dict[str, list[Component]] = {}
    for component in components:
        by_dsn.setdefault(settings.database_url_for(component, environ), []).append(component)
    owner = settings.database_owner_role or None
    result: dict[str, list[Migration]] = {}
    for dsn, members in by_dsn.items():
        if create_roles:
            with psycopg.connect(dsn, autocommit=True) as conn:
                ensure_roles(
                    conn,
                    members,
                    owner_role=owner or "",
                    passwords=passwords_from_env(members, environ),
                    reader_passwords=reader_passwords_from_env(members, environ),
                )
        result[describe_dsn(dsn)] = migrate_database(dsn, members, owner_role=owner, root=root)
    return result


def parse_components(names: Sequence[str]) -> list[Component]:
    """Components named on the command line (all when none is named)."""
    try:
        return [component_by_name(n) for n in names] if names else list(COMPONENTS)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--component") from exc


@click.command("migrate")
@click.option(
    "--component",
    "component_names",
    multiple=True,
    metavar="NAME",
    help="Only this component (repeatable); default: all eight.",
)
@click.option(
    "--create-roles",
    is_flag=True,
    help="First create the owner and component roles if missing (needs CREATEROLE); "
    "LOGIN passwords come from PLAIT_DATABASE_PASSWORD_<COMPONENT>.",
)
def migrate_command(component_names: tuple[str, ...], create_roles: bool) -> None:
    """Apply pending SQL migrations to each component's database (idempotent)."""
    settings = Settings()
    result = migrate(settings, parse_components(component_names), create_roles=create_roles)
    for where, applied in result.items():
        if applied:
            for migration in applied:
                click.echo(f"{where}: applied {migration.label}")
        else:
            click.echo(f"{where}: up to date")
