"""EventTrigger: what starts a workflow, either an event type or a cron schedule."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from plait.resources.common import (
    AGE_COLUMN,
    MAX_MAP_ENTRIES,
    READY_COLUMN,
    CelExpression,
    Identifier,
    KindInfo,
    PlaitModel,
    PrinterColumn,
    Status,
    cel_rule,
)
from plait.resources.workflow import WorkflowReference

__all__ = [
    "EVENT_TRIGGER",
    "EventTriggerSpec",
    "EventTriggerStatus",
    "RateLimit",
    "Schedule",
]


class Schedule(PlaitModel):
    """A cron schedule, as an alternative to an event type."""

    cron: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    """Cron expression as cronsim reads it: five fields (minute hour day-of-month month
    day-of-week) with L, W and # (0 0 L * *, 0 9 * * MON#1), or a macro such as @hourly or
    @daily. Refused when cronsim cannot read it or it never fires."""
    time_zone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
    """IANA time zone the schedule is read in, e.g. Europe/Paris."""
    catch_up: Literal["Skip", "Latest", "All"] = "Skip"
    """What to do with times missed while Plait was down: Skip them, run the Latest one only,
    or run All of them (bounded by startingDeadlineSeconds)."""
    starting_deadline_seconds: Annotated[int, Field(ge=1, le=604800)] | None = None
    """A missed time older than this is skipped whatever catchUp says."""


class RateLimit(PlaitModel):
    """At most ``runs`` workflow starts per ``periodSeconds``; extra events are dropped."""

    runs: Annotated[int, Field(ge=1, le=1000000)]
    """Workflow starts allowed per period."""
    period_seconds: Annotated[int, Field(ge=1, le=86400)] = 60
    """Length of the period, in seconds."""


class EventTriggerSpec(PlaitModel):
    """Which event (or which schedule) starts which workflow, with which arguments."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.eventType) != has(self.schedule)",
                    "exactly one of eventType or schedule must be set",
                ),
                cel_rule(
                    "!has(self.filter) || has(self.eventType)",
                    "filter applies to events; a scheduled trigger cannot have one",
                    ".filter",
                ),
            ]
        }
    )

    event_type: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    """CloudEvents type that starts the workflow."""
    schedule: Schedule | None = None
    """Start the workflow on a cron schedule instead of on events."""
    filter: CelExpression | None = None
    """CEL over event (id, source, type, subject, time, data, extensions); only events for
    which it is true start the workflow."""
    workflow_ref: WorkflowReference
    """The WorkflowDefinition to start."""
    arguments: Annotated[dict[Identifier, CelExpression], Field(max_length=MAX_MAP_ENTRIES)] = (
        Field(default_factory=dict)
    )
    """Parameter name -> CEL over event (or, for schedules, schedule.time) giving its value."""
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    """While a run started by this trigger is unfinished: Allow another, Forbid it (the event
    is dropped), or Replace it (the running one is cancelled)."""
    rate_limit: RateLimit | None = None
    """Most starts per period; unlimited when unset."""
    suspend: bool = False
    """Set to true to stop starting workflows; events meanwhile are not replayed."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.event_type is None) == (self.schedule is None):
            raise ValueError("exactly one of eventType or schedule must be set")
        if self.filter is not None and self.event_type is None:
            raise ValueError("filter applies to events; a scheduled trigger cannot have one")
        return self


class EventTriggerStatus(Status):
    """Observed state of an EventTrigger."""

    last_triggered_time: dt.datetime | None = None
    """When the trigger last started a workflow."""
    last_instance: Annotated[str, StringConstraints(max_length=253)] | None = None
    """Name of the WorkflowInstance last started."""
    next_schedule_time: dt.datetime | None = None
    """For scheduled triggers: the next time a run is due."""


EVENT_TRIGGER = KindInfo(
    kind="EventTrigger",
    plural="eventtriggers",
    short_names=("etr", "etrig"),
    spec=EventTriggerSpec,
    status=EventTriggerStatus,
    description="Starts a workflow on an event type (with a CEL filter) or on a cron schedule.",
    printer_columns=(
        PrinterColumn("Event", ".spec.eventType", description="CloudEvents type"),
        PrinterColumn("Schedule", ".spec.schedule.cron", description="Cron schedule"),
        PrinterColumn("Workflow", ".spec.workflowRef.name", description="Workflow started"),
        READY_COLUMN,
        AGE_COLUMN,
    ),
)
