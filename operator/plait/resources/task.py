"""TaskDefinition: a reusable task template that workflow tasks name with ``taskRef``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from plait.resources.common import (
    AGE_COLUMN,
    MAX_MAP_ENTRIES,
    READY_COLUMN,
    ContainerTemplate,
    Identifier,
    KindInfo,
    Parameters,
    PlaitModel,
    PrinterColumn,
    RetryPolicy,
    Status,
)

__all__ = ["TASK_DEFINITION", "OutputDeclaration", "TaskDefinitionSpec", "TaskDefinitionStatus"]


class OutputDeclaration(PlaitModel):
    """An output a task promises to report in its termination message."""

    name: Identifier
    """Key of the output in the JSON the task writes; read as tasks.<task>.outputs.<name>."""
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """What the output holds."""


class TaskDefinitionSpec(PlaitModel):
    """A container task with declared inputs and outputs, reused by many workflows."""

    description: Annotated[str, StringConstraints(max_length=4096)] | None = None
    """What the task does."""
    inputs: Parameters = Field(default_factory=list)
    """Inputs the task accepts; each becomes the environment variable PLAIT_INPUT_<NAME>."""
    outputs: Annotated[
        list[OutputDeclaration],
        Field(
            max_length=MAX_MAP_ENTRIES,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = Field(default_factory=list)
    """Outputs the task reports; for authors: names must be unique, what it writes is unchecked."""
    template: ContainerTemplate
    """The container every use of this definition runs."""
    retries: RetryPolicy | None = None
    """Default retry policy; a workflow task's own retries take precedence."""
    timeout_seconds: Annotated[int, Field(ge=1, le=604800)] | None = None
    """Default deadline of one attempt, in seconds (the Job's activeDeadlineSeconds)."""


class TaskDefinitionStatus(Status):
    """Observed state of a TaskDefinition."""

    version: Annotated[int, Field(ge=1)] | None = None
    """Version number of the current spec in Plait's history; grows with each change."""


TASK_DEFINITION = KindInfo(
    kind="TaskDefinition",
    plural="taskdefinitions",
    short_names=("ptd", "taskdef"),
    spec=TaskDefinitionSpec,
    status=TaskDefinitionStatus,
    description="A reusable task template: a container with declared inputs and outputs.",
    printer_columns=(
        PrinterColumn("Image", ".spec.template.image", description="Container image"),
        PrinterColumn("Version", ".status.version", "integer", "Current version"),
        READY_COLUMN,
        AGE_COLUMN,
    ),
)
