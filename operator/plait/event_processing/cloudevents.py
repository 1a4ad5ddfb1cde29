"""CloudEvents 1.0 as received over HTTP: binary mode, structured mode and batches.

Parsing is strict and total: every problem is reported as a :class:`Violation` with a JSON
pointer into the event as a client wrote it (``/id``, ``/data/amount``; ``/2/id`` for the
third event of a batch), so one answer tells the sender everything to fix. Nothing here
touches the database; the API validates a whole request first and only then stores it.

Everything PostgreSQL or Python would choke on later is refused here, by name: attributes
over their length limit (the limits keep the unique keys within a b-tree index row, even
at four UTF-8 bytes a character), NUL characters and lone surrogates (text and jsonb hold
neither), invalid UTF-8, data nested deeper than :data:`MAX_DATA_DEPTH`, numbers that are
not finite or integers longer than :data:`MAX_INTEGER_DIGITS`, and times outside years
1-9999 in UTC.
"""

from __future__ import annotations

import base64
import json
import math
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from plait.errors import ValidationError
from plait.event_processing.repository import NewEvent
from plait.resources.schemas import compile_schema

__all__ = [
    "BATCH_CONTENT_TYPE",
    "INT32",
    "MAX_DATA_DEPTH",
    "MAX_EXTENSION_NAME_LENGTH",
    "MAX_EXTENSION_VALUE_LENGTH",
    "MAX_INTEGER_DIGITS",
    "MAX_LENGTHS",
    "STRUCTURED_CONTENT_TYPE",
    "CloudEvent",
    "InvalidEventError",
    "SchemaValidator",
    "Violation",
    "event_from_mapping",
    "is_json_media_type",
    "load_json",
    "parse_batch",
    "parse_binary",
    "parse_rfc3339",
    "parse_structured",
]

SPEC_VERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
PARTITION_KEY = "partitionkey"

# Context attributes of the spec; every other top-level name is an extension.
_REQUIRED = ("specversion", "id", "source", "type")
_OPTIONAL = ("subject", "time", "datacontenttype", "dataschema")
_DATA = ("data", "data_base64")
_KNOWN = frozenset(_REQUIRED + _OPTIONAL + _DATA)
_EXTENSION_NAME = re.compile(r"^[a-z0-9]+$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
#: The range of integer extension attribute values (the spec's Integer type).
INT32: Final = (-(2**31), 2**31 - 1)

#: Most characters of each string attribute. (namespace, source, id) and (namespace, type,
#: partition key) are unique keys: 256 characters of up to 4 UTF-8 bytes each keep a key
#: well under PostgreSQL's b-tree row limit (2704 bytes).
MAX_LENGTHS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "id": 256,
        "source": 256,
        "type": 256,
        "subject": 256,  # the partition key when there is no partitionkey
        "partitionkey": 256,
        "time": 64,
        "datacontenttype": 256,
        "dataschema": 2048,
    }
)
#: Extension attribute names (the spec recommends at most 20) and string values.
MAX_EXTENSION_NAME_LENGTH: Final = 64
MAX_EXTENSION_VALUE_LENGTH: Final = 4096
#: Arrays and objects nested in ``data``: deeper data would exhaust Python's recursion
#: limit in validation and storage.
MAX_DATA_DEPTH: Final = 64
#: Digits of an integer in JSON (Python's own limit for converting text to int).
MAX_INTEGER_DIGITS: Final = 4300
#: Violations reported per request at most: the rest are of the same kind.
_MAX_VIOLATIONS = 100
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Violation:
    """One problem with a request: where (a JSON pointer) and why."""

    path: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


class InvalidEventError(ValidationError):
    """The request holds no acceptable CloudEvent(s); nothing was stored.

    ``status`` is the HTTP status that fits: 400 for malformed events, 422 for events that
    are well-formed but break their type's JSON Schema.
    """

    def __init__(self, title: str, violations: Iterable[Violation], *, status: int = 400) -> None:
        self.title = title
        self.violations = list(violations)
        self.status = status
        self.detail = "; ".join(f"{v.path or '/'}: {v.reason}" for v in self.violations)
        super().__init__(f"{title}: {self.detail}" if self.detail else title)


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """A parsed, attribute-valid CloudEvent (specversion is always 1.0)."""

    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = None
    data_base64: str | None = None
    has_data: bool = False
    extensions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def partition_key(self) -> str | None:
        """The ``partitionkey`` extension, else the subject, else None (unordered)."""
        key = self.extensions.get(PARTITION_KEY)
        if key is not None:
            return str(key)
        return self.subject

    def to_new_event(self, namespace: str, traceparent: str | None = None) -> NewEvent:
        """The event to store in ``namespace``; ``traceparent``, when given, replaces the
        sender's (the ingestion span's context, so runs join the trace through it)."""
        extensions = {k: v for k, v in self.extensions.items() if k != PARTITION_KEY}
        if traceparent is not None:
            extensions["traceparent"] = traceparent
        return NewEvent(
            namespace=namespace,
            source=self.source,
            id=self.id,
            type=self.type,
            subject=self.subject,
            time=self.time,
            data_content_type=self.datacontenttype,
            data_schema=self.dataschema,
            data=self.data if self.has_data else None,
            data_base64=self.data_base64,
            extensions=extensions,
            partition_key=self.partition_key,
        )


