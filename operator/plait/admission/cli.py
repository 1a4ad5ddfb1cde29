"""``plait webhook``: serve admission until SIGTERM."""

from __future__ import annotations

from pathlib import Path

import click

from plait.admission.server import WebhookOptions, run_webhook
from plait.kernel.signals import run_until_signalled

__all__ = ["webhook_command"]


@click.command("webhook")
@click.option(
    "--address",
    default="0.0.0.0",
    show_default=True,
    envvar="PLAIT_WEBHOOK_ADDRESS",
    help="Address to listen on.",
)
@click.option(
    "--port",
    type=int,
    default=9443,
    show_default=True,
    envvar="PLAIT_WEBHOOK_PORT",
    help="HTTPS port of the admission webhook.",
)
@click.option(
    "--cert-dir",
    type=click.Path(path_type=Path),
    envvar="PLAIT_WEBHOOK_CERT_DIR",
    help="Folder with tls.crt and tls.key; self-signed when unset.",
)
@click.option(
    "--health-port",
    type=int,
    default=8080,
    show_default=True,
    envvar="PLAIT_HEALTH_PORT",
    help="Port of /healthz and /metrics (0: off).",
)
@click.option(
    "--manage",
    is_flag=True,
    envvar="PLAIT_WEBHOOK_MANAGE",
    help="Register a ValidatingWebhookConfiguration for this process (development).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="PLAIT_WEBHOOK_HOST",
    help="Address the API server dials, with --manage.",
)
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    envvar="PLAIT_NAMESPACES",
    help="With --manage: only objects of these namespaces (repeatable; default all).",
)
def webhook_command(
    address: str,
    port: int,
    cert_dir: Path | None,
    health_port: int,
    manage: bool,
    host: str,
    namespaces: tuple[str, ...],
) -> None:
    """Serve the validating admission webhook: content and access checks, no database."""
    options = WebhookOptions(
        address=address,
        port=port,
        cert_dir=cert_dir,
        health_port=health_port,
        manage=manage,
        host=host,
        namespaces=namespaces,
    )
    run_until_signalled(lambda stop: run_webhook(options, stop))
