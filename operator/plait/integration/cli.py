"""``plait integrations types``: the catalog of integration types, as the database holds it.

It reads ``integration_service.integration_definitions`` (``PLAIT_DATABASE_URL``, or
``PLAIT_DATABASE_URL_INTEGRATION``), the rows the reconciler checks Integrations against,
so what it prints is what the operator accepts.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from plait.integration import repository
from plait.integration.repository import IntegrationDefinition
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database

__all__ = ["integrations_command", "render_types"]


@click.group("integrations")
def integrations_command() -> None:
    """Integrations: the catalog of their types."""


async def _types() -> list[IntegrationDefinition]:
    component = component_by_name("integration")
    db = await Database.open(Settings(database_pool_min=1), [component])
    async with db, db.connection(component) as conn:
        return await repository.list_integration_types(conn)


def _as_json(t: IntegrationDefinition) -> dict[str, Any]:
    return {
        "type": t.type,
        "displayName": t.display_name,
        "description": t.description,
        "builtin": t.builtin,
        "secretKeys": list(t.secret_keys),
        "webhookSecretKey": t.webhook_secret_key,
        "settingsSchema": t.settings_schema,
    }


def _setting_line(name: str, schema: dict[str, Any], required: bool) -> str:
    kind = schema.get("type") or " | ".join(json.dumps(v) for v in schema.get("enum", ()))
    extra = []
    if required:
        extra.append("required")
    if "default" in schema:
        extra.append(f"default {json.dumps(schema['default'])}")
    return f"    {name}: {kind}" + (f" ({', '.join(extra)})" if extra else "")


def render_types(types: list[IntegrationDefinition]) -> str:
    """Each type with its settings (type, required, default), secret keys and webhook key."""
    blocks = []
    for t in types:
        schema = t.settings_schema
        required = set(schema.get("required", ()))
        lines = [f"{t.type}  {t.display_name}: {t.description}", "  settings:"]
        properties: dict[str, Any] = schema.get("properties", {})
        lines += [_setting_line(n, s, n in required) for n, s in properties.items()] or [
            "    (none)"
        ]
        lines.append("  secret keys: " + (", ".join(t.secret_keys) or "(none)"))
        if t.webhook_secret_key:
            lines.append(f"  webhook signing key: {t.webhook_secret_key}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


@integrations_command.command("types")
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one block per type; json: the rows with their full JSON Schemas.",
)
def types_command(output: str) -> None:
    """List the integration types: settings schema, secret keys, webhook signing key."""
    types = asyncio.run(_types())
    if output == "json":
        click.echo(json.dumps([_as_json(t) for t in types], indent=2))
    else:
        click.echo(render_types(types))
