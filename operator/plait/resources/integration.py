"""Integration: a configured connection to an external system of a catalog type."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from plait.resources.common import (
    AGE_COLUMN,
    DNS_LABEL,
    READY_COLUMN,
    KindInfo,
    PlaitModel,
    PrinterColumn,
    SecretReference,
    Status,
)

__all__ = [
    "INTEGRATION",
    "HealthCheck",
    "IntegrationHealth",
    "IntegrationSpec",
    "IntegrationStatus",
]


class HealthCheck(PlaitModel):
    """Opt-in connection checks: how often and how long each may take."""

    interval_seconds: Annotated[int, Field(ge=10, le=86400)] = 300
    """Seconds between the end of one check and the start of the next."""
    timeout_seconds: Annotated[int, Field(ge=1, le=60)] = 10
    """Longest a check may take; past it the check fails (reason Timeout)."""


class IntegrationSpec(PlaitModel):
    """A connection: its catalog type, its non-secret settings and where its credentials are."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL)]
    """Catalog type of the integration, e.g. http, slack, github, postgres, s3."""
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """What this connection is for."""
    settings: Annotated[
        dict[str, Any],
        Field(max_length=64, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(default_factory=dict)
    """Non-secret settings of the type (URLs, names, options); never credentials."""
    secret_ref: SecretReference | None = None
    """Secret holding the credentials; Plait stores and shows only this reference."""
    health_check: HealthCheck | None = None
    """Check the connection periodically (the Healthy condition); unset: never checked."""


class IntegrationHealth(PlaitModel):
    """What the last health check measured."""

    latency_seconds: Annotated[float, Field(ge=0)] | None = None
    """How long the check took."""
    error: Annotated[str, StringConstraints(max_length=512)] | None = None
    """Why it failed; absent when it succeeded."""


class IntegrationStatus(Status):
    """Observed state of an Integration."""

    last_checked_time: dt.datetime | None = None
    """When the last health check ran (spec.healthCheck)."""
    health: IntegrationHealth | None = None
    """The last health check's latency and error (never a secret value)."""


INTEGRATION = KindInfo(
    kind="Integration",
    plural="integrations",
    short_names=("pint", "integ"),
    spec=IntegrationSpec,
    status=IntegrationStatus,
    description="A configured connection of a catalog type, with credentials in a Secret.",
    printer_columns=(
        PrinterColumn("Type", ".spec.type", description="Catalog type"),
        READY_COLUMN,
        AGE_COLUMN,
    ),
)
