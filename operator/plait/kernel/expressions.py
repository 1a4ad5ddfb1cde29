"""CEL expressions: the one place Plait compiles and evaluates them.

Plait uses the Rust-backed ``common-expression-language`` package (import name ``cel``): it
parses the full CEL grammar with the reference ANTLR grammar, reports line, column and the
expected tokens on syntax errors, compiles in tens of microseconds (a 5,000-task workflow
has tens of thousands of expressions) and ships type stubs. Everything else in Plait goes
through :func:`compile` and :func:`evaluate`, so the library can change here alone.

Besides compiling, this module answers two static questions the validator needs and the
library does not: which free variables an expression reads (without the names bound by
comprehension macros) and which members of a root variable it selects (``tasks.a`` or
``tasks['a-b']``), found from CEL's lexical structure.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cel

from plait.errors import ValidationError

__all__ = [
    "MACROS",
    "ExpressionError",
    "JSONValue",
    "Program",
    "compile",
    "evaluate",
    "member_references",
]

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]

#: Macros whose first argument binds a new variable in the rest of the call.
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


class ExpressionError(ValidationError):
    """A CEL expression does not parse, or failed while being evaluated."""

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(message)
        self.expression = expression
        self.detail = message


@dataclass(frozen=True)
class Program:
    """A compiled CEL expression with the free variables it reads."""

    source: str
    variables: frozenset[str]
    _compiled: Any = field(repr=False, compare=False)


def _parser_message(expression: str, raw: str) -> str:
    """The parser's own message, without the library's repeated preamble."""
    prefix = f"Failed to parse expression '{expression}': "
    text = raw[len(prefix) :] if raw.startswith(prefix) else raw
    text = text.replace("ERROR: <input>:", "at ", 1)
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and line[0] != "|")


@functools.lru_cache(maxsize=4096)
def compile(expression: str) -> Program:
    """Parse ``expression``; raise :class:`ExpressionError` with the parser's message.

    Programs are immutable, and every advance of a run compiles its definition's
    expressions again: the most recent ones are kept (an error is not kept: it is raised
    again, the same, on the next call)."""
    if not expression.strip():
        raise ExpressionError(expression, "empty expression")
    try:
        compiled = cel.compile(expression)
        names = compiled.variables()
    except (ValueError, RuntimeError) as exc:
        raise ExpressionError(expression, _parser_message(expression, str(exc))) from None
    bound = _bound_names(_tokens(expression))
    return Program(expression, frozenset(n for n in names if n not in bound), compiled)


def evaluate(program: Program, activation: Mapping[str, Any]) -> JSONValue:
    """Run ``program`` with ``activation`` as its variables and return a JSON value.

    Timestamps become RFC 3339 strings, durations seconds as numbers, bytes base64: what a
    result turns into when it is stored as JSON or passed to a container anyway.
    """
    try:
        result = program._compiled.execute(dict(activation))
    except KeyError as exc:
        raise ExpressionError(program.source, f"no such key: {exc.args[0]!r}") from None
    except Exception as exc:  # the library raises plain built-in exceptions
        raise ExpressionError(program.source, str(exc) or type(exc).__name__) from None
    return _to_json(program.source, result)


def _to_json(source: str, value: Any) -> JSONValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ExpressionError(source, f"result {value} is not a JSON number")
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        return [_to_json(source, item) for item in value]
    if isinstance(value, dict):
        return {str(k): _to_json(source, v) for k, v in value.items()}
    if isinstance(value, cel.OptionalValue):
        return _to_json(source, value.value()) if value.has_value() else None
    raise ExpressionError(source, f"result of type {type(value).__name__} is not JSON")


# --- lexical analysis -------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>[rRbB]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
                |'(?:\\.|[^\\'\n])*'|"(?:\\.|[^\\"\n])*"))
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?|0[xX][0-9a-fA-F]+[uU]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>\|\||&&|==|!=|<=|>=|[-+*/%!<>?:.,()\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)


@functools.lru_cache(maxsize=4096)
def _tokens(expression: str) -> tuple[tuple[str, str], ...]:
    """(kind, text) tokens; unknown characters become ``error`` tokens, never exceptions."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            out.append(("error", expression[pos]))
            pos += 1
            continue
        kind = match.lastgroup or "error"
        if kind != "space":
            out.append((kind, match.group()))
        pos = match.end()
    return tuple(out)


def _bound_names(tokens: Sequence[tuple[str, str]]) -> set[str]:
    """Names bound by macros: the ``x`` in ``list.map(x, ...)``."""
    bound: set[str] = set()
    for i in range(len(tokens) - 4):
        if (
            tokens[i] == ("punct", ".")
            and tokens[i + 1][0] == "ident"
            and tokens[i + 1][1] in MACROS
            and tokens[i + 2] == ("punct", "(")
            and tokens[i + 3][0] == "ident"
            and tokens[i + 4] == ("punct", ",")
        ):
            bound.add(tokens[i + 3][1])
    return bound


def _string_value(literal: str) -> str | None:
    """The value of a plain (non-raw, non-bytes, no escapes) string literal, else None."""
    if literal[:1] not in "'\"" or "\\" in literal or literal.startswith(("'''", '"""')):
        return None
    return literal[1:-1]


def member_references(expression: str, root: str) -> list[str]:
    """Names selected from variable ``root``: ``tasks.a.x`` and ``tasks['a-b']`` give a, a-b.

    A selection whose key is computed (``tasks[name]``) cannot be resolved statically and is
    reported as ``"*"``, so callers can tell "refers to something unknown" from "none".
    """
    tokens = _tokens(expression)
    if root in _bound_names(tokens):
        return []
    found: list[str] = []
    for i, (kind, text) in enumerate(tokens):
        if kind != "ident" or text != root or (i > 0 and tokens[i - 1] == ("punct", ".")):
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if nxt == ("punct", ".") and i + 2 < len(tokens) and tokens[i + 2][0] == "ident":
            found.append(tokens[i + 2][1])
        elif nxt == ("punct", "["):
            closing = tokens[i + 3] if i + 3 < len(tokens) else ("", "")
            value = _string_value(tokens[i + 2][1]) if i + 2 < len(tokens) else None
            if tokens[i + 2][0] == "string" and closing == ("punct", "]") and value is not None:
                found.append(value)
            else:
                found.append("*")
    return found
