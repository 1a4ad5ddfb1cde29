"""``/v1/namespaces/{namespace}/deadletters``: inspect, replay and purge dead letters.

A dead letter is an event whose dispatch failed on every attempt. Replaying one puts the
event back in the dispatch queue (in the same transaction that marks the letter
Replayed); purging deletes letters for good.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from plait.api.context import DATABASE, namespace_of
from plait.api.problems import Problem
from plait.event_processing import repository
from plait.event_processing.cloudevents import parse_rfc3339
from plait.event_processing.repository import DeadLetter
from plait.event_processing.states import DeadLetterStatus
from plait.kernel.database import MAX_PAGE_SIZE

__all__ = ["add_routes", "dead_letter_json"]


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": str(letter.id),
        "namespace": letter.namespace,
        "eventInstanceId": str(letter.event_instance_id) if letter.event_instance_id else None,
        "source": letter.source,
        "eventId": letter.event_id,
        "type": letter.type,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "status": str(letter.status),
        "createdAt": letter.created_at.isoformat(),
        "resolvedAt": letter.resolved_at.isoformat() if letter.resolved_at else None,
        "payload": letter.payload,
    }


def _bad_request(detail: str, path: str = "") -> Problem:
    return Problem(
        400, "invalid-request", "Invalid request", detail, errors=[{"path": path, "reason": detail}]
    )


def _letter_id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _bad_request(f"dead letter id {raw[:80]!r} is not a UUID") from None


def _not_found(namespace: str, id_: uuid.UUID) -> Problem:
    return Problem(
        404, "not-found", "Not found", f"no dead letter {id_} in namespace {namespace!r}"
    )


async def list_letters(request: web.Request) -> web.Response:
    namespace = namespace_of(request)
    query = request.query
    status: DeadLetterStatus | None = None
    if query.get("status"):
        try:
            status = DeadLetterStatus(query["status"])
        except ValueError:
            allowed = ", ".join(s.value for s in DeadLetterStatus)
            raise _bad_request(
                f"status must be one of {allowed}, got {query['status'][:40]!r}", "status"
            ) from None
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise _bad_request("limit must be an integer", "limit") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise _bad_request(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}", "limit")
    async with request.app[DATABASE].connection("event_processing") as conn:
        page = await repository.list_dead_letters(
            conn, namespace, limit=limit, cursor=query.get("cursor") or None, status=status
        )
    return web.json_response(
        {"items": [dead_letter_json(d) for d in page.items], "nextCursor": page.next_cursor}
    )


async def show_letter(request: web.Request) -> web.Response:
    namespace, id_ = namespace_of(request), _letter_id(request)
    async with request.app[DATABASE].connection("event_processing") as conn:
        letter = await repository.get_dead_letter(conn, namespace, id_)
    if letter is None:
        raise _not_found(namespace, id_)
    return web.json_response(dead_letter_json(letter))


async def replay_letter(request: web.Request) -> web.Response:
    namespace, id_ = namespace_of(request), _letter_id(request)
    async with (
        request.app[DATABASE].connection("event_processing") as conn,
        conn.transaction(),
    ):
        replayed = await repository.replay_dead_letter(conn, namespace, id_)
        if replayed is None:
            letter = await repository.get_dead_letter(conn, namespace, id_)
    if replayed is not None:
        return web.json_response(dead_letter_json(replayed))
    if letter is None:
        raise _not_found(namespace, id_)
    raise Problem(
        409,
        "not-open",
        "Dead letter is not open",
        f"dead letter {id_} is {letter.status}; only Open dead letters can be replayed",
    )


async def delete_letter(request: web.Request) -> web.Response:
    namespace, id_ = namespace_of(request), _letter_id(request)
    async with request.app[DATABASE].connection("event_processing") as conn:
        deleted = await repository.purge_dead_letters(conn, namespace, ids=[id_])
    if not deleted:
        raise _not_found(namespace, id_)
    return web.Response(status=204)


async def purge_letters(request: web.Request) -> web.Response:
    """``{"ids": [...]}`` and/or ``{"olderThan": RFC 3339}``: delete the letters that match."""
    namespace = namespace_of(request)
    raw = await request.content.read(64 * 1024 + 1)
    if len(raw) > 64 * 1024:
        raise Problem(
            413, "payload-too-large", "Payload too large", "a purge request is at most 65536 bytes"
        )
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad_request(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad_request('the body must be a JSON object: {"ids": [...]} or {"olderThan": ...}')
    unknown = sorted(set(body) - {"ids", "olderThan"})
    if unknown:
        raise _bad_request(
            f"unknown field {unknown[0]!r}: expected ids or olderThan", f"/{unknown[0]}"
        )
    ids: list[uuid.UUID] | None = None
    older_than: datetime | None = None
    if body.get("ids") is not None:
        if not isinstance(body["ids"], list) or not body["ids"]:
            raise _bad_request("ids must be a non-empty array of UUIDs", "/ids")
        try:
            ids = [uuid.UUID(str(i)) for i in body["ids"]]
        except ValueError:
            raise _bad_request("ids must be a non-empty array of UUIDs", "/ids") from None
    if body.get("olderThan") is not None:
        try:
            older_than = parse_rfc3339(str(body["olderThan"]))
        except ValueError as exc:
            raise _bad_request(f"olderThan {exc}", "/olderThan") from None
    if ids is None and older_than is None:
        raise _bad_request('say what to purge: {"ids": [...]} or {"olderThan": "<RFC 3339>"}')
    async with request.app[DATABASE].connection("event_processing") as conn:
        purged = await repository.purge_dead_letters(
            conn, namespace, ids=ids, older_than=older_than
        )
    return web.json_response({"purged": purged})


def add_routes(app: web.Application) -> None:
    base = "/v1/namespaces/{namespace}/deadletters"
    app.router.add_get(base, list_letters)
    app.router.add_post(base + "/purge", purge_letters)
    app.router.add_get(base + "/{id}", show_letter)
    app.router.add_delete(base + "/{id}", delete_letter)
    app.router.add_post(base + "/{id}/replay", replay_letter)
