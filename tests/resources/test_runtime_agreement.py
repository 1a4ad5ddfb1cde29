"""The validator's verdict is the runtime library's: cronsim, jsonschema, graphlib.

Whatever admission accepts, the runtime then computes with the same library in the same
way, so nothing accepted can make a trigger, an event type or a run fail forever later.
"""

from __future__ import annotations

import datetime as dt
import graphlib
from typing import Any

import jsonschema
import pytest
from cronsim import CronSim, CronSimError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.resources.schedules import CRON_MACROS
from plait.resources.validation import check_spec, find_cycle
from plait.workflow_orchestrator.triggers import due_ticks


def _trigger(cron: str, zone: str = "UTC") -> dict[str, Any]:
    return {"schedule": {"cron": cron, "timeZone": zone}, "workflowRef": {"name": "w"}}


def _cron_problems(cron: str) -> list[str]:
    return [str(p) for p in check_spec("EventTrigger", _trigger(cron))]


# --- cron --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    ["0 0 L * *", "0 9 * * 5#2", "0 9 * * MON#1", "0 0 LW * *", "0 0 29 2 *", "@daily"],
)
def test_what_cronsim_runs_is_accepted(cron: str) -> None:
    assert _cron_problems(cron) == []


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("0 0 ? * *", "Bad day-of-month"),
        ("0 0 31 2 *", "Bad day-of-month"),
        ("0 0 30 2 *", "Bad day-of-month"),
        ("61 * * * *", "Bad minute"),
        ("0 9 * *", "Wrong number of fields"),
    ],
)
def test_what_cronsim_refuses_is_refused_with_its_reason(cron: str, fragment: str) -> None:
    [problem] = _cron_problems(cron)
    assert problem.startswith("spec.schedule.cron: invalid cron expression")
    assert fragment in problem


def _runtime_accepts(cron: str) -> bool:
    """What the scheduler does with a schedule: every tick from now on, by cronsim."""
    now = dt.datetime.now(dt.UTC)
    try:
        due_ticks(cron, "UTC", now - dt.timedelta(days=1), now, catch_up="Skip",
                  starting_deadline_seconds=None)  # fmt: skip
        next(iter(CronSim(CRON_MACROS.get(cron.strip().lower(), cron), now)))
    except (CronSimError, StopIteration):
        return False
    return True


_FIELD = st.one_of(
    st.sampled_from(["*", "?", "L", "LW", "W", "15W", "5#2", "MON#5", "L-2", "5L", "MON-FRI",
                     "JAN", "*/0", "*/15", "1-5/2", "0", "7", "12", "13", "29", "30", "31", "32",
                     "60", "-1", "", "1,2", "a"]),
    st.integers(min_value=0, max_value=62).map(str),
)  # fmt: skip
_CRONS = st.one_of(
    st.lists(_FIELD, min_size=4, max_size=6).map(" ".join),
    st.sampled_from(["@hourly", "@DAILY", "@weekly", "@reboot", "@every 5m"]),
    st.text(alphabet="0123456789*/-,? LW#", max_size=16),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_CRONS)
def test_cron_verdict_is_cronsims(cron: str) -> None:
    assert (_cron_problems(cron) == []) == _runtime_accepts(cron)


# --- JSON Schema ---------------------------------------------------------------------------


def _runtime_schema_ok(schema: Any) -> bool:
    """What the event API does with a stored schema (plait.event_processing.cloudevents)."""
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        list(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(None))
    except jsonschema.exceptions.SchemaError:
        return False
    return True


def _schema_problems(schema: Any) -> list[str]:
    return [str(p) for p in check_spec("EventDefinition", {"type": "t", "schema": schema})]


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"minLength": -1}, "spec.schema.minLength: -1 is less than the minimum of 0"),
        ({"pattern": "("}, "spec.schema.pattern: '(' is not a 'regex'"),
        ({"properties": {"a": {"type": "strnig"}}}, "spec.schema.properties.a.type"),
        ({"required": "a"}, "spec.schema.required: 'a' is not of type 'array'"),
    ],
)
def test_schema_is_checked_by_the_meta_schema_with_formats(
    schema: dict[str, Any], fragment: str
) -> None:
    problems = _schema_problems(schema)
    assert any(fragment in p for p in problems), problems


def test_a_reference_the_runtime_cannot_resolve_is_refused() -> None:
    [remote] = _schema_problems({"$ref": "https://example.com/s.json"})
    assert "spec.schema.$ref" in remote
    [missing] = _schema_problems({"$ref": "#/$defs/nope"})
    assert "nope" in missing
    assert _schema_problems({"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a"}) == []


_KEYWORDS = st.sampled_from(
    ["type", "minLength", "maxLength", "pattern", "required", "minimum", "enum", "format",
     "items", "properties", "additionalProperties", "const", "multipleOf", "uniqueItems"]
)  # fmt: skip
_VALUES = st.one_of(
    st.integers(min_value=-2, max_value=3),
    st.sampled_from(["string", "object", "strnig", "(", "^a+$", "email", "[", True, False, None]),
    st.lists(st.sampled_from(["a", "b", 1]), max_size=3),
    st.just({}),
    st.just({"a": {"type": "integer"}}),
    st.just({"a": {"minLength": -1}}),
)
_SCHEMAS = st.recursive(
    st.dictionaries(_KEYWORDS, _VALUES, max_size=4),
    lambda inner: st.dictionaries(
        st.sampled_from(["properties", "items", "not"]),
        st.one_of(inner, st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)),
        max_size=2,
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SCHEMAS)
def test_schema_verdict_is_jsonschemas(schema: dict[str, Any]) -> None:
    assert (_schema_problems(schema) == []) == _runtime_schema_ok(schema)


# --- DAG -------------------------------------------------------------------------------------


@st.composite
def _graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    size = draw(st.integers(min_value=1, max_value=10))
    names = [f"t{i}" for i in range(size)]
    return {
        n: draw(st.lists(st.sampled_from(others), max_size=3, unique=True))
        if (others := [m for m in names if m != n])
        else []
        for n in names
    }


def _graphlib_acyclic(graph: dict[str, list[str]]) -> bool:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(_graphs())
def test_cycle_verdict_is_graphlibs(graph: dict[str, list[str]]) -> None:
    assert (find_cycle(graph) is None) == _graphlib_acyclic(graph)
    spec = {
        "tasks": [
            {"name": n, "dependencies": deps, "template": {"image": "busybox"}}
            for n, deps in graph.items()
        ]
    }
    cyclic = any("dependency cycle" in str(p) for p in check_spec("WorkflowDefinition", spec))
    assert cyclic == (not _graphlib_acyclic(graph))