def is_json_media_type(content_type: str | None) -> bool:
    """application/json, text/json and any ``+json`` type (parameters ignored)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _string(
    value: Any,
    path: str,
    problems: list[Violation],
    *,
    max_length: int,
    required: bool = False,
) -> str | None:
    if value is None:
        if required:
            problems.append(Violation(path, "required attribute is missing"))
        return None
    if not isinstance(value, str):
        problems.append(Violation(path, f"must be a string, got {_json_type(value)}"))
        return None
    if value == "":
        problems.append(Violation(path, "must not be empty"))
        return None
    reason = _text_problem(value, max_length)
    if reason is not None:
        problems.append(Violation(path, reason))
        return None
    return value


def _text_problem(value: str, max_length: int | None = None) -> str | None:
    """Why PostgreSQL could not store ``value`` as text (or it is over ``max_length``)."""
    if max_length is not None and len(value) > max_length:
        return f"must be at most {max_length} characters, got {len(value)}"
    bad = _BAD_CHARACTER.search(value)
    if bad is None:
        return None
    if bad.group() == "\x00":
        return f"contains a NUL character (U+0000) at character {bad.start()}"
    return (
        f"contains a lone surrogate (U+{ord(bad.group()):04X}) at character {bad.start()}: "
        "not valid Unicode"
    )


class _Unstorable:
    """A JSON number that no JSON store can hold, standing in for it until the violation is
    reported at its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Numbers:
    """json.loads hooks that put an :class:`_Unstorable` where a number cannot be stored,
    and remember whether they did."""

    def __init__(self) -> None:
        self.unstorable = False

    def constant(self, name: str) -> _Unstorable:
        self.unstorable = True
        return _Unstorable(f"{name} is not a finite number (JSON has no NaN or Infinity)")

    def float(self, text: str) -> float | _Unstorable:
        value = float(text)
        if math.isfinite(value):
            return value
        self.unstorable = True
        return _Unstorable(f"{text[:40]} is not a finite number (beyond a 64-bit float)")

    def int(self, text: str) -> int | _Unstorable:
        digits = len(text) - text.startswith("-")
        if digits > MAX_INTEGER_DIGITS:
            self.unstorable = True
            return _Unstorable(
                f"an integer of {digits} digits; integers have at most {MAX_INTEGER_DIGITS} digits"
            )
        return int(text)


# In strictly decoded UTF-8 JSON text, a NUL or a lone surrogate can only be an escape.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]')


def _too_deep_at(text: str, segments: int) -> str:
    """The JSON pointer (its first ``segments`` tokens) of the first member nested deeper
    than :data:`MAX_DATA_DEPTH`; only called once the parser ran out of recursion."""
    stack: list[list[Any]] = []  # per open container: [is_object, key or index]
    last_string = ""
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            if len(stack) > MAX_DATA_DEPTH + segments:
                break
            stack.append([token == "{", "" if token == "{" else 0])
        elif token in ("]", "}"):
            if stack:
                stack.pop()
        elif token == ",":
            if stack and not stack[-1][0]:
                stack[-1][1] += 1
        elif token == ":":
            if stack and stack[-1][0]:
                stack[-1][1] = last_string
        else:
            last_string = json.loads(token)
    return "".join(f"/{_escape(str(key))}" for _, key in stack[:segments])


def load_json(body: bytes, *, path: str = "", segments: int = 0) -> Any:
    """``body`` as strict JSON: UTF-8 (a BOM is skipped), no NaN or Infinity, numbers a
    store can hold; ValueError with a reason otherwise.

    ``_Unstorable`` placeholders stand where a number cannot be stored; :func:`_data_problems`
    reports them by path. A document too deep to parse raises :class:`_TooDeepError` naming
    the member (``path`` plus the first ``segments`` pointer tokens).
    """
    return _load(body, path, segments)[0]


