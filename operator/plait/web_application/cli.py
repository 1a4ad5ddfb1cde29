"""``plait ui``: the dashboard's components through the API (``/v1/ui/components``), with
the credentials of ``plait login`` (or ``--token``/``PLAIT_API_TOKEN``)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import click
import yaml

from plait.auth.cli import Api, CliError, _client_options, _print

__all__ = ["ui_command"]


def _path(name: str, suffix: str = "") -> str:
    return f"/v1/ui/components/{urllib.parse.quote(name, safe='')}{suffix}"


def _line(c: dict[str, Any]) -> str:
    title = (c.get("spec") or {}).get("title", "")
    return f"{c['name']:<28} v{c['version']:<4} {c['kind']:<6} {c['createdAt'][:19]}  {title}"


@click.group("ui")
def ui_command() -> None:
    """Dashboard components: pages, charts and tables (versioned)."""


@ui_command.command("apply")
@click.option(
    "-f",
    "--filename",
    "filename",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML with name, kind (page, chart, table) and spec; several documents allowed.",
)
@_client_options
def apply(filename: Path, url: str | None, token: str | None, output: str) -> None:
    """Store each component of the file as its next version (unchanged: nothing stored)."""
    try:
        documents = [d for d in yaml.safe_load_all(filename.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise CliError(f"{filename} is not YAML: {exc}") from None
    api = Api(url, token)
    results = []
    for doc in documents:
        if not isinstance(doc, dict) or not {"name", "kind", "spec"} <= set(doc):
            raise CliError(f"{filename}: each document needs name, kind and spec")
        stored, _ = api.call(
            "PUT", _path(str(doc["name"])), {"kind": doc["kind"], "spec": doc["spec"]}
        )
        results.append(stored)
        if output == "text":
            said = "stored" if stored["created"] else "unchanged"
            click.echo(f"{stored['name']} v{stored['version']} {said}")
    if output == "json":
        _print(output, results, "")


@ui_command.command("list")
@_client_options
def list_(url: str | None, token: str | None, output: str) -> None:
    """The latest version of every component."""
    found, _ = Api(url, token).call("GET", "/v1/ui/components")
    _print(output, found, "\n".join(_line(c) for c in found["items"]))


@ui_command.command("history")
@click.argument("name")
@_client_options
def history(name: str, url: str | None, token: str | None, output: str) -> None:
    """Every version of one component, newest first."""
    found, _ = Api(url, token).call("GET", _path(name))
    _print(output, found, "\n".join(_line(c) for c in found["items"]))


@ui_command.command("rollback")
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@_client_options
def rollback(name: str, version: int, url: str | None, token: str | None, output: str) -> None:
    """Make an older version's spec the newest again (stored as a new version)."""
    stored, _ = Api(url, token).call("POST", _path(name, "/rollback"), {"version": version})
    said = "stored" if stored["created"] else "unchanged (already the latest)"
    _print(output, stored, f"{stored['name']} v{stored['version']} {said}")
