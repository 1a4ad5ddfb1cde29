"""Bad input is a precise 4xx that names the field, and changes nothing.

One test per class of input that an outside fuzz of ``plait api`` found answered with a
500 (or a 503 that made clients retry forever). Each request goes through the real
application against a real PostgreSQL, and each test checks that no table changed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from plait.api.auth import TokenStore
from plait.api.context import ApiConfig
from plait.event_processing import cloudevents
from plait.event_processing.cloudevents import (
    MAX_DATA_DEPTH,
    MAX_EXTENSION_NAME_LENGTH,
    MAX_EXTENSION_VALUE_LENGTH,
    MAX_LENGTHS,
)
from tests.api.conftest import AUTH, BATCH, STRUCTURED, TOKEN, URL, Api, ce, serve_in_process
from tests.api.test_deadletters import dead_letter

DLQ = "/v1/namespaces/shop/deadletters"
BINARY = {**AUTH, "ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/shop",
          "ce-type": "order.created"}  # fmt: skip


@pytest.fixture
async def roomy_api(migrated_database: str, component_dsns: dict[str, str]) -> AsyncIterator[Api]:
    """The default size limits (256 KiB per event), so every attribute can reach its limit."""
    config = ApiConfig(tokens=TokenStore([TOKEN]))
    async with serve_in_process(migrated_database, component_dsns, config) as api:
        yield api


async def refused(
    api: Api, resp_status: int, body: dict[str, Any], status: int = 400
) -> dict[str, str]:
    """The problem's errors as {path: reason}, after checking the status and that nothing
    was stored."""
    assert resp_status == status, body
    assert body["status"] == status
    assert await api.snapshot() == (0, 0, 0)
    return {e["path"]: e["reason"] for e in body.get("errors") or []}


async def post(api: Api, body: bytes | str, headers: dict[str, str]) -> tuple[int, Any]:
    resp = await api.client.post(URL, data=body, headers=headers)
    assert resp.content_type == "application/problem+json", await resp.text()
    return resp.status, await resp.json()


async def raw_request(api: Api, head: bytes, body: bytes = b"") -> tuple[int, Any]:
    """Send bytes no HTTP client library would send (invalid UTF-8 in a header)."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


def request_head(*headers: bytes, length: int = 0) -> bytes:
    lines = [
        b"POST " + URL.encode() + b" HTTP/1.1",
        b"Host: plait",
        b"Connection: close",
        b"Authorization: Bearer " + TOKEN.encode(),
        b"Content-Length: " + str(length).encode(),
        *headers,
    ]
    return b"\r\n".join(lines) + b"\r\n"


async def test_invalid_utf8_in_a_ce_header(api: Api) -> None:
    head = request_head(b"ce-specversion: 1.0", b"ce-id: caf\xe9", b"ce-source: /s", b"ce-type: t")
    errors = await refused(api, *await raw_request(api, head))
    assert "ce-id" in errors["/id"]
    assert "UTF-8" in errors["/id"]
    # Percent-encoded bytes (the binding's encoding) must be UTF-8 as well.
    status, body = await post(api, b"", {**BINARY, "ce-subject": "caf%E9"})
    assert "UTF-8" in (await refused(api, status, body))["/subject"]


@pytest.mark.parametrize(
    ("body", "headers", "path"),
    [
        (json.dumps(ce("a\u0000b")), STRUCTURED, "/id"),
        (json.dumps(ce("n", traceid="x\u0000")), STRUCTURED, "/traceid"),
        (json.dumps(ce("n", data={"note": ["ok", "a\u0000"]})), STRUCTURED, "/data/note/1"),
        (json.dumps(ce("n", data={"k\u0000": 1})), STRUCTURED, "/data/k\u0000"),
        (json.dumps([ce("n1"), ce("n2", subject="\u0000")]), BATCH, "/1/subject"),
        (b"", {**BINARY, "ce-subject": "a%00b"}, "/subject"),
        (b'{"v": "\\u0000"}', {**BINARY, "Content-Type": "application/json"}, "/data/v"),
    ],
)  # fmt: skip
async def test_a_nul_character(
    api: Api, body: bytes | str, headers: dict[str, str], path: str
) -> None:
    errors = await refused(api, *await post(api, body, headers))
    assert "NUL" in errors[path]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"specversion": "1.0", "id": "\\ud800", "source": "/s", "type": "t"}', "/id"),
        (b'{"specversion": "1.0", "id": "i", "source": "/s", "type": "t", '
         b'"data": {"x": ["\\udfff"]}}', "/data/x/0"),
        # Encoded surrogates are not UTF-8 either (a lenient decoder would let them through).
        (b'{"specversion": "1.0", "id": "i", "source": "/s", "type": "t", '
         b'"data": "\xed\xa0\x80"}', ""),
    ],
)  # fmt: skip
async def test_a_lone_surrogate(api: Api, body: bytes, path: str) -> None:
    errors = await refused(api, *await post(api, body, STRUCTURED))
    assert "surrogate" in errors[path] or "UTF-8" in errors[path]


