"""Event ingestion over HTTP, in process, against a real migrated PostgreSQL.

The application connects as the event_processing role, so these tests also prove that the
role's grants are enough. Every refused request is checked to have changed nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import psycopg
import pytest

from plait.event_processing import repository
from tests.api.conftest import AUTH, BATCH, STRUCTURED, TOKEN, URL, Api, ce


async def test_binary_mode_is_stored_after_commit(api: Api) -> None:
    headers = {
        **AUTH,
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/shop",
        "ce-type": "order.created",
        "ce-subject": "order-7",
        "ce-traceparent": "00-1-2-01",
        "Content-Type": "application/json",
    }
    resp = await api.client.post(URL, data=b'{"amount": 12}', headers=headers)
    assert resp.status == 202, await resp.text()
    assert await resp.json() == {
        "id": "b-1",
        "source": "/shop",
        "stored": True,
        "position": 1,
        "partitionKey": "order-7",
    }
    rows = await api.rows(
        "SELECT namespace, type, subject, data, extensions, data_content_type "
        "FROM event_processing_service.event_instances"
    )
    assert rows == [
        ("shop", "order.created", "order-7", {"amount": 12}, {"traceparent": "00-1-2-01"},
         "application/json")
    ]  # fmt: skip
    queued = await api.rows("SELECT state FROM event_processing_service.event_queue_state")
    assert queued == [("Pending",)]


async def test_binary_mode_non_json_payload_is_kept_as_base64(api: Api) -> None:
    headers = {**AUTH, "ce-specversion": "1.0", "ce-id": "b-2", "ce-source": "/s",
               "ce-type": "blob", "Content-Type": "application/octet-stream"}  # fmt: skip
    resp = await api.client.post(URL, data=b"\x00\x01\xff", headers=headers)
    assert resp.status == 202
    rows = await api.rows("SELECT data, data_base64 FROM event_processing_service.event_instances")
    assert rows == [(None, "AAH/")]


async def test_structured_mode(api: Api) -> None:
    resp = await api.client.post(
        URL, data=json.dumps(ce("s-1", data={"amount": 1})), headers=STRUCTURED
    )
    assert resp.status == 202
    assert (await resp.json())["position"] is None  # no partition key: unordered


async def test_a_duplicate_is_acknowledged_and_stored_once(api: Api) -> None:
    body = json.dumps(ce("dup", partitionkey="k", data={"n": 1}))
    first = await api.client.post(URL, data=body, headers=STRUCTURED)
    assert first.status == 202
    again = await api.client.post(URL, data=body, headers=STRUCTURED)
    assert again.status == 200
    assert await again.json() == {
        "id": "dup", "source": "/shop", "stored": False, "position": 1, "partitionKey": "k"
    }  # fmt: skip
    assert await api.snapshot() == (1, 1, 1)  # one event, one queue row, one position used


async def test_batch_positions_are_per_type_and_key(api: Api) -> None:
    events = [
        ce("a1", partitionkey="k"),
        ce("a2", subject="k"),  # the subject is the key when there is no partitionkey
        ce("a3", partitionkey="other"),
        ce("a4", partitionkey="k", type="order.paid"),
        ce("a5", partitionkey="k"),
    ]
    resp = await api.client.post(URL, data=json.dumps(events), headers=BATCH)
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert (body["stored"], body["duplicates"]) == (5, 0)
    assert [(e["id"], e["partitionKey"], e["position"]) for e in body["events"]] == [
        ("a1", "k", 1), ("a2", "k", 2), ("a3", "other", 1), ("a4", "k", 1), ("a5", "k", 3),
    ]  # fmt: skip
    # Sent again, with one new event: duplicates keep their positions, the new one goes on.
    resp = await api.client.post(URL, data=json.dumps([*events[:2], ce("a6", partitionkey="k")]),
                                 headers=BATCH)  # fmt: skip
    body = await resp.json()
    assert resp.status == 202
    assert [(e["stored"], e["position"]) for e in body["events"]] == [
        (False, 1), (False, 2), (True, 4)
    ]  # fmt: skip
    only_duplicates = await api.client.post(URL, data=json.dumps(events[:1]), headers=BATCH)
    assert only_duplicates.status == 200


async def test_schema_violation_is_422_with_the_failing_path(api: Api) -> None:
    async with await psycopg.AsyncConnection.connect(api.dsn, autocommit=True) as conn:
        schema = {
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "number"}},
        }
        await repository.upsert_event_definition(
            conn, "shop", "order-created", "order.created", {"type": "order.created",
                                                             "schema": schema}
        )  # fmt: skip
    before = await api.snapshot()
    resp = await api.client.post(
        URL, data=json.dumps(ce("v-1", data={"amount": "ten"})), headers=STRUCTURED
    )
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["errors"] == [
        {"path": "/data/amount", "reason": "'ten' is not of type 'number'"}
    ]
    # In a batch the index leads the path, and one bad event stores none of the batch.
    resp = await api.client.post(
        URL,
        data=json.dumps([ce("v-2", data={"amount": 1}), ce("v-3", data={})]),
        headers=BATCH,
    )
    assert resp.status == 422
    assert (await resp.json())["errors"] == [
        {"path": "/1/data", "reason": "'amount' is a required property"}
    ]
    assert await api.snapshot() == before
    ok = await api.client.post(URL, data=json.dumps(ce("v-4", data={"amount": 2})),
                               headers=STRUCTURED)  # fmt: skip
    assert ok.status == 202
    other_ns = await api.client.post(
        "/v1/namespaces/other/events", data=json.dumps(ce("v-5", data="x")), headers=STRUCTURED
    )
    assert other_ns.status == 202  # definitions are per namespace


async def test_concurrent_requests_are_answered_each_for_its_own_events(api: Api) -> None:
    """Requests sent together share transactions (group commit), yet each gets its own
    answer: the one violating its schema is refused alone, a duplicate sent twice at once
    is stored once, and every acknowledged event is committed with its own position."""
    async with await psycopg.AsyncConnection.connect(api.dsn, autocommit=True) as conn:
        schema = {"type": "object", "properties": {"amount": {"type": "number"}}}
        await repository.upsert_event_definition(
            conn, "shop", "order-created", "order.created", {"type": "order.created",
                                                             "schema": schema}
        )  # fmt: skip
    bodies = [ce(f"g-{n}", partitionkey="k", data={"amount": n}) for n in range(12)]
    bodies.append(ce("g-bad", partitionkey="k", data={"amount": "ten"}))
    bodies += [ce("g-twice", partitionkey="k", data={"amount": 1})] * 2

    async def post(body: dict[str, object]) -> tuple[int, dict[str, object]]:
        resp = await api.client.post(URL, data=json.dumps(body), headers=STRUCTURED)
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(post(body) for body in bodies))
    assert [status for status, _ in answers[:12]] == [202] * 12
    assert answers[12][0] == 422
    assert answers[12][1]["errors"] == [
        {"path": "/data/amount", "reason": "'ten' is not of type 'number'"}
    ]
    assert sorted(status for status, _ in answers[13:]) == [200, 202]
    assert answers[13][1]["position"] == answers[14][1]["position"]
    positions = sorted(int(str(body["position"])) for _, body in answers[:12] + answers[13:14])
    assert positions == list(range(1, 14))
    assert await api.snapshot() == (13, 13, 13)


@pytest.mark.parametrize(
    ("body", "headers", "path", "reason"),
    [
        (b'{"specversion": "1.0", "id": ', STRUCTURED, "", "invalid JSON at line 1"),
        (json.dumps({k: v for k, v in ce("m").items() if k != "source"}), STRUCTURED, "/source",
         "required attribute is missing"),
        (json.dumps(ce("m", specversion="0.3")), STRUCTURED, "/specversion",
         "unsupported specversion '0.3'"),
        (b'{"amount": 1}', {**AUTH, "Content-Type": "application/json"}, "",
         "no ce-specversion, ce-id, ce-source or ce-type header"),
        (json.dumps([ce("p1"), ce("p2", time="soon")]), BATCH, "/1/time", "RFC 3339"),
        (b"[", BATCH, "", "invalid JSON"),
    ],
)  # fmt: skip
async def test_malformed_input_is_400_naming_the_problem_and_changes_nothing(
    api: Api, body: bytes | str, headers: dict[str, str], path: str, reason: str
) -> None:
    resp = await api.client.post(URL, data=body, headers=headers)
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["status"] == 400
    [error] = [e for e in problem["errors"] if e["path"] == path]
    assert reason in error["reason"]
    assert await api.snapshot() == (0, 0, 0)


async def test_oversized_requests_get_413_naming_the_limit_and_change_nothing(api: Api) -> None:
    big = json.dumps(ce("big", data="x" * 3000))
    resp = await api.client.post(URL, data=big, headers=STRUCTURED)
    assert resp.status == 413
    detail = (await resp.json())["detail"]
    assert f"the event is {len(big)} bytes; the limit is 2048 bytes" in detail
    assert "--max-event-bytes" in detail

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap is on the stream
        for _ in range(10):
            yield b" " * 1000

    resp = await api.client.post(URL, data=chunks(), headers=STRUCTURED)
    assert resp.status == 413
    assert "more than 2048 bytes" in (await resp.json())["detail"]

    too_many = json.dumps([ce(f"n{i}") for i in range(6)])
    resp = await api.client.post(URL, data=too_many, headers=BATCH)
    assert resp.status == 413
    assert "holds 6 events; the limit is 5 events" in (await resp.json())["detail"]

    one_too_big = json.dumps([ce("ok"), ce("huge", data="y" * 3000)])
    resp = await api.client.post(URL, data=one_too_big, headers=BATCH)
    assert resp.status == 413
    assert "event /1 is" in (await resp.json())["detail"]

    resp = await api.client.post(URL, data=json.dumps([ce("z", data="z" * 1500)] * 12),
                                 headers=BATCH)  # fmt: skip
    assert resp.status == 413
    assert "--max-batch-bytes" in (await resp.json())["detail"]
    assert await api.snapshot() == (0, 0, 0)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", "Basic czNjcmV0LXRva2Vu", "Bearer "]
)
async def test_missing_or_wrong_token_is_401(api: Api, authorization: str | None) -> None:
    headers = {"Content-Type": "application/cloudevents+json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    resp = await api.client.post(URL, data=json.dumps(ce("t")), headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="plait"')
    assert TOKEN not in await resp.text()
    listing = await api.client.get("/v1/namespaces/shop/deadletters", headers=headers)
    assert listing.status == 401
    assert await api.snapshot() == (0, 0, 0)
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await api.client.get(open_path)).status == 200


async def test_invalid_namespace_and_unsupported_media_type(api: Api) -> None:
    resp = await api.client.post(
        "/v1/namespaces/Not_A_Namespace/events", data=json.dumps(ce("x")), headers=STRUCTURED
    )
    assert resp.status == 400
    assert "is not a namespace name" in (await resp.json())["detail"]
    resp = await api.client.post(
        URL, data=b"<x/>", headers={**AUTH, "Content-Type": "application/cloudevents+xml"}
    )
    assert resp.status == 415


async def test_metrics_count_outcomes(api: Api) -> None:
    async def counts() -> dict[str, float]:
        text = await (await api.client.get("/metrics")).text()
        found = {}
        for outcome in ("stored", "duplicate", "rejected"):
            line = f'plait_events_ingested_total{{outcome="{outcome}"}} '
            (value,) = [row[len(line) :] for row in text.splitlines() if row.startswith(line)]
            found[outcome] = float(value)
        return found

    before = await counts()
    await api.client.post(URL, data=json.dumps(ce("m1")), headers=STRUCTURED)
    await api.client.post(URL, data=json.dumps(ce("m1")), headers=STRUCTURED)
    await api.client.post(URL, data=b"{", headers=STRUCTURED)
    after = await counts()
    assert {k: after[k] - before[k] for k in after} == {
        "stored": 1.0,
        "duplicate": 1.0,
        "rejected": 1.0,
    }
    text = await (await api.client.get("/metrics")).text()
    assert "plait_api_request_duration_seconds_bucket" in text
