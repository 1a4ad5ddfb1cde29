"""Level-based reconciliation of Plait's kinds into PostgreSQL, the same for every kind.

Each kind is bound to a :class:`Store` (its component's code that writes its rows). For
every create, update, resume and periodic resync the reconciler:

1. validates the whole object (schema, DAG, CEL, references, resolved in the specs kept
   in memory by :mod:`plait.controller.indexes`, so no API call is made); a problem sets
   the condition to False with the exact message, posts a Warning Event once per
   distinct message, and writes nothing to the database;
2. otherwise asks the store to make the rows match the spec (idempotent: an unchanged
   spec writes nothing) and reports the result in ``status``.

Deletion marks the rows deleted (history kept) before Kopf removes Plait's finalizer.
WorkflowInstances are the exception: they are followed by their watch events, with no
finalizer and no bookkeeping written back, and, unless Kopf's peering is on, by a watch
stream of Plait's own rather than Kopf's (:mod:`plait.controller.following`).
The admission webhook (``plait webhook``, :mod:`plait.admission`) runs the same content
checks before an object is stored at all; this re-checks everything regardless.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import kopf
import psycopg
import psycopg_pool

from plait import API_GROUP, API_VERSION
from plait.controller.following import follow_kind
from plait.controller.indexes import ReferenceIndexes
from plait.controller.options import FINALIZER
from plait.kernel.conditions import Condition, merge_conditions
from plait.kernel.watching import Subscription
from plait.observability.tracing import reconcile_span, run_trace
from plait.resources.stores import KindBinding, ObjectRef, OperatorContext, ReferenceNotStored
from plait.resources.validation import Problem, check_resource, parse_spec

__all__ = ["register_kind"]

logger = logging.getLogger(__name__)

#: How soon an object waiting for a referenced object is reconciled again.
REFERENCE_RETRY_SECONDS = 3
#: Delay before a reconciliation that found PostgreSQL unreachable is tried again.
DATABASE_RETRY_SECONDS = 5


def _problem_reason(problems: list[Problem]) -> str:
    if all(p.reason == "NotFound" for p in problems):
        return "ReferenceNotFound"
    return "InvalidSpec"


def _problem_message(problems: list[Problem]) -> str:
    shown = "; ".join(str(p) for p in problems[:10])
    more = len(problems) - 10
    return shown + (f"; and {more} more" if more > 0 else "")


def register_kind(
    registry: kopf.OperatorRegistry,
    binding: KindBinding,
    ctx: OperatorContext,
    indexes: ReferenceIndexes,
    *,
    resync_seconds: float,
) -> Subscription | None:
    """Register the change handlers, resync timer and deletion of a kind; for the followed
    kind, register what Kopf runs of it and return the subscription of its watch."""
    info = binding.info
    resource = (API_GROUP, API_VERSION, info.plural)

    async def reconcile(
        body: kopf.Body,
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        patch: kopf.Patch,
        **_: Any,
    ) -> None:
        # A run's reconciliations are spans of its own trace; other kinds get one each.
        run = (
            run_trace(str(meta["uid"]), dict(meta.get("annotations") or {}))
            if info.kind == "WorkflowInstance"
            else None
        )
        with reconcile_span(info.kind, meta["namespace"], meta["name"], run=run):
            try:
                await _reconcile(body, spec, meta, status, patch)
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                # PostgreSQL is away (a restart, a failover): try again soon, not in the
                # minute Kopf waits after an unexpected error.
                raise kopf.TemporaryError(
                    f"database unavailable ({type(exc).__name__}); retrying",
                    delay=DATABASE_RETRY_SECONDS,
                ) from exc

    async def _reconcile(
        body: kopf.Body,
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        patch: kopf.Patch,
    ) -> None:
        namespace, name = meta["namespace"], meta["name"]
        generation = int(meta.get("generation") or 0)
        await indexes.listed()  # a reference not listed yet is not a missing one
        problems = check_resource(dict(body), indexes.lookup(namespace))
        previous = {c.get("type"): c for c in status.get("conditions") or ()}
        if problems:
            reason, message = _problem_reason(problems), _problem_message(problems)
            await _warn_once(ctx, body, previous.get(binding.condition_type), reason, message)
            if reason == "ReferenceNotFound":
                _wait_for_reference(patch, status, generation, message)
            _set_status(
                patch,
                status,
                generation,
                Condition(binding.condition_type, "False", reason, message, generation),
                binding.rejected_status,
            )
            return
        ref = ObjectRef(
            namespace,
            name,
            str(meta["uid"]),
            generation,
            dict(meta.get("annotations") or {}),
            dict(meta.get("labels") or {}),
        )
        try:
            applied = await binding.store.apply(ctx, ref, parse_spec(info.kind, dict(spec)))
        except ReferenceNotStored as exc:
            _wait_for_reference(patch, status, generation, str(exc))
        if applied.condition_status == "False":
            await _warn_once(
                ctx, body, previous.get(binding.condition_type), applied.reason, applied.message
            )
        if applied.published:
            return  # the store wrote the same condition with its summary, in one write
        _set_status(
            patch,
            status,
            generation,
            Condition(
                binding.condition_type,
                applied.condition_status,
                applied.reason,
                applied.message,
                generation,
            ),
            applied.status,
            applied.conditions,
        )

    def _wait_for_reference(
        patch: kopf.Patch, status: kopf.Status, generation: int, message: str
    ) -> NoReturn:
        """Report ``ReferenceNotFound`` and look again shortly (objects applied together
        arrive in any order). Waiting is not a verdict on this object: a run whose
        definition is not applied yet waits, Pending, and has not failed."""
        _set_status(
            patch,
            status,
            generation,
            Condition(
                binding.condition_type,
                binding.waiting_condition,
                "ReferenceNotFound",
                message,
                generation,
            ),
            binding.waiting_status,
        )
        # Kopf applies the status patch above before it retries.
        raise kopf.TemporaryError(message, delay=REFERENCE_RETRY_SECONDS)

    if binding.followed:
        return follow_kind(registry, binding, ctx, reconcile, finalizer=FINALIZER)
    handler_id = f"reconcile-{info.plural}"
    kopf.on.resume(*resource, id=handler_id, registry=registry)(reconcile)
    kopf.on.create(*resource, id=handler_id, registry=registry)(reconcile)
    kopf.on.update(*resource, id=handler_id, field="spec", registry=registry)(reconcile)
    kopf.timer(
        *resource,
        id=f"resync-{info.plural}",
        interval=resync_seconds,
        initial_delay=resync_seconds,
        idle=resync_seconds / 2,
        registry=registry,
    )(reconcile)

    async def delete(meta: kopf.Meta, **_: Any) -> None:
        ref = ObjectRef(
            meta["namespace"], meta["name"], str(meta["uid"]), int(meta.get("generation") or 0)
        )
        with reconcile_span(info.kind, ref.namespace, ref.name):
            await binding.store.delete(ctx, ref)

    kopf.on.delete(*resource, id=f"delete-{info.plural}", registry=registry)(delete)
    return None


async def _warn_once(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    reason: str,
    message: str,
) -> None:
    """A Warning Event for a rejection, unless the condition already says the same
    (the periodic resync must not post the same Event again and again). Events are
    advice: one that cannot be posted is logged, and the condition still says it all."""
    old = old or {}
    if (old.get("reason"), old.get("message")) == (reason, message):
        return
    try:
        await ctx.kube.post_warning(body, reason, message)
    except Exception as exc:
        meta = body["metadata"]
        logger.warning(
            "posting the Warning %s about %s %s/%s failed: %s",
            reason,
            body.get("kind"),
            meta["namespace"],
            meta["name"],
            exc,
        )


def _set_status(
    patch: kopf.Patch,
    status: Mapping[str, Any],
    generation: int,
    condition: Condition,
    extra: Mapping[str, Any],
    more: Sequence[Condition] = (),
) -> None:
    """Write only what differs from the current status (an unchanged status writes nothing)."""
    desired: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(status.get("conditions"), [condition, *more]),
        **extra,
    }
    for key, value in desired.items():
        if status.get(key) != value:
            patch.status[key] = value
