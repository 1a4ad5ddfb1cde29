"""Dead letters over HTTP (list, show, replay, delete, purge) and the OpenAPI document."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import psycopg
from openapi_spec_validator import validate

from plait.api.dashboard import DASHBOARD_ROUTES
from plait.api.routes import document
from plait.event_processing import repository
from plait.web_application.pages import PREFIX
from tests.api.conftest import AUTH, STRUCTURED, URL, Api, ce

DLQ = "/v1/namespaces/shop/deadletters"


async def dead_letter(api: Api, event_id: str) -> uuid.UUID:
    """Send an event (max_attempts is 1 in the fixture), fail its one dispatch attempt."""
    resp = await api.client.post(URL, data=json.dumps(ce(event_id, data={"n": 1})),
                                 headers=STRUCTURED)  # fmt: skip
    assert resp.status == 202
    async with await psycopg.AsyncConnection.connect(api.dsn, autocommit=True) as conn:
        [item] = await repository.lease(conn, "test-worker", limit=1)
        failed = await repository.fail(
            conn, item.event_instance_id, "test-worker", "boom", retry_in=timedelta(0)
        )
        assert failed is not None
        row = await (
            await conn.execute(
                "SELECT id FROM event_processing_service.dead_letter_queue WHERE event_id = %s",
                (event_id,),
            )
        ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


async def test_list_show_replay_and_purge(api: Api) -> None:
    first = await dead_letter(api, "d1")
    second = await dead_letter(api, "d2")
    resp = await api.client.get(DLQ, headers=AUTH)
    assert resp.status == 200
    page = await resp.json()
    assert [i["id"] for i in page["items"]] == [str(second), str(first)]  # newest first
    assert page["nextCursor"] is None
    one = await (await api.client.get(DLQ, params={"limit": "1"}, headers=AUTH)).json()
    assert [i["id"] for i in one["items"]] == [str(second)]
    rest = await (
        await api.client.get(DLQ, params={"limit": "1", "cursor": one["nextCursor"]}, headers=AUTH)
    ).json()
    assert [i["id"] for i in rest["items"]] == [str(first)]

    shown = await (await api.client.get(f"{DLQ}/{first}", headers=AUTH)).json()
    assert (shown["status"], shown["reason"], shown["attempts"]) == ("Open", "boom", 1)
    assert shown["payload"]["data"] == {"n": 1}

    replayed = await api.client.post(f"{DLQ}/{first}/replay", headers=AUTH)
    assert replayed.status == 200
    assert (await replayed.json())["status"] == "Replayed"
    state = await api.rows(
        "SELECT q.state, q.attempts FROM event_processing_service.event_queue_state q "
        "JOIN event_processing_service.event_instances e ON e.id = q.event_instance_id "
        "WHERE e.event_id = 'd1'"
    )
    assert state == [("Pending", 0)]  # back in the queue, with fresh attempts
    again = await api.client.post(f"{DLQ}/{first}/replay", headers=AUTH)
    assert again.status == 409
    assert "only Open dead letters" in (await again.json())["detail"]

    open_only = await (await api.client.get(DLQ, params={"status": "Open"}, headers=AUTH)).json()
    assert [i["id"] for i in open_only["items"]] == [str(second)]

    assert (await api.client.delete(f"{DLQ}/{second}", headers=AUTH)).status == 204
    assert (await api.client.delete(f"{DLQ}/{second}", headers=AUTH)).status == 404
    purged = await api.client.post(f"{DLQ}/purge", json={"olderThan": "2999-01-01T00:00:00Z"},
                                   headers=AUTH)  # fmt: skip
    assert await purged.json() == {"purged": 1}
    assert (await api.client.get(f"{DLQ}/{first}", headers=AUTH)).status == 404
    # The events themselves stay: purging dead letters deletes only the letters.
    assert (await api.snapshot())[0] == 2


async def test_purge_by_ids_and_bad_requests(api: Api) -> None:
    letter = await dead_letter(api, "p1")
    before = await api.rows("SELECT id FROM event_processing_service.dead_letter_queue")
    bad = [
        ({}, "say what to purge"),
        ({"ids": []}, "non-empty array"),
        ({"ids": ["nope"]}, "non-empty array"),
        ({"olderThan": "last week"}, "RFC 3339"),
        ({"everything": True}, "unknown field 'everything'"),
    ]
    for body, reason in bad:
        resp = await api.client.post(f"{DLQ}/purge", json=body, headers=AUTH)
        assert resp.status == 400, body
        assert reason in (await resp.json())["detail"]
    assert (await api.client.get(DLQ, params={"status": "Lost"}, headers=AUTH)).status == 400
    assert (await api.client.get(DLQ, params={"limit": "0"}, headers=AUTH)).status == 400
    assert (await api.client.get(DLQ, params={"cursor": "zzz"}, headers=AUTH)).status == 400
    assert (await api.client.get(f"{DLQ}/not-a-uuid", headers=AUTH)).status == 400
    assert (await api.client.post(f"{DLQ}/{uuid.uuid4()}/replay", headers=AUTH)).status == 404
    other = await api.client.get(f"/v1/namespaces/other/deadletters/{letter}", headers=AUTH)
    assert other.status == 404  # namespaces do not see each other's letters
    assert await api.rows("SELECT id FROM event_processing_service.dead_letter_queue") == before
    resp = await api.client.post(f"{DLQ}/purge", json={"ids": [str(letter)]}, headers=AUTH)
    assert await resp.json() == {"purged": 1}


async def test_openapi_document_is_valid_and_lists_every_route(api: Api) -> None:
    resp = await api.client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    validate(doc)
    assert doc == document()
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in api.client.app.router.routes()  # type: ignore[union-attr]
        if route.resource is not None and route.method != "HEAD"
    }
    # The dashboard's HTML pages are not the JSON API: their own table declares them.
    pages = {(p.method.lower(), p.path) for p in DASHBOARD_ROUTES}
    pages.add(("get", f"{PREFIX}/static/{{path}}"))
    assert pages <= served
    described = {(method, path) for path, item in doc["paths"].items() for method in item
                 if method != "parameters"}  # fmt: skip
    assert served - pages == described
