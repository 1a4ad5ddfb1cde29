"""EventDefinition: a CloudEvents type and the JSON Schema its data must match."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from plait.resources.common import (
    AGE_COLUMN,
    READY_COLUMN,
    KindInfo,
    PlaitModel,
    PrinterColumn,
    Status,
)

__all__ = ["EVENT_DEFINITION", "EventDefinitionSpec", "EventDefinitionStatus"]


class EventDefinitionSpec(PlaitModel):
    """An event type Plait accepts, with the schema of its data."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    """CloudEvents type, e.g. com.example.order.created."""
    description: Annotated[str, StringConstraints(max_length=4096)] | None = None
    """What the event means and who sends it."""
    source: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    """CloudEvents source the type is expected from; informational, not checked on ingestion."""
    schema_: Annotated[
        dict[str, Any],
        Field(alias="schema", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(default_factory=dict)
    """JSON Schema the data must match (draft per $schema, 2020-12 if absent); kept as written."""


class EventDefinitionStatus(Status):
    """Observed state of an EventDefinition."""

    version: Annotated[int, Field(ge=1)] | None = None
    """Version number of the current schema in Plait's history."""


EVENT_DEFINITION = KindInfo(
    kind="EventDefinition",
    plural="eventdefinitions",
    short_names=("evd", "evdef"),
    spec=EventDefinitionSpec,
    status=EventDefinitionStatus,
    description="A CloudEvents type with the JSON Schema of its data.",
    printer_columns=(
        PrinterColumn("Type", ".spec.type", description="CloudEvents type"),
        PrinterColumn("Version", ".status.version", "integer", "Current version"),
        READY_COLUMN,
        AGE_COLUMN,
    ),
)