def _load(body: bytes, path: str, segments: int) -> tuple[Any, bool]:
    """:func:`load_json`, and whether a string or number in it may be unstorable (else
    only the nesting of the data needs checking)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    numbers = _Numbers()
    try:
        value = json.loads(
            text, parse_constant=numbers.constant, parse_float=numbers.float, parse_int=numbers.int
        )
    except RecursionError:
        raise _TooDeepError(path + _too_deep_at(text, segments)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return value, numbers.unstorable or _SUSPECT_ESCAPE.search(text) is not None


class _TooDeepError(ValueError):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"nested too deeply: data nests at most {MAX_DATA_DEPTH} levels")


def _too_deep(data: Any) -> bool:
    """Whether ``data`` nests more than :data:`MAX_DATA_DEPTH` arrays and objects (a walk
    over the containers only, level by level)."""
    level = [data] if isinstance(data, dict | list) else []
    for _ in range(MAX_DATA_DEPTH):
        if not level:
            return False
        below: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            below += [item for item in items if isinstance(item, dict | list)]
        level = below
    return bool(level)


def _data_problems(data: Any, path: str, *, scalars: bool = True) -> list[Violation]:
    """Everything in ``data`` that jsonb cannot hold: NUL characters and lone surrogates in
    strings and member names, non-finite or overlong numbers, nesting over the limit.

    Without ``scalars`` (the JSON text had nothing that could make a string or number
    unstorable) only the nesting is checked, which is much cheaper.
    """
    if not scalars and not _too_deep(data):
        return []
    problems: list[Violation] = []
    stack: list[tuple[Any, str, int]] = [(data, path, 0)]
    while stack and len(problems) < _MAX_VIOLATIONS:
        value, where, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DATA_DEPTH:
                problems.append(
                    Violation(
                        path,
                        f"nested more than {MAX_DATA_DEPTH} levels deep (at {where}): data "
                        f"nests at most {MAX_DATA_DEPTH} levels of arrays and objects",
                    )
                )
                break
            if isinstance(value, dict):
                for key, item in reversed(value.items()):
                    member = f"{where}/{_escape(key)}"
                    reason = _text_problem(key)
                    if reason is not None:
                        problems.append(Violation(member, f"member name {reason}"))
                    stack.append((item, member, depth + 1))
            else:
                for index in range(len(value) - 1, -1, -1):
                    stack.append((value[index], f"{where}/{index}", depth + 1))
        elif isinstance(value, str):
            reason = _text_problem(value)
            if reason is not None:
                problems.append(Violation(where, reason))
        elif isinstance(value, _Unstorable):
            problems.append(Violation(where, value.reason))
    return problems


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | _Unstorable):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


_TIME_RANGE = "between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z (years 1 to 9999 in UTC)"


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp (with its offset) within years 1-9999 once in UTC, the range
    of Python's datetime; ValueError for anything else."""
    if not _RFC3339.match(text):
        raise ValueError(f"must be an RFC 3339 timestamp with a UTC offset, got {text[:64]!r}")
    if text.startswith("0000"):
        raise ValueError(f"must be {_TIME_RANGE}, got {text[:64]!r}")
    try:
        parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"invalid timestamp {text[:64]!r}: {exc}") from None
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"must be {_TIME_RANGE}, got {text[:64]!r}") from None
    return parsed


def _timestamp(value: str, path: str, problems: list[Violation]) -> datetime | None:
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        problems.append(Violation(path, str(exc)))
        return None


def _extension(name: str, value: Any, path: str, problems: list[Violation]) -> Any:
    if len(name) > MAX_EXTENSION_NAME_LENGTH:
        problems.append(
            Violation(
                path,
                f"extension attribute names must be at most {MAX_EXTENSION_NAME_LENGTH} "
                f"characters, got {len(name)}",
            )
        )
        return None
    if not _EXTENSION_NAME.match(name):
        problems.append(
            Violation(
                path,
                "unknown attribute: extension attribute names must be lower-case letters and "
                "digits only",
            )
        )
        return None
    if isinstance(value, _Unstorable):
        problems.append(Violation(path, value.reason))
        return None
    if isinstance(value, bool | str):
        if value == "":
            problems.append(Violation(path, "must not be empty"))
        elif isinstance(value, str):
            limit = MAX_LENGTHS[PARTITION_KEY] if name == PARTITION_KEY else None
            reason = _text_problem(value, limit or MAX_EXTENSION_VALUE_LENGTH)
            if reason is not None:
                problems.append(Violation(path, reason))
        if name == PARTITION_KEY and not isinstance(value, str):
            problems.append(Violation(path, "the partition key must be a string"))
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 7.0 is the integer 7
    if isinstance(value, int):
        if not INT32[0] <= value <= INT32[1]:
            problems.append(Violation(path, "integer extension values must fit in 32 bits"))
        if name == PARTITION_KEY:
            problems.append(Violation(path, "the partition key must be a string"))
        return value
    problems.append(
        Violation(
            path, f"extension values must be strings, integers or booleans, got {_json_type(value)}"
        )
    )
    return None


def event_from_mapping(obj: Any, prefix: str = "", *, scalars_checked: bool = False) -> CloudEvent:
    """Validate one event in CloudEvents JSON form (structured mode, or one batch entry).

    ``prefix`` goes in front of every violation's path (``/2`` for a batch's third event).
    ``scalars_checked``: the JSON text it was parsed from can hold no NUL, lone surrogate
    or unstorable number, so the data's strings and numbers need no second look.
    """
    if not isinstance(obj, dict):
        raise InvalidEventError(
            "Invalid CloudEvent",
            [Violation(prefix, f"a CloudEvent must be a JSON object, got {_json_type(obj)}")],
        )
    problems: list[Violation] = []
    # JSON null means "absent" for every attribute.
    attrs = {k: v for k, v in obj.items() if v is not None}
    spec_version = attrs.get("specversion")
    if spec_version is None:
        problems.append(Violation(f"{prefix}/specversion", "required attribute is missing"))
    elif spec_version != SPEC_VERSION:
        problems.append(
            Violation(
                f"{prefix}/specversion",
                f"unsupported specversion {spec_version!r}: only {SPEC_VERSION!r} is accepted",
            )
        )

    def string(name: str, *, required: bool = False) -> str | None:
        return _string(
            attrs.get(name),
            f"{prefix}/{name}",
            problems,
            max_length=MAX_LENGTHS[name],
            required=required,
        )

    event_id = string("id", required=True)
    source = string("source", required=True)
    event_type = string("type", required=True)
    subject = string("subject")
    time_text = string("time")
    time = _timestamp(time_text, f"{prefix}/time", problems) if time_text else None
    content_type = string("datacontenttype")
    data_schema = string("dataschema")
    if "data" in attrs:
        problems += _data_problems(attrs["data"], f"{prefix}/data", scalars=not scalars_checked)
    data_base64 = attrs.get("data_base64")
    if data_base64 is not None:
        if "data" in attrs:
            problems.append(
                Violation(f"{prefix}/data_base64", "an event carries data or data_base64, not both")
            )
        elif not isinstance(data_base64, str):
            problems.append(Violation(f"{prefix}/data_base64", "must be a base64 string"))
        else:
            try:
                base64.b64decode(data_base64, validate=True)
            except ValueError as exc:  # binascii.Error, or a non-ASCII character
                problems.append(Violation(f"{prefix}/data_base64", f"invalid base64: {exc}"))
    extensions: dict[str, Any] = {}
    for name, value in attrs.items():
        if name in _KNOWN:
            continue
        extensions[name] = _extension(name, value, f"{prefix}/{_escape(name)}", problems)
    if problems:
        raise InvalidEventError("Invalid CloudEvent", problems)
    assert event_id is not None
    assert source is not None
    assert event_type is not None
    return CloudEvent(
        id=event_id,
        source=source,
        type=event_type,
        subject=subject,
        time=time,
        datacontenttype=content_type,
        dataschema=data_schema,
        data=attrs.get("data"),
        data_base64=data_base64,
        has_data="data" in attrs,
        extensions=extensions,
    )


def _escape(token: str) -> str:
    """One JSON pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def _load_json(body: bytes, what: str, segments: int) -> tuple[Any, bool]:
    try:
        return _load(body, "", segments)
    except _TooDeepError as exc:
        raise InvalidEventError(f"Malformed {what}", [Violation(exc.path, str(exc))]) from None
    except ValueError as exc:
        raise InvalidEventError(f"Malformed {what}", [Violation("", str(exc))]) from None


def parse_structured(body: bytes) -> CloudEvent:
    """``application/cloudevents+json``: the whole event is the JSON body."""
    event, suspect = _load_json(body, "CloudEvent", 1)
    return event_from_mapping(event, scalars_checked=not suspect)


def parse_batch(body: bytes) -> list[CloudEvent]:
    """``application/cloudevents-batch+json``: a JSON array of structured events.

    Every event is checked and all problems are reported together, each under its index.
    """
    items, suspect = _load_json(body, "CloudEvents batch", 2)
    if not isinstance(items, list):
        raise InvalidEventError(
            "Malformed CloudEvents batch",
            [Violation("", f"a batch must be a JSON array, got {_json_type(items)}")],
        )
    events: list[CloudEvent] = []
    problems: list[Violation] = []
    for index, item in enumerate(items):
        try:
            events.append(event_from_mapping(item, f"/{index}", scalars_checked=not suspect))
        except InvalidEventError as exc:
            problems.extend(exc.violations)
            if len(problems) >= _MAX_VIOLATIONS:
                break
    if problems:
        raise InvalidEventError("Invalid CloudEvents batch", problems[:_MAX_VIOLATIONS])
    return events


def parse_binary(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Binary mode: attributes in ``ce-*`` headers, the data is the body as sent.

    Header values are percent-decoded (the HTTP binding encodes non-ASCII that way) and
    must be UTF-8 before and after. JSON content types are parsed into ``data``; any other
    payload is kept byte for byte as ``data_base64``.
    """
    attrs: dict[str, Any] = {}
    problems: list[Violation] = []
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-") and len(lower) > 3:
            attr = lower[3:]
            if attr in _DATA:
                raise InvalidEventError(
                    "Invalid CloudEvent",
                    [Violation(f"/{attr}", "in binary mode the data is the request body")],
                )
            decoded = _header_text(name, value)
            if isinstance(decoded, Violation):
                problems.append(Violation(f"/{_escape(attr)}", decoded.reason))
            else:
                attrs[attr] = decoded
    content_type = headers.get("Content-Type")
    if content_type and _BAD_CHARACTER.search(content_type):
        problems.append(Violation("/datacontenttype", "the Content-Type header is not UTF-8"))
    if problems:
        raise InvalidEventError("Invalid CloudEvent", problems)
    if not any(k in attrs for k in _REQUIRED):
        raise InvalidEventError(
            "Not a CloudEvent",
            [
                Violation(
                    "",
                    "no ce-specversion, ce-id, ce-source or ce-type header: send binary mode "
                    f"headers, or Content-Type {STRUCTURED_CONTENT_TYPE} or {BATCH_CONTENT_TYPE}",
                )
            ],
        )
    if content_type:
        attrs["datacontenttype"] = content_type
    if body:
        if is_json_media_type(content_type):
            try:
                attrs["data"] = load_json(body, path="/data")
            except _TooDeepError as exc:
                raise InvalidEventError(
                    "Malformed CloudEvent data", [Violation(exc.path, str(exc))]
                ) from None
            except ValueError as exc:
                raise InvalidEventError(
                    "Malformed CloudEvent data",
                    [
                        Violation(
                            "/data",
                            f"Content-Type is {content_type} but the body is not valid JSON: {exc}",
                        )
                    ],
                ) from None
        else:
            attrs["data_base64"] = base64.b64encode(body).decode()
    return event_from_mapping(attrs)


def _header_text(name: str, value: str) -> str | Violation:
    """A header's text after percent-decoding, or why it is not UTF-8.

    aiohttp hands on bytes that are not UTF-8 as lone surrogates (surrogateescape).
    """
    if _BAD_CHARACTER.search(value):
        return Violation("", f"the {name} header is not UTF-8 (send non-ASCII percent-encoded)")
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError:
        return Violation(
            "", f"the {name} header is not UTF-8 once percent-decoded ({value[:80]!r})"
        )


class SchemaValidator:
    """Validates events' data against their type's JSON Schema; compiled schemas are cached.

    The cache is keyed by the definition's row id: a new version is a new row, so a changed
    schema is never served stale.
    """

    def __init__(self, max_cached: int = 256) -> None:
        self._cache: dict[Any, Any] = {}
        self._max = max_cached

    def _compiled(self, key: Any, schema: Mapping[str, Any]) -> Any:
        validator = self._cache.get(key)
        if validator is None:
            validator = compile_schema(schema)
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = validator
        return validator

    def violations(
        self, event: CloudEvent, key: Any, schema: Mapping[str, Any], prefix: str = ""
    ) -> list[Violation]:
        """Every way ``event``'s data breaks ``schema`` (empty when it conforms).

        Raises :class:`jsonschema.exceptions.SchemaError` when the stored schema itself is
        invalid (the definition's fault, not the sender's).
        """
        if event.data_base64 is not None:
            return [
                Violation(
                    f"{prefix}/data_base64",
                    f"events of type {event.type!r} must carry JSON data: their definition has "
                    "a JSON Schema",
                )
            ]
        validator = self._compiled(key, schema)
        found = sorted(
            validator.iter_errors(event.data if event.has_data else None),
            key=lambda e: list(map(str, e.absolute_path)),
        )
        return [
            Violation(
                f"{prefix}/data" + "".join(f"/{_escape(str(p))}" for p in error.absolute_path),
                error.message,
            )
            for error in found
        ]
