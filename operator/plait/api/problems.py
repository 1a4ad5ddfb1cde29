"""Error answers as RFC 9457 problem details (``application/problem+json``).

Handlers raise :class:`Problem`; the middleware in :mod:`plait.api.app` turns it (and
Plait's own ``ValidationError``/``NotFoundError``) into one JSON shape, so every client
sees the same fields: type, title, status, detail and, for invalid events, ``errors``
with a JSON pointer and a reason each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

__all__ = ["PROBLEM_CONTENT_TYPE", "Problem", "problem_response"]

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "https://plait.dev/problems/"


class Problem(Exception):
    """An HTTP error answer with a machine-readable ``type`` slug and a human ``detail``."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        errors: Iterable[Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        #: More members of the body (a 403 names the missing ``permission`` and ``namespace``).
        self.extensions = dict(extensions or {})

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": _TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extensions)
        return body


def problem_response(problem: Problem) -> web.Response:
    return web.Response(
        status=problem.status,
        body=json.dumps(problem.body()).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )
