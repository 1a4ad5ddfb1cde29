"""CloudEvents parsing: every mode, every required attribute, precise JSON-pointer errors."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plait.event_processing.cloudevents import (
    MAX_LENGTHS,
    InvalidEventError,
    SchemaValidator,
    event_from_mapping,
    load_json,
    parse_batch,
    parse_binary,
    parse_structured,
)

BASE = {"specversion": "1.0", "id": "e1", "source": "/shop", "type": "order.created"}


def paths(exc: pytest.ExceptionInfo[InvalidEventError]) -> dict[str, str]:
    return {v.path: v.reason for v in exc.value.violations}


def test_structured_event_with_all_attributes() -> None:
    event = parse_structured(
        json.dumps(
            {
                **BASE,
                "subject": "order-7",
                "time": "2024-05-01T12:00:00.5Z",
                "datacontenttype": "application/json",
                "dataschema": "https://example.com/order.json",
                "data": {"amount": 3},
                "traceparent": "00-abc-def-01",
                "retries": 2,
                "urgent": True,
            }
        ).encode()
    )
    assert (event.id, event.source, event.type, event.subject) == (
        "e1",
        "/shop",
        "order.created",
        "order-7",
    )
    assert event.time == datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)
    assert event.data == {"amount": 3}
    assert event.has_data
    assert event.extensions == {"traceparent": "00-abc-def-01", "retries": 2, "urgent": True}
    assert event.partition_key == "order-7"  # the subject when no partitionkey


def test_partition_key_extension_wins_over_subject_and_is_not_an_extension_column() -> None:
    event = event_from_mapping({**BASE, "subject": "s", "partitionkey": "k"})
    assert event.partition_key == "k"
    stored = event.to_new_event("default")
    assert stored.partition_key == "k"
    assert stored.extensions == {}
    assert event_from_mapping(BASE).partition_key is None


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type"])
def test_each_required_attribute_is_named_when_missing(missing: str) -> None:
    body = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(InvalidEventError) as exc:
        event_from_mapping(body)
    assert paths(exc) == {f"/{missing}": "required attribute is missing"}
    assert exc.value.status == 400


def test_wrong_specversion_and_wrong_types_are_all_reported() -> None:
    with pytest.raises(InvalidEventError) as exc:
        event_from_mapping(
            {**BASE, "specversion": "0.3", "id": 7, "source": "", "time": "yesterday"}
        )
    found = paths(exc)
    assert "only '1.0'" in found["/specversion"]
    assert found["/id"] == "must be a string, got number"
    assert found["/source"] == "must not be empty"
    assert "RFC 3339" in found["/time"]


def test_time_without_an_offset_is_refused() -> None:
    with pytest.raises(InvalidEventError) as exc:
        event_from_mapping({**BASE, "time": "2024-05-01T12:00:00"})
    assert "/time" in paths(exc)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("Bad-Name", "x", "lower-case letters and digits"),
        ("nested", {"a": 1}, "got object"),
        ("ratio", 0.5, "got number"),
        ("big", 2**40, "32 bits"),
        ("partitionkey", 5, "must be a string"),
    ],
)
def test_invalid_extensions(name: str, value: object, reason: str) -> None:
    with pytest.raises(InvalidEventError) as exc:
        event_from_mapping({**BASE, name: value})
    assert reason in paths(exc)[f"/{name}"]


def test_data_and_data_base64_are_exclusive_and_base64_is_checked() -> None:
    with pytest.raises(InvalidEventError) as exc:
        event_from_mapping({**BASE, "data": 1, "data_base64": "AA=="})
    assert "/data_base64" in paths(exc)
    with pytest.raises(InvalidEventError) as exc:
        event_from_mapping({**BASE, "data_base64": "not base64!"})
    assert paths(exc)["/data_base64"].startswith("invalid base64")


def test_malformed_json_names_line_and_column() -> None:
    with pytest.raises(InvalidEventError) as exc:
        parse_structured(b'{"specversion": "1.0",\n "id": }')
    assert exc.value.title == "Malformed CloudEvent"
    assert "line 2 column" in paths(exc)[""]


def test_a_structured_event_must_be_an_object() -> None:
    with pytest.raises(InvalidEventError) as exc:
        parse_structured(b"[1]")
    assert paths(exc) == {"": "a CloudEvent must be a JSON object, got array"}


def test_batch_reports_every_invalid_event_under_its_index() -> None:
    items = [BASE, {**BASE, "id": ""}, {k: v for k, v in BASE.items() if k != "type"}, 3]
    with pytest.raises(InvalidEventError) as exc:
        parse_batch(json.dumps(items).encode())
    assert paths(exc) == {
        "/1/id": "must not be empty",
        "/2/type": "required attribute is missing",
        "/3": "a CloudEvent must be a JSON object, got number",
    }
    assert [e.id for e in parse_batch(json.dumps([BASE, {**BASE, "id": "e2"}]).encode())] == [
        "e1",
        "e2",
    ]


def test_batch_must_be_an_array() -> None:
    with pytest.raises(InvalidEventError) as exc:
        parse_batch(json.dumps(BASE).encode())
    assert "JSON array" in paths(exc)[""]


def test_binary_mode_json_body_and_percent_encoded_headers() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b1",
        "ce-source": "/shop",
        "ce-type": "order.created",
        "ce-subject": "caf%C3%A9",
        "ce-partitionkey": "k1",
        "Content-Type": "application/json; charset=utf-8",
    }
    event = parse_binary(headers, b'{"amount": 5}')
    assert event.subject == "café"
    assert event.data == {"amount": 5}
    assert event.datacontenttype == "application/json; charset=utf-8"
    assert event.partition_key == "k1"


def test_binary_mode_other_payloads_are_kept_as_base64() -> None:
    raw = uuid.uuid4().bytes
    headers = {"ce-specversion": "1.0", "ce-id": "b2", "ce-source": "/s", "ce-type": "t",
               "Content-Type": "application/octet-stream"}  # fmt: skip
    event = parse_binary(headers, raw)
    assert event.data_base64 is not None
    assert base64.b64decode(event.data_base64) == raw
    assert not event.has_data


def test_binary_mode_without_ce_headers_says_which_modes_exist() -> None:
    with pytest.raises(InvalidEventError) as exc:
        parse_binary({"Content-Type": "application/json"}, b"{}")
    assert "application/cloudevents+json" in paths(exc)[""]


def test_binary_mode_invalid_json_body() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "b3", "ce-source": "/s", "ce-type": "t",
               "Content-Type": "application/json"}  # fmt: skip
    with pytest.raises(InvalidEventError) as exc:
        parse_binary(headers, b"{nope")
    assert "/data" in paths(exc)


def test_schema_violations_point_into_the_data() -> None:
    schema = {
        "type": "object",
        "required": ["amount", "currency"],
        "properties": {"amount": {"type": "number", "minimum": 0}, "currency": {"type": "string"}},
    }
    validator = SchemaValidator()
    good = event_from_mapping({**BASE, "data": {"amount": 1, "currency": "EUR"}})
    assert validator.violations(good, "v1", schema) == []
    bad = event_from_mapping({**BASE, "data": {"amount": -1}})
    found = {v.path: v.reason for v in validator.violations(bad, "v1", schema, "/4")}
    assert found == {
        "/4/data": "'currency' is a required property",
        "/4/data/amount": "-1 is less than the minimum of 0",
    }
    binary = event_from_mapping({**BASE, "data_base64": "AA=="})
    assert [v.path for v in validator.violations(binary, "v1", schema)] == ["/data_base64"]


def test_attribute_limits_count_characters_and_name_the_attribute() -> None:
    at_limit = {**BASE, "id": "\U0001f600" * MAX_LENGTHS["id"]}
    assert event_from_mapping(at_limit).id == at_limit["id"]
    with pytest.raises(InvalidEventError) as exc:
        event_from_mapping({**BASE, "id": "x" * (MAX_LENGTHS["id"] + 1), "subject": "ok"})
    assert paths(exc) == {"/id": f"must be at most {MAX_LENGTHS['id']} characters, got 257"}


def test_escaped_surrogate_pairs_are_characters_not_lone_surrogates() -> None:
    event = parse_structured(
        b'{"specversion": "1.0", "id": "\\ud83d\\ude00", "source": "/s", "type": "t", '
        b'"data": {"k\\u00e9": "\\ud83d\\ude00"}}'
    )
    assert event.id == "\U0001f600"
    assert event.data == {"k\u00e9": "\U0001f600"}


def test_a_time_at_the_edges_of_the_range() -> None:
    assert event_from_mapping({**BASE, "time": "0001-01-01T00:00:00Z"}).time is not None
    assert event_from_mapping({**BASE, "time": "9999-12-31T23:59:59+01:00"}).time is not None
    with pytest.raises(InvalidEventError) as exc:
        event_from_mapping({**BASE, "time": "0001-01-01T00:59:59+01:00"})
    assert "years 1 to 9999 in UTC" in paths(exc)["/time"]


def test_the_deep_member_is_named_even_past_the_parsers_recursion() -> None:
    deep = "[" * 5000 + "]" * 5000
    body = '[{"specversion": "1.0", "id": "a", "source": "/s", "type": "t"}, ' + (
        '{"specversion": "1.0", "id": "b", "source": "/s", "type": "t", "data": ' + deep + "}]"
    )
    with pytest.raises(InvalidEventError) as exc:
        parse_batch(body.encode())
    assert list(paths(exc)) == ["/1/data"]


# Any code point, lone surrogates and NUL included; NaN and infinities too.
# (st.text drops lone surrogates, so strings are joined from characters.)
any_text = st.lists(
    st.characters(exclude_categories=()) | st.sampled_from("\x00\ud800\udfff\U0001f600"),
    max_size=5,
).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3)
    ),
    max_leaves=30,
)


@given(data=json_values, ensure_ascii=st.booleans())
def test_the_cheap_check_agrees_with_the_full_one(data: object, ensure_ascii: bool) -> None:
    """Parsed from JSON text, data skips the per-string checks when the text has no escape
    that can hide a NUL or a lone surrogate; the verdict must be the one of the full check."""
    body = json.dumps({**BASE, "data": data}, ensure_ascii=ensure_ascii).encode(
        "utf-8", "surrogatepass"
    )

    def verdict(parse: Callable[[], object]) -> dict[str, str] | None:
        try:
            parse()
        except InvalidEventError as exc:
            return {v.path: v.reason for v in exc.violations}
        except ValueError as exc:  # not UTF-8, not JSON
            return {"": str(exc)}
        return None

    fast = verdict(lambda: parse_structured(body))
    full = verdict(lambda: event_from_mapping(load_json(body), scalars_checked=False))
    if fast is not None and full is not None and list(fast) == [""]:
        return  # refused before any check: the same reason, worded for the event
    assert fast == full


def test_a_whole_number_written_with_a_fraction_is_an_integer_extension() -> None:
    """JSON has one number type (and JSON Schema's integer includes 7.0)."""
    assert event_from_mapping({**BASE, "retries": 7.0}).extensions == {"retries": 7}
    with pytest.raises(InvalidEventError) as exc:
        event_from_mapping({**BASE, "big": 2.0**40})
    assert "32 bits" in paths(exc)["/big"]
