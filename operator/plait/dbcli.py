"""``plait db``: database chores besides migrating (roles, status, the data-model document)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import psycopg

from plait.kernel.components import Component
from plait.kernel.config import Settings
from plait.kernel.describe import render_data_model
from plait.kernel.migrations import (
    applied_migrations,
    describe_dsn,
    load_migrations,
    migrate_database,
    parse_components,
)
from plait.kernel.roles import (
    DEFAULT_OWNER_ROLE,
    ensure_roles,
    grant_component,
    passwords_from_env,
    reader_passwords_from_env,
)

__all__ = ["db_command"]

_component_option = click.option(
    "--component",
    "component_names",
    multiple=True,
    metavar="NAME",
    help="Only this component (repeatable); default: all eight.",
)


def _by_dsn(settings: Settings, components: Sequence[Component]) -> dict[str, list[Component]]:
    groups: dict[str, list[Component]] = {}
    for component in components:
        groups.setdefault(settings.database_url_for(component), []).append(component)
    return groups


@click.group("db")
def db_command() -> None:
    """Database roles, migration status and the generated data-model document."""


@db_command.command("roles")
@_component_option
def roles_command(component_names: tuple[str, ...]) -> None:
    """Create the owner and component roles (idempotent) and grant each its schema.

    Needs CREATEROLE. A component's role gets LOGIN with the password in
    PLAIT_DATABASE_PASSWORD_<COMPONENT> when that is set; otherwise it stays NOLOGIN and
    is reached with SET ROLE. With PLAIT_DATABASE_PASSWORD_<COMPONENT>_READER, the
    component's read-only role (SELECT only) is made too, LOGIN with that password.
    Passwords are never printed or logged.
    """
    settings = Settings()
    owner = settings.database_owner_role or None
    for dsn, members in _by_dsn(settings, parse_components(component_names)).items():
        with psycopg.connect(dsn, autocommit=True) as conn:
            created = ensure_roles(
                conn,
                members,
                owner_role=owner or "",
                passwords=passwords_from_env(members),
                reader_passwords=reader_passwords_from_env(members),
            )
            granted = [
                c.role
                for c in members
                if _schema_exists(conn, c) and grant_component(conn, c, owner_role=owner)
            ]
        click.echo(
            f"{describe_dsn(dsn)}: created {', '.join(created) or 'no roles'}; "
            f"granted {', '.join(granted) or 'nothing (migrate first)'}"
        )


def _schema_exists(conn: psycopg.Connection[Any], component: Component) -> bool:
    row = conn.execute("SELECT to_regnamespace(%s)", (component.schema,)).fetchone()
    return row is not None and row[0] is not None


@db_command.command("status")
@_component_option
def status_command(component_names: tuple[str, ...]) -> None:
    """Show, per database and component, the applied and the pending migrations."""
    settings = Settings()
    for dsn, members in _by_dsn(settings, parse_components(component_names)).items():
        with psycopg.connect(dsn, autocommit=True) as conn:
            ledger = applied_migrations(conn)
        for component in members:
            done = {a.version for a in ledger if a.component == component.name}
            files = load_migrations(component)
            pending = [m.label for m in files if m.version not in done]
            click.echo(
                f"{describe_dsn(dsn)} {component.name}: {len(done)} applied, "
                f"{len(pending)} pending{': ' + ', '.join(pending) if pending else ''}"
            )


@contextlib.contextmanager
def _scratch_database() -> Iterator[str]:
    from plait.kernel.components import COMPONENTS
    from plait.testing import PostgresServer

    with PostgresServer() as server:
        dsn = server.create_database("plait_describe")
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            ensure_roles(conn, COMPONENTS, owner_role=DEFAULT_OWNER_ROLE)
        migrate_database(dsn, COMPONENTS, owner_role=DEFAULT_OWNER_ROLE)
        yield dsn


def describe_markdown(dsn_by_component: dict[str, list[Component]]) -> str:
    conns = {dsn: psycopg.connect(dsn, autocommit=True) for dsn in dsn_by_component}
    try:
        return render_data_model((conns[dsn], members) for dsn, members in dsn_by_component.items())
    finally:
        for conn in conns.values():
            conn.close()


@db_command.command("describe")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of standard output.",
)
@click.option(
    "--scratch",
    is_flag=True,
    help="Migrate a private, temporary PostgreSQL and describe that (no settings "
    "needed; how docs/data-model.md is made).",
)
def describe_command(output: Path | None, scratch: bool) -> None:
    """Markdown description of the migrated schema (docs/data-model.md)."""
    from plait.kernel.components import COMPONENTS

    if scratch:
        with _scratch_database() as dsn:
            text = describe_markdown({dsn: list(COMPONENTS)})
    else:
        text = describe_markdown(_by_dsn(Settings(), COMPONENTS))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}")
