"""The dashboard's built-in components, as the migration
``sql/web_application_service/0002_builtin_components.sql`` seeds them (version 1)."""

from __future__ import annotations

from typing import Any

__all__ = ["BUILTIN"]

#: (name, kind, spec) of each built-in component.
BUILTIN: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "overview",
        "page",
        {
            "title": "Overview",
            "panels": [
                "runs-per-minute",
                "workflow-failure-rates",
                "slowest-tasks",
                "task-overhead",
                "event-queue-depth",
                "event-queue-lag",
            ],
        },
    ),
    (
        "runs-per-minute",
        "chart",
        {
            "title": "Runs finished per minute (last hour), by outcome",
            "view": "workflow_runs",
            "timeSeries": {"series": "outcome"},
            "layout": {"order": 10, "width": 2},
        },
    ),
    (
        "workflow-failure-rates",
        "table",
        {
            "title": "Failure rates (last 7 days)",
            "view": "workflow_failure_rates",
            "columns": ["namespace", "workflow", "runs", "failed", "failure_rate", "p95_seconds"],
            "orderBy": "failure_rate",
            "layout": {"order": 20},
        },
    ),
    (
        "slowest-tasks",
        "table",
        {
            "title": "Slowest tasks (p95, last 7 days)",
            "view": "slowest_tasks",
            "columns": ["namespace", "workflow", "task", "attempts", "p95_seconds", "max_seconds"],
            "orderBy": "p95_seconds",
            "layout": {"order": 30},
        },
    ),
    (
        "task-overhead",
        "chart",
        {
            "title": "Plait's share of task time, per workflow (last 7 days)",
            "view": "task_overhead",
            "orderBy": "overhead_share",
            "x": "workflow",
            "y": "overhead_share",
            "layout": {"order": 40},
        },
    ),
    (
        "event-queue-depth",
        "chart",
        {
            "title": "Event queue depth (last hour)",
            "metric": "plait_event_queue_depth",
            "timeSeries": {},
            "layout": {"order": 50},
        },
    ),
    (
        "event-queue-lag",
        "chart",
        {
            "title": "Event queue lag, seconds (last hour)",
            "metric": "plait_event_queue_lag_seconds",
            "timeSeries": {},
            "layout": {"order": 60},
        },
    ),
)
