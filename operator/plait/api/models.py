"""The request and response bodies of ``plait api`` as pydantic models.

Their JSON Schema is the OpenAPI document's ``components.schemas``; the handlers build
their answers from the response models and validate the purge and list requests with the
request models, so the document cannot drift from what is served. CloudEvents themselves
are parsed by :mod:`plait.event_processing.cloudevents` (precise JSON-pointer errors in every
mode); :class:`CloudEvent` describes the same rules from the same limits.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SkipValidation,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from plait.errors import ValidationError
from plait.event_processing.cloudevents import (
    INT32,
    MAX_EXTENSION_NAME_LENGTH,
    MAX_EXTENSION_VALUE_LENGTH,
    MAX_LENGTHS,
    parse_rfc3339,
)
from plait.event_processing.states import DeadLetterStatus
from plait.kernel.database import MAX_PAGE_SIZE, decode_cursor

__all__ = [
    "SCHEMA_REF",
    "Acknowledgement",
    "BatchAcknowledgement",
    "CloudEvent",
    "DeadLetter",
    "DeadLetterPage",
    "DeadLetterQuery",
    "ProblemDetails",
    "ProblemError",
    "PurgeRequest",
    "PurgeResult",
]

#: Where a model's schema lives in the OpenAPI document.
SCHEMA_REF = "#/components/schemas/{model}"
_MAX_CURSOR_LENGTH = 256


# Optional string attributes: within their length limits, or null (the same as absent).
_Subject = Annotated[str, Field(min_length=1, max_length=MAX_LENGTHS["subject"])] | None
_Time = Annotated[str, Field(max_length=MAX_LENGTHS["time"])] | None
_ContentType = Annotated[str, Field(min_length=1, max_length=MAX_LENGTHS["datacontenttype"])] | None
_DataSchema = Annotated[str, Field(min_length=1, max_length=MAX_LENGTHS["dataschema"])] | None
_PartitionKey = Annotated[str, Field(min_length=1, max_length=MAX_LENGTHS["partitionkey"])] | None


_BASE64 = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_EXTENSION_VALUE: JsonDict = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_EXTENSION_VALUE_LENGTH},
        {"type": "integer", "minimum": INT32[0], "maximum": INT32[1]},
        {"type": "boolean"},
        {"type": "null"},
    ]
}
_NOT_NULL: JsonDict = {"not": {"type": "null"}}


class CloudEvent(BaseModel):
    """A CloudEvent 1.0 in JSON format. Other members are extension attributes: names of
    lower-case letters and digits, values strings, 32-bit integers or booleans.
    `partitionkey` orders events that share it (else `subject` does). null is the same as
    absent. Strings hold no NUL character; `data` nests at most 64 levels, with finite
    numbers only, and excludes `data_base64`."""

    model_config = ConfigDict(
        json_schema_extra={
            "additionalProperties": _EXTENSION_VALUE,
            "propertyNames": {
                "pattern": "^([a-z0-9]+|data_base64)$",
                "maxLength": max(MAX_EXTENSION_NAME_LENGTH, len("datacontenttype")),
            },
            "not": {
                "required": ["data", "data_base64"],
                "properties": {"data": _NOT_NULL, "data_base64": _NOT_NULL},
            },
        }
    )

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=MAX_LENGTHS["id"])
    source: str = Field(
        min_length=1, max_length=MAX_LENGTHS["source"], description="A URI-reference."
    )
    type: str = Field(min_length=1, max_length=MAX_LENGTHS["type"])
    subject: _Subject = Field(None, description="The partition key if none.")
    time: _Time = Field(
        None,
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 with an offset, years 1 to 9999 in UTC.",
    )
    datacontenttype: _ContentType = Field(None, description="Media type of data.")
    dataschema: _DataSchema = Field(None, description="URI of data's schema.")
    partitionkey: _PartitionKey = Field(
        None, description="Events of one type and key are dispatched in order."
    )
    data: Any = Field(default=None, description="Event data (JSON).")
    data_base64: Annotated[str, Field(pattern=_BASE64)] | None = Field(
        None,
        json_schema_extra={"contentEncoding": "base64"},
        description="Binary data, base64.",
    )


class Acknowledgement(BaseModel):
    """One received event: stored now, or a duplicate of one stored before."""

    id: str
    source: str
    stored: bool = Field(description="false: a duplicate of an event stored before.")
    position: int | None = Field(
        description="Position in the (namespace, type, partition key) sequence, from 1; "
        "null for an event without a partition key."
    )
    partition_key: str | None = Field(serialization_alias="partitionKey")


class BatchAcknowledgement(BaseModel):
    """A batch: how many were new, how many duplicates, and each event in order."""

    stored: int
    duplicates: int
    events: list[Acknowledgement]


# A dead letter's payload is the CloudEvent as it was stored, passed on as is: it was valid
# when received (under the limits of that time), so it is not validated again. Build a
# DeadLetter with model_validate and dump it with warnings=False.
_Payload = SkipValidation[CloudEvent]


# Timestamps as Python writes them (the offset as +00:00), as the API always has.
_Timestamp = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class DeadLetter(BaseModel):
    """An event whose dispatch failed on every attempt, with the full event."""

    id: uuid.UUID
    namespace: str
    event_instance_id: uuid.UUID | None = Field(serialization_alias="eventInstanceId")
    source: str
    event_id: str = Field(serialization_alias="eventId")
    type: str
    reason: str
    attempts: int
    status: DeadLetterStatus
    created_at: _Timestamp = Field(serialization_alias="createdAt")
    resolved_at: _Timestamp | None = Field(serialization_alias="resolvedAt")
    payload: _Payload


class DeadLetterPage(BaseModel):
    """One page of dead letters, newest first."""

    items: list[DeadLetter]
    next_cursor: str | None = Field(
        serialization_alias="nextCursor",
        description="Pass as `cursor` for the next page; null at the end.",
    )


def _cursor(value: Any) -> Any:
    if isinstance(value, str) and len(value) <= _MAX_CURSOR_LENGTH:
        try:
            decode_cursor(value)
        except ValidationError as exc:  # a cursor this API did not make
            raise ValueError(str(exc)) from None
    return value


class DeadLetterQuery(BaseModel):
    """The query of ``GET .../deadletters``."""

    model_config = ConfigDict(extra="ignore")

    status: DeadLetterStatus | SkipJsonSchema[None] = Field(
        default=None, description="Only letters in this status."
    )
    limit: int = Field(default=50, ge=1, le=MAX_PAGE_SIZE, description="Page size.")
    cursor: Annotated[
        Annotated[str, Field(max_length=_MAX_CURSOR_LENGTH)] | SkipJsonSchema[None],
        BeforeValidator(_cursor),
    ] = Field(default=None, description="`nextCursor` of the previous page.")

    @field_validator("status", "cursor", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any) -> Any:
        return None if value == "" else value


def _uuid_list(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ValueError("ids must be a non-empty array of UUIDs")
    try:
        return [uuid.UUID(str(item)) for item in value]
    except ValueError:
        raise ValueError("ids must be a non-empty array of UUIDs") from None


def _rfc3339(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("olderThan must be an RFC 3339 timestamp string")
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise ValueError(f"olderThan {exc}") from None


class PurgeRequest(BaseModel):
    """Which dead letters to delete: by id, created before a time, or both (a letter that
    matches either goes)."""

    model_config = ConfigDict(
        extra="forbid",
        # At least one of the two, not null (null means absent).
        json_schema_extra={
            "anyOf": [
                {"required": ["ids"], "properties": {"ids": {"type": "array"}}},
                {"required": ["olderThan"], "properties": {"olderThan": {"type": "string"}}},
            ]
        },
    )

    ids: Annotated[
        Annotated[list[uuid.UUID], Field(min_length=1)] | None,
        BeforeValidator(_uuid_list),
    ] = None
    older_than: Annotated[datetime | None, BeforeValidator(_rfc3339)] = Field(
        default=None, validation_alias="olderThan"
    )

    @model_validator(mode="after")
    def _something(self) -> PurgeRequest:
        if self.ids is None and self.older_than is None:
            raise ValueError('say what to purge: {"ids": [...]} or {"olderThan": "<RFC 3339>"}')
        return self


class PurgeResult(BaseModel):
    """How many dead letters were deleted."""

    purged: int


class ProblemError(BaseModel):
    """One problem with the request."""

    path: str = Field(
        description="Where: a JSON pointer into the request (for a batch it starts with the "
        "event's index), or the name of a path or query parameter."
    )
    reason: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(json_schema_extra={"format": "uri"})
    title: str
    status: int
    detail: str
    errors: list[ProblemError] | SkipJsonSchema[None] = None
    permission: str | SkipJsonSchema[None] = Field(
        default=None, description="403: the permission the caller lacks."
    )
    namespace: str | SkipJsonSchema[None] = Field(
        default=None, description="403: where it lacks it (absent: cluster-wide)."
    )
