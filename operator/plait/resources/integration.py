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

__all__ = ["INTEGRATION", "IntegrationSpec", "IntegrationStatus"]


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


class IntegrationStatus(Status):
    """Observed state of an Integration."""

    last_checked_time: dt.datetime | None = None
    """Reserved for connection checks; not set by this version."""


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
