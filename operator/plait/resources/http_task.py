"""A task of kind ``http``: one HTTP request the operator makes itself, with no Pod."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from plait.kernel import expressions
from plait.resources.common import CelExpression, DnsLabel, Identifier, PlaitModel

__all__ = ["MAX_RESPONSE_BYTES", "HttpTask"]

#: Most bytes of a response body an http task may ask to read.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024

_HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")]


class HttpTask(PlaitModel):
    """A request to an Integration's base URL with its credentials (type http: baseUrl,
    headers and token; github: apiUrl and token; slack: apiUrl and token)."""

    integration: DnsLabel
    """The Integration (type http, github or slack) whose base URL and token are used."""
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    """The HTTP method."""
    path: CelExpression | None = None
    """CEL over inputs: the string appended to the base URL (e.g. "'/repos/' + inputs.repo")."""
    headers: Annotated[dict[_HeaderName, CelExpression], Field(max_length=32)] = Field(
        default_factory=dict
    )
    """Header name -> CEL over inputs (a string)."""
    body: CelExpression | None = None
    """CEL over inputs: a string is sent as it is, anything else as JSON."""
    success_condition: CelExpression | None = None
    """CEL over response (status, headers, body) and inputs; unset: response.status < 400."""
    outputs: Annotated[dict[Identifier, CelExpression], Field(max_length=64)] = Field(
        default_factory=dict
    )
    """Output name -> CEL over response and inputs (e.g. response.body.id)."""
    idempotent: bool = False
    """The request may be sent again: only then is a request the operator was stopped
    during (a crash, a restart) sent again; otherwise that attempt fails."""
    max_response_bytes: Annotated[int, Field(ge=1, le=MAX_RESPONSE_BYTES)] = 1024 * 1024
    """Largest response body read; a larger one fails the attempt."""

    @model_validator(mode="after")
    def _expressions_compile(self) -> Self:
        problems = []
        named = [("path", self.path), ("body", self.body)]
        named += [("successCondition", self.success_condition)]
        named += [(f"headers.{k}", v) for k, v in self.headers.items()]
        named += [(f"outputs.{k}", v) for k, v in self.outputs.items()]
        for field, source in named:
            if source is None:
                continue
            try:
                expressions.compile(source)
            except expressions.ExpressionError as exc:
                problems.append(f"http.{field}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self
