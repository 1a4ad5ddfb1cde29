"""The pure rules of triggers: token buckets, cron ticks and catch-up, instance names."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from plait.workflow_orchestrator.triggers import (
    MAX_CATCH_UP,
    due_ticks,
    instance_name,
    label_value,
    take_token,
)

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def test_a_full_bucket_lets_a_burst_through_then_refills_at_the_rate() -> None:
    tokens, at = None, None
    allowed = []
    for _ in range(4):
        ok, tokens = take_token(tokens, at, T0, runs=3, period_seconds=60)
        at = T0
        allowed.append(ok)
    assert allowed == [True, True, True, False]
    # 20 s refill one token (3 per 60 s)
    ok, left = take_token(tokens, at, T0 + dt.timedelta(seconds=20), runs=3, period_seconds=60)
    assert ok
    assert left == pytest.approx(0.0)
    ok, _ = take_token(left, T0 + dt.timedelta(seconds=20), T0 + dt.timedelta(seconds=30),
                       runs=3, period_seconds=60)  # fmt: skip
    assert not ok
    # Refill never exceeds the bucket.
    ok, left = take_token(0.0, T0, T0 + dt.timedelta(days=1), runs=3, period_seconds=60)
    assert (ok, left) == (True, 2.0)


def ticks(
    cron: str,
    after: dt.datetime,
    now: dt.datetime,
    catch_up: str = "Skip",
    deadline: int | None = None,
    zone: str = "UTC",
) -> tuple[list[str], str | None]:
    fire, newest = due_ticks(
        cron, zone, after, now, catch_up=catch_up, starting_deadline_seconds=deadline
    )
    return [t.strftime("%H:%M") for t in fire], newest.strftime("%H:%M") if newest else None


def test_a_tick_on_time_fires_once_and_is_not_seen_again() -> None:
    now = T0 + dt.timedelta(minutes=5, seconds=1)
    assert ticks("*/5 * * * *", T0, now) == (["12:05"], "12:05")
    later = T0 + dt.timedelta(minutes=5, seconds=2)
    assert ticks("*/5 * * * *", T0 + dt.timedelta(minutes=5), later) == ([], None)


@pytest.mark.parametrize(
    ("catch_up", "deadline", "fired"),
    [
        ("Skip", None, []),
        ("Latest", None, ["13:00"]),
        ("All", None, ["12:10", "12:20", "12:30", "12:40", "12:50", "13:00"]),
        ("All", 1500, ["12:40", "12:50", "13:00"]),
        ("Latest", 60, []),
    ],
)
def test_missed_ticks_follow_the_catch_up_policy(
    catch_up: str, deadline: int | None, fired: list[str]
) -> None:
    """Down from 12:05 to 13:05: six ticks of */10 were missed."""
    now = T0 + dt.timedelta(hours=1, minutes=5)
    assert ticks("*/10 * * * *", T0 + dt.timedelta(minutes=5), now, catch_up, deadline) == (
        fired,
        "13:00",
    )


def test_catch_up_all_is_bounded() -> None:
    fired, _ = due_ticks("* * * * *", "UTC", T0, T0 + dt.timedelta(days=3),
                         catch_up="All", starting_deadline_seconds=None)  # fmt: skip
    assert len(fired) == MAX_CATCH_UP
    assert fired[-1] == T0 + dt.timedelta(days=3)


def test_macros_and_time_zones() -> None:
    # 09:00 in Paris is 08:00 UTC in winter.
    now = dt.datetime(2026, 11, 25, 8, 0, 30, tzinfo=dt.UTC)
    assert ticks("0 9 * * *", now - dt.timedelta(hours=1), now, zone="Europe/Paris") == (
        ["08:00"],
        "08:00",
    )
    assert ticks("@hourly", T0 - dt.timedelta(minutes=1), T0 + dt.timedelta(seconds=5)) == (
        ["12:00"],
        "12:00",
    )


class _Trigger:
    def __init__(self, name: str) -> None:
        self.name = name
        self.id = uuid.UUID(int=7)


def test_instance_names_are_deterministic_and_short() -> None:
    trigger = _Trigger("on-large-order")
    event = uuid.UUID(int=42)
    first = instance_name(trigger, event=event)  # type: ignore[arg-type]
    assert first == instance_name(trigger, event=event)  # type: ignore[arg-type]
    assert first != instance_name(trigger, event=uuid.UUID(int=43))  # type: ignore[arg-type]
    assert first.startswith("on-large-order-")
    tick = instance_name(trigger, tick=T0)  # type: ignore[arg-type]
    assert tick.startswith("on-large-order-")
    assert tick.endswith(f"-{int(T0.timestamp()) // 60}")
    # Names that differ only in what cannot be in a name still get their own runs.
    dotted, dashed = _Trigger("report.daily"), _Trigger("report-daily")
    dashed.id = uuid.UUID(int=8)
    assert instance_name(dotted, tick=T0) != instance_name(dashed, tick=T0)  # type: ignore[arg-type]
    long = instance_name(_Trigger("x" * 200 + ".example"), event=event)  # type: ignore[arg-type]
    assert len(long) <= 51
    assert len(label_value("a" * 100)) == 63
