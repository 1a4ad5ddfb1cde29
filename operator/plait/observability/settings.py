"""Configuration of Plait's own observability, read from ``PLAIT_*`` environment variables.

Every knob has a safe default, so a process needs none of them; they exist for the
benchmark's on/off switch, for tuning batch sizes under load, and for retention.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ObservabilitySettings"]


class ObservabilitySettings(BaseSettings):
    """What a process records about itself, where, and for how long."""

    model_config = SettingsConfigDict(env_prefix="PLAIT_", extra="ignore", frozen=True)

    observability_enabled: bool = Field(
        default=True,
        description="Master switch: off stops log shipping, spans, metric snapshots, "
        "database gauges and retention (stderr logging and /metrics counters stay).",
    )
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="Format of the lines written to stderr; unset: text on a terminal, "
        "else JSON (a pod's stderr is no terminal).",
    )
    log_shipping: bool = Field(
        default=True, description="Ship log records into observability_logs."
    )
    log_buffer_size: int = Field(
        default=10_000,
        ge=1,
        description="Records held in memory while waiting to be shipped; beyond it the "
        "newest are dropped and counted in plait_log_records_dropped_total.",
    )
    log_batch_size: int = Field(default=500, ge=1, description="Records per COPY.")
    log_flush_interval_ms: int = Field(
        default=500, ge=10, description="Longest a record waits before a flush."
    )
    task_logs: bool = Field(
        default=True,
        description="The operator collects the stdout/stderr of task containers into "
        "observability_logs (component 'task') while they run.",
    )
    task_log_max_bytes: int = Field(
        default=1_048_576,
        ge=1,
        description="Bytes of output (the lines' text) collected per task attempt; past it "
        "one WARNING record marks the truncation and the rest is not read.",
    )
    task_log_followers: int = Field(
        default=50,
        ge=1,
        description="Task containers whose logs the operator follows at once; others wait "
        "for a free slot (their logs stay on the node meanwhile).",
    )
    tracing: bool = Field(default=True, description="Record spans into observability_traces.")
    span_buffer_size: int = Field(
        default=8192, ge=1, description="Finished spans held in memory before being written."
    )
    span_batch_size: int = Field(default=512, ge=1, description="Spans per COPY.")
    span_flush_interval_ms: int = Field(
        default=1000, ge=10, description="Longest a finished span waits before a flush."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PLAIT_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Base URL of an OTLP/HTTP collector (e.g. http://otel:4318); spans are "
        "also sent there when set. OTEL_EXPORTER_OTLP_ENDPOINT is honoured too.",
    )
    metrics_snapshot_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Interval of the snapshots of /metrics written to observability_metrics.",
    )
    database_gauges_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Interval at which gauges computed from PostgreSQL (queue depth, "
        "instances by phase, dead letters) are refreshed; /metrics serves the cache.",
    )
    database_gauges_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Time limit of one refresh of those gauges."
    )
    retention_logs_days: int = Field(default=7, ge=1, description="Days of logs kept.")
    retention_metrics_days: int = Field(default=30, ge=1, description="Days of snapshots kept.")
    retention_traces_days: int = Field(default=7, ge=1, description="Days of spans kept.")
    retention_interval_seconds: float = Field(
        default=3600.0, gt=0, description="How often the operator enforces retention."
    )
    partitions_days_ahead: int = Field(
        default=3, ge=1, le=366, description="Daily partitions created ahead of time."
    )

    @classmethod
    def disabled(cls) -> ObservabilitySettings:
        """Everything off: what the benchmark's baseline and unit tests use."""
        return cls(observability_enabled=False)

    @property
    def hostname(self) -> str:
        """This replica's name (the pod name in a cluster), labelling metric snapshots."""
        return os.environ.get("HOSTNAME") or os.uname().nodename
