"""The CEL wrapper: precise parse errors, JSON results, and the static questions it answers."""

from __future__ import annotations

import datetime as dt

import pytest

from plait.errors import ValidationError
from plait.kernel.expressions import ExpressionError, compile, evaluate, member_references


def test_compile_and_evaluate_to_json() -> None:
    program = compile("params.n * 2 + size(tasks.a.outputs.items)")
    assert program.variables == {"params", "tasks"}
    activation = {"params": {"n": 3}, "tasks": {"a": {"outputs": {"items": [1, 2]}}}}
    assert evaluate(program, activation) == 8


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("{'a': [1, 2.5, 'x', null, true]}", {"a": [1, 2.5, "x", None, True]}),
        ("timestamp('2025-01-02T03:04:05Z')", "2025-01-02T03:04:05Z"),
        ("duration('90s')", 90.0),
        ("b'hi'", "aGk="),
        ("1u", 1),
        ("'abc'.startsWith('a') && 'abc'.matches('^a.c$')", True),
        ("[1, 2, 3].filter(x, x > 1).map(x, x * 10)", [20, 30]),
    ],
)
def test_results_are_json_values(expression: str, expected: object) -> None:
    assert evaluate(compile(expression), {}) == expected


def test_syntax_error_carries_position_and_parser_message() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile("params.x >")
    error = caught.value
    assert isinstance(error, ValidationError)
    assert error.expression == "params.x >"
    assert error.detail.startswith("at 1:")
    assert "Syntax error" in error.detail
    assert "Failed to parse" not in error.detail


def test_empty_expression_is_refused() -> None:
    with pytest.raises(ExpressionError, match="empty expression"):
        compile("   ")


@pytest.mark.parametrize(
    ("expression", "activation", "message"),
    [
        ("params.missing", {"params": {}}, "no such key: 'missing'"),
        ("nope + 1", {}, "Undefined variable"),
        ("1 / 0", {}, "division by zero"),
        ("int('x')", {}, "int"),
    ],
)
def test_evaluation_errors_are_expression_errors(
    expression: str, activation: dict[str, object], message: str
) -> None:
    with pytest.raises(ExpressionError, match=message):
        evaluate(compile(expression), activation)


def test_macro_variables_are_not_free_variables() -> None:
    program = compile("tasks.a.outputs.items.all(i, i > 0) && [1].exists(j, j == params.k)")
    assert program.variables == {"tasks", "params"}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("tasks.a.outputs.x + tasks.b.outputs.y", ["a", "b"]),
        ("tasks['fetch-data'].outputs", ["fetch-data"]),
        ('tasks["q"].outputs', ["q"]),
        ("tasks[name].outputs", ["*"]),
        ("'tasks.fake' + other.tasks.x", []),
        ("has(tasks.c.outputs)", ["c"]),
        ("[1].map(tasks, tasks.x)", []),
        ("size(tasks)", []),
        ("tasks.d-e.outputs", ["d"]),
    ],
)
def test_member_references(expression: str, expected: list[str]) -> None:
    assert member_references(expression, "tasks") == expected


def test_member_references_never_raise_on_garbage() -> None:
    assert member_references("tasks[ ' unterminated \u00e9 \x00", "tasks") == ["*"]
    assert member_references("", "tasks") == []


def test_timestamps_in_activation() -> None:
    program = compile("event.time > timestamp('2020-01-01T00:00:00Z')")
    moment = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert evaluate(program, {"event": {"time": moment}}) is True


def test_a_compiled_program_is_reused_and_an_error_raised_every_time() -> None:
    first = compile("params.n + 1")
    assert compile("params.n + 1") is first
    assert evaluate(first, {"params": {"n": 2}}) == 3
    for _ in range(2):
        with pytest.raises(ExpressionError, match="at 1:"):
            compile("params.n +")
