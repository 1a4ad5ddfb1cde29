"""``/v1/namespaces/{namespace}/deadletters``: inspect, replay and purge dead letters.

A dead letter is an event whose dispatch failed on every attempt. Replaying one puts the
event back in the dispatch queue (in the same transaction that marks the letter
Replayed); purging deletes letters for good.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from plait.api.context import DATABASE, namespace_of, read_capped, validated
from plait.api.models import DeadLetter as DeadLetterModel
from plait.api.models import DeadLetterPage, DeadLetterQuery, PurgeRequest, PurgeResult
from plait.api.problems import Problem
from plait.event_processing import repository
from plait.event_processing.cloudevents import load_json
from plait.event_processing.repository import DeadLetter

__all__ = [
    "MAX_PURGE_BYTES",
    "dead_letter_model",
    "delete_letter",
    "list_letters",
    "purge_letters",
    "replay_letter",
    "show_letter",
]

MAX_PURGE_BYTES = 64 * 1024


def dead_letter_model(letter: DeadLetter) -> DeadLetterModel:
    return DeadLetterModel.model_validate(
        {
            "id": letter.id,
            "namespace": letter.namespace,
            "event_instance_id": letter.event_instance_id,
            "source": letter.source,
            "event_id": letter.event_id,
            "type": letter.type,
            "reason": letter.reason,
            "attempts": letter.attempts,
            "status": letter.status,
            "created_at": letter.created_at,
            "resolved_at": letter.resolved_at,
            "payload": letter.payload,
        }
    )


def _json(model: DeadLetterModel | DeadLetterPage | PurgeResult) -> web.Response:
    # warnings=False: a dead letter's payload is a stored dict, not a CloudEvent model.
    return web.json_response(model.model_dump(mode="json", by_alias=True, warnings=False))


def _bad_request(detail: str, path: str = "") -> Problem:
    return Problem(
        400, "invalid-request", "Invalid request", detail, errors=[{"path": path, "reason": detail}]
    )


def _letter_id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _bad_request(f"dead letter id {raw[:80]!r} is not a UUID", "id") from None


def _not_found(namespace: str, id_: uuid.UUID) -> Problem:
    return Problem(
        404, "not-found", "Not found", f"no dead letter {id_} in namespace {namespace!r}"
    )


async def list_letters(request: web.Request) -> web.Response:
    namespace = namespace_of(request)
    query = validated(DeadLetterQuery, dict(request.query), pointer=False)
    async with request.app[DATABASE].connection("event_processing") as conn:
        page = await repository.list_dead_letters(
            conn, namespace, limit=query.limit, cursor=query.cursor, status=query.status
        )
    return _json(
        DeadLetterPage(
            items=[dead_letter_model(d) for d in page.items], next_cursor=page.next_cursor
        )
    )


async def show_letter(request: web.Request) -> web.Response:
    namespace, id_ = namespace_of(request), _letter_id(request)
    async with request.app[DATABASE].connection("event_processing") as conn:
        letter = await repository.get_dead_letter(conn, namespace, id_)
    if letter is None:
        raise _not_found(namespace, id_)
    return _json(dead_letter_model(letter))


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
        return _json(dead_letter_model(replayed))
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
    raw = await read_capped(request, MAX_PURGE_BYTES, "purge request", "a fixed limit")
    try:
        body = load_json(raw or b"{}")
    except ValueError as exc:
        raise _bad_request(f"the body is not valid JSON: {exc}") from None
    purge = validated(PurgeRequest, body)
    async with request.app[DATABASE].connection("event_processing") as conn:
        purged = await repository.purge_dead_letters(
            conn, namespace, ids=purge.ids, older_than=purge.older_than
        )
    return _json(PurgeResult(purged=purged))
