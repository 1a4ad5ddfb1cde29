"""CloudEvents 1.0 as received over HTTP: binary mode, structured mode and batches.

Parsing is strict and total: every problem is reported as a :class:`Violation` with a JSON
pointer into the event as a client wrote it (``/id``, ``/data/amount``; ``/2/id`` for the
third event of a batch), so one answer tells the sender everything to fix. Nothing here
touches the database; the API validates a whole request first and only then stores it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jsonschema

from plait.errors import ValidationError
from plait.event_processing.repository import NewEvent

__all__ = [
    "BATCH_CONTENT_TYPE",
    "STRUCTURED_CONTENT_TYPE",
    "CloudEvent",
    "InvalidEventError",
    "SchemaValidator",
    "Violation",
    "event_from_mapping",
    "is_json_media_type",
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
_INT32 = (-(2**31), 2**31 - 1)


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

    def to_new_event(self, namespace: str) -> NewEvent:
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
            extensions={k: v for k, v in self.extensions.items() if k != PARTITION_KEY},
            partition_key=self.partition_key,
        )


def is_json_media_type(content_type: str | None) -> bool:
    """application/json, text/json and any ``+json`` type (parameters ignored)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _string(
    value: Any, path: str, problems: list[Violation], *, required: bool = False
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
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp (with its offset); ValueError for anything else."""
    if not _RFC3339.match(text):
        raise ValueError(f"must be an RFC 3339 timestamp with a UTC offset, got {text[:64]!r}")
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"invalid timestamp {text[:64]!r}: {exc}") from None


def _timestamp(value: str, path: str, problems: list[Violation]) -> datetime | None:
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        problems.append(Violation(path, str(exc)))
        return None


def _extension(name: str, value: Any, path: str, problems: list[Violation]) -> Any:
    if not _EXTENSION_NAME.match(name):
        problems.append(
            Violation(
                path,
                "unknown attribute: extension attribute names must be lower-case letters and "
                "digits only",
            )
        )
        return None
    if isinstance(value, bool | str):
        if value == "":
            problems.append(Violation(path, "must not be empty"))
        if name == PARTITION_KEY and not isinstance(value, str):
            problems.append(Violation(path, "the partition key must be a string"))
        return value
    if isinstance(value, int):
        if not _INT32[0] <= value <= _INT32[1]:
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


def event_from_mapping(obj: Any, prefix: str = "") -> CloudEvent:
    """Validate one event in CloudEvents JSON form (structured mode, or one batch entry).

    ``prefix`` goes in front of every violation's path (``/2`` for a batch's third event).
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
    event_id = _string(attrs.get("id"), f"{prefix}/id", problems, required=True)
    source = _string(attrs.get("source"), f"{prefix}/source", problems, required=True)
    event_type = _string(attrs.get("type"), f"{prefix}/type", problems, required=True)
    subject = _string(attrs.get("subject"), f"{prefix}/subject", problems)
    time_text = _string(attrs.get("time"), f"{prefix}/time", problems)
    time = _timestamp(time_text, f"{prefix}/time", problems) if time_text else None
    content_type = _string(attrs.get("datacontenttype"), f"{prefix}/datacontenttype", problems)
    data_schema = _string(attrs.get("dataschema"), f"{prefix}/dataschema", problems)
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
            except binascii.Error as exc:
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


def _load_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise InvalidEventError(
            f"Malformed {what}", [Violation("", f"the body is not UTF-8: {exc.reason}")]
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidEventError(
            f"Malformed {what}",
            [Violation("", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")],
        ) from None


def parse_structured(body: bytes) -> CloudEvent:
    """``application/cloudevents+json``: the whole event is the JSON body."""
    return event_from_mapping(_load_json(body, "CloudEvent"))


def parse_batch(body: bytes) -> list[CloudEvent]:
    """``application/cloudevents-batch+json``: a JSON array of structured events.

    Every event is checked and all problems are reported together, each under its index.
    """
    items = _load_json(body, "CloudEvents batch")
    if not isinstance(items, list):
        raise InvalidEventError(
            "Malformed CloudEvents batch",
            [Violation("", f"a batch must be a JSON array, got {_json_type(items)}")],
        )
    events: list[CloudEvent] = []
    problems: list[Violation] = []
    for index, item in enumerate(items):
        try:
            events.append(event_from_mapping(item, f"/{index}"))
        except InvalidEventError as exc:
            problems.extend(exc.violations)
    if problems:
        raise InvalidEventError("Invalid CloudEvents batch", problems)
    return events


def parse_binary(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Binary mode: attributes in ``ce-*`` headers, the data is the body as sent.

    Header values are percent-decoded (the HTTP binding encodes non-ASCII that way). JSON
    content types are parsed into ``data``; any other payload is kept byte for byte as
    ``data_base64``.
    """
    attrs: dict[str, Any] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-") and len(lower) > 3:
            attr = lower[3:]
            if attr in _DATA:
                raise InvalidEventError(
                    "Invalid CloudEvent",
                    [Violation(f"/{attr}", "in binary mode the data is the request body")],
                )
            attrs[attr] = urllib.parse.unquote(value)
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
    content_type = headers.get("Content-Type")
    if content_type:
        attrs["datacontenttype"] = content_type
    if body:
        if is_json_media_type(content_type):
            try:
                attrs["data"] = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
            cls = jsonschema.validators.validator_for(
                schema, default=jsonschema.Draft202012Validator
            )
            cls.check_schema(dict(schema))
            validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
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