async def test_non_ascii_base64(api: Api) -> None:
    errors = await refused(
        api, *await post(api, json.dumps(ce("b", data_base64="AAé=")), STRUCTURED)
    )
    assert "base64" in errors["/data_base64"]


@pytest.mark.parametrize("depth", [MAX_DATA_DEPTH + 1, 10_000])
async def test_json_nested_too_deep(roomy_api: Api, depth: int) -> None:
    api = roomy_api
    data = "[" * depth + "]" * depth
    body = json.dumps(ce("deep"))[:-1] + ', "data": ' + data + "}"
    errors = await refused(api, *await post(api, body, STRUCTURED))
    assert f"at most {MAX_DATA_DEPTH} levels" in errors["/data"]
    batch = "[" + json.dumps(ce("ok")) + ", " + body + "]"
    errors = await refused(api, *await post(api, batch, BATCH))
    assert f"at most {MAX_DATA_DEPTH} levels" in errors["/1/data"]
    binary = {**BINARY, "Content-Type": "application/json"}
    errors = await refused(api, *await post(api, data, binary))
    assert f"at most {MAX_DATA_DEPTH} levels" in errors["/data"]


async def test_data_at_the_depth_limit_is_stored(api: Api) -> None:
    data = "[" * MAX_DATA_DEPTH + "]" * MAX_DATA_DEPTH
    body = json.dumps(ce("deep"))[:-1] + ', "data": ' + data + "}"
    resp = await api.client.post(URL, data=body, headers=STRUCTURED)
    assert resp.status == 202, await resp.text()


