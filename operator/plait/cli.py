"""The ``plait`` command line: one entry point for every process and tool.

Subcommands live next to the component they drive and are registered here, so
``plait --help`` is the table of contents of what Plait can do.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click
import pydantic

from plait import __version__
from plait.errors import ConfigurationError, PlaitError

__all__ = ["cli", "main"]


# Subcommand name -> "module:attribute". Modules are imported only when their command runs,
# so `plait --help` stays fast and one component's dependencies never load for another.
COMMANDS: dict[str, str] = {
    "db": "plait.dbcli:db_command",
    "migrate": "plait.kernel.migrations:migrate_command",
    "crds": "plait.resources.crd:crds_command",
    "operator": "plait.controller.app:operator_command",
    "webhook": "plait.admission.cli:webhook_command",
    "instances": "plait.workflow_orchestrator.cli:instances_command",
    "api": "plait.api.app:api_command",
    "events": "plait.event_processing.cli:events_command",
    "dlq": "plait.event_processing.cli:dlq_command",
    "logs": "plait.observability.cli:logs_command",
    "traces": "plait.observability.cli:traces_command",
    "auth": "plait.auth.cli:auth_command",
    "login": "plait.auth.cli:login_command",
    "users": "plait.auth.cli:users_command",
    "roles": "plait.auth.cli:roles_command",
    "tokens": "plait.auth.cli:tokens_command",
    "test": "plait.testing_framework.cli:test_command",
    "integrations": "plait.integration.cli:integrations_command",
    "ui": "plait.web_application.cli:ui_command",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attr = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "PLAIT"},
)
@click.version_option(__version__, prog_name="plait")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    envvar="PLAIT_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Logging level of this process.",
)
def cli(log_level: str) -> None:
    """Plait: event-driven workflows on Kubernetes, with PostgreSQL as the system of record."""
    if logging.getLogger().handlers:  # embedded (a test runner's capture): leave it be
        logging.getLogger().setLevel(log_level.upper())
        return
    from plait.observability.logging import configure_logging
    from plait.observability.settings import ObservabilitySettings

    # JSON lines for log collectors (a pod's stderr is no terminal); text for people.
    try:
        settings = ObservabilitySettings()
    except pydantic.ValidationError as exc:
        problem = exc.errors()[0]
        name = f"PLAIT_{str(problem['loc'][0]).upper()}"
        raise ConfigurationError(f"{name}: {problem['msg']}") from None
    chosen = settings.log_format or ("text" if sys.stderr.isatty() else "json")
    configure_logging(log_level, json=chosen == "json", component="plait")


def main() -> None:
    """Console-script entry point: Plait's own errors become one clear line and exit 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PlaitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
