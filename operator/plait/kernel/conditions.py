"""``status.conditions`` the Kubernetes way: one entry per type, transition times kept.

A condition's ``lastTransitionTime`` changes only when its status flips, so reconciling
an unchanged object computes an identical status and the apiserver writes nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Condition", "merge_conditions", "now_rfc3339"]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    """One condition as Plait sets it; ``status`` is "True", "False" or "Unknown"."""

    type: str
    status: str
    reason: str
    message: str
    observed_generation: int | None = None


def merge_conditions(
    existing: Iterable[Mapping[str, Any]] | None, updates: Iterable[Condition]
) -> list[dict[str, Any]]:
    """The condition list with ``updates`` applied, other types kept, in a stable order."""
    by_type: dict[str, dict[str, Any]] = {c["type"]: dict(c) for c in existing or () if "type" in c}
    for cond in updates:
        previous = by_type.get(cond.type)
        transition = (
            previous["lastTransitionTime"]
            if previous
            and previous.get("status") == cond.status
            and "lastTransitionTime" in previous
            else now_rfc3339()
        )
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": transition,
        }
        if cond.observed_generation is not None:
            entry["observedGeneration"] = cond.observed_generation
        by_type[cond.type] = entry
    return [by_type[t] for t in sorted(by_type)]