async def test_a_100000_digit_integer(roomy_api: Api) -> None:
    api = roomy_api
    body = json.dumps(ce("big"))[:-1] + ', "data": {"n": ' + "7" * 100_000 + "}}"
    errors = await refused(api, *await post(api, body, STRUCTURED))
    assert "digits" in errors["/data/n"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-2e308"])
async def test_non_finite_numbers(api: Api, number: str) -> None:
    body = json.dumps(ce("nan"))[:-1] + ', "data": {"x": [1, ' + number + "]}}"
    errors = await refused(api, *await post(api, body, STRUCTURED))
    assert "finite" in errors["/data/x/1"]
    binary = {**BINARY, "Content-Type": "application/json"}
    errors = await refused(api, *await post(api, number, binary))
    assert "finite" in errors["/data"]
    # An extension attribute is no way around it either.
    body = json.dumps(ce("nan"))[:-1] + ', "retries": ' + number + "}"
    assert "/retries" in await refused(api, *await post(api, body, STRUCTURED))


@pytest.mark.parametrize(
    "time", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-00:01", "0000-01-01T00:00:00Z"]
)
async def test_time_outside_years_1_to_9999_in_utc(api: Api, time: str) -> None:
    errors = await refused(api, *await post(api, json.dumps(ce("t", time=time)), STRUCTURED))
    assert "9999" in errors["/time"]
    errors = await refused(api, *await post(api, b"", {**BINARY, "ce-time": time}))
    assert "9999" in errors["/time"]


async def test_gzip_body_that_is_not_gzip(api: Api) -> None:
    body = json.dumps(ce("gz")).encode()
    head = request_head(
        b"Content-Type: application/cloudevents+json", b"Content-Encoding: gzip", length=len(body)
    )
    status, problem = await raw_request(api, head, body)
    assert status == 400, problem
    assert "gzip" in problem["detail"]
    assert await api.snapshot() == (0, 0, 0)


@pytest.mark.parametrize("attribute", [*sorted(MAX_LENGTHS), "extension name", "extension value"])
async def test_every_attribute_has_a_length_limit(roomy_api: Api, attribute: str) -> None:
    api = roomy_api
    event = ce("long")
    if attribute == "extension name":
        limit = MAX_EXTENSION_NAME_LENGTH
        event["e" * (limit + 1)] = "v"
        path = "/" + "e" * (limit + 1)
    elif attribute == "extension value":
        limit = MAX_EXTENSION_VALUE_LENGTH
        event["note"] = "v" * (limit + 1)
        path = "/note"
    else:
        limit = MAX_LENGTHS[attribute]
        event[attribute] = "x" * (limit + 1)
        path = f"/{attribute}"
    errors = await refused(api, *await post(api, json.dumps(event), STRUCTURED))
    assert f"at most {limit} characters" in errors[path]


async def test_the_id_that_answered_503(roomy_api: Api) -> None:
    """A 4,000-character id broke PostgreSQL's index row limit, answered as an outage."""
    api = roomy_api
    resp = await api.client.post(URL, data=json.dumps(ce("i" * 4000)), headers=STRUCTURED)
    assert "Retry-After" not in resp.headers
    errors = await refused(api, resp.status, await resp.json())
    assert "at most" in errors["/id"]
    status, body = await post(api, b"", {**BINARY, "ce-id": "i" * 4000})
    assert "at most" in (await refused(api, status, body))["/id"]


async def test_attributes_at_their_limits_in_four_byte_characters_are_stored(
    roomy_api: Api,
) -> None:
    """The limits are in characters; at 4 bytes each the unique keys still fit an index row."""
    api = roomy_api
    wide = "\U0001f600"
    event = ce(
        wide * MAX_LENGTHS["id"],
        source=wide * MAX_LENGTHS["source"],
        type=wide * MAX_LENGTHS["type"],
        subject=wide * MAX_LENGTHS["subject"],
        partitionkey=wide * MAX_LENGTHS["partitionkey"],
    )
    resp = await api.client.post(URL, data=json.dumps(event), headers=STRUCTURED)
    assert resp.status == 202, await resp.text()
    again = await api.client.post(URL, data=json.dumps(event), headers=STRUCTURED)
    assert again.status == 200


async def test_dead_letter_routes_answer_only_documented_statuses(api: Api) -> None:
    doc = await (await api.client.get("/openapi.json")).json()
    letter = f"{DLQ}/not-a-uuid"
    for method, path, documented in [
        ("post", "/replay", "/v1/namespaces/{namespace}/deadletters/{id}/replay"),
        ("get", "", "/v1/namespaces/{namespace}/deadletters/{id}"),
        ("delete", "", "/v1/namespaces/{namespace}/deadletters/{id}"),
    ]:
        resp = await api.client.request(method, letter + path, headers=AUTH)
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["path"] == "id"
        assert "400" in doc["paths"][documented][method]["responses"]
    resp = await api.client.post(f"{DLQ}/purge", data=b" " * 70_000, headers=AUTH)
    assert resp.status == 413
    assert (
        "413" in doc["paths"]["/v1/namespaces/{namespace}/deadletters/purge"]["post"]["responses"]
    )
    for path, item in doc["paths"].items():
        if path.startswith("/v1/"):
            for method, operation in item.items():
                if method != "parameters":
                    assert "503" in operation["responses"], (method, path)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"[" * 10_000 + b"]" * 10_000, ""),
        (b'{"ids": ["\\u0000"]}', "/ids"),
        (b'{"olderThan": "0001-01-01T00:00:00+01:00"}', "/olderThan"),
        (b'{"olderThan": NaN}', "/olderThan"),
    ],
)
async def test_bad_purge_bodies(api: Api, body: bytes, path: str) -> None:
    await dead_letter(api, "kept")
    letters = "SELECT id, status FROM event_processing_service.dead_letter_queue"
    before = await api.rows(letters)
    resp = await api.client.post(f"{DLQ}/purge", data=body, headers=AUTH)
    assert resp.status == 400, await resp.text()
    assert path in {e["path"] for e in (await resp.json())["errors"]}
    assert await api.rows(letters) == before


async def test_every_bad_query_parameter_is_named(api: Api) -> None:
    resp = await api.client.get(
        DLQ, params={"status": "Lost", "limit": "0", "cursor": "zzz"}, headers=AUTH
    )
    assert resp.status == 400
    errors = {e["path"]: e["reason"] for e in (await resp.json())["errors"]}
    assert set(errors) == {"status", "limit", "cursor"}
    assert "invalid page cursor" in errors["cursor"]
    resp = await api.client.get(DLQ, params={"cursor": ""}, headers=AUTH)
    assert resp.status == 200  # an empty cursor is the first page


async def test_a_database_limit_is_not_answered_as_an_outage(
    roomy_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a value to slip past the limits, PostgreSQL's refusal is a 500 to fix, not a
    503 that tells clients to retry forever."""
    monkeypatch.setattr(cloudevents, "MAX_LENGTHS", {**cloudevents.MAX_LENGTHS, "id": 10**6})
    event_id = secrets.token_hex(4000)  # incompressible: over the index row limit
    resp = await roomy_api.client.post(URL, data=json.dumps(ce(event_id)), headers=STRUCTURED)
    assert resp.status == 500
    assert "Retry-After" not in resp.headers
    assert (await resp.json())["type"].endswith("/internal-error")
    assert await roomy_api.snapshot() == (0, 0, 0)
