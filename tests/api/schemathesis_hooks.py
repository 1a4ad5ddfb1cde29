"""Schemathesis hooks of tests/api/test_fuzz.py: what the OpenAPI document cannot say
about binary mode.

Binary mode needs ce-specversion, ce-id, ce-source and ce-type, but only when the
Content-Type is not a CloudEvents one; the JSON modes ignore ce-* headers. OpenAPI cannot
make a header required by media type, so whether a binary-mode request is valid is beyond
the document: the "valid data accepted" and "invalid data refused" verdicts on binary-mode
requests are dropped (every other check stays). In the JSON modes the ce-* headers are
removed, so that a case is valid or not by its body alone, as the API sees it.
"""

from __future__ import annotations

from typing import Any

import schemathesis

JSON_MODES = ("application/cloudevents+json", "application/cloudevents-batch+json")
# Schema-violating request accepted; schema-valid request rejected.
DATA_VERDICTS = ("ST201", "ST202")


def _events(case: Any) -> bool:
    return str(case.operation.path).endswith("/events")


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if _events(case) and case.media_type in JSON_MODES and case.headers:
        for name in [n for n in case.headers if n.lower().startswith("ce-")]:
            del case.headers[name]
    return case


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    binary_mode = _events(case) and case.media_type not in JSON_MODES
    return not (binary_mode and failure.code in DATA_VERDICTS)
