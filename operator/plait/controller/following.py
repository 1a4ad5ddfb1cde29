"""WorkflowInstances followed by their watch events alone.

Kopf's change handlers write their bookkeeping back to every object they handle (a
finalizer, the handled spec's digest, progress while a handler retries): API writes per
run, and state that only one replica can hold, since a replica that skips an object
still records it as handled. A run needs none of it. Its history is in PostgreSQL, and
what the user asks of it (cancel, suspend, retry) is its spec, handled once per
generation. So every replica watches every WorkflowInstance, writes nothing back but the
status, and handles only the runs it owns (:mod:`plait.workflow_orchestrator.members`).
The watch is a stream of Plait's own (:mod:`plait.controller.watches`; Kopf's under
``--peering``): an event of a run another replica owns costs its decoding and a little
bookkeeping, with no Kopf machinery.

- an object whose generation this process has not handled is reconciled like any kind
  (validated, recorded, advanced), and its condition written to its status;
- one that must wait (its definition is not stored yet, the database is away) is looked
  at again after the delay the reconciler asks for;
- a change of the labels alone (no new generation) is recorded with the run's row, for
  the dashboard's label filter, and nothing else is done;
- a deletion (the watch's DELETED event) cancels the run. An object still carrying the
  finalizer an earlier version of Plait put on it has the run cancelled and the finalizer
  taken off. A deletion no replica saw (all were down) is found when the run's owner
  resumes it (see ``Orchestrator.take_over``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import kopf

from plait import API_GROUP, API_VERSION
from plait.kernel.watching import Subscription, Watched
from plait.resources.stores import (
    KindBinding,
    ObjectRef,
    OperatorContext,
    Relabel,
    SeesVersions,
)

__all__ = ["follow_kind"]

logger = logging.getLogger(__name__)

#: How often a replica looks whether the division of objects among replicas changed.
OWNERSHIP_POLL_SECONDS = 1.0
#: How soon an object whose handling failed unexpectedly is handled again.
RETRY_AFTER_ERROR_SECONDS = 10.0

Reconcile = Callable[..., Awaitable[None]]


class _Follower:
    """The memory of one followed kind in this process: generations handled, retries due."""

    def __init__(
        self, binding: KindBinding, ctx: OperatorContext, reconcile: Reconcile, finalizer: str
    ) -> None:
        self.binding = binding
        self.ctx = ctx
        self.reconcile = reconcile
        self.finalizer = finalizer
        #: By uid, the generation handled, and the ownership epoch it was handled in (a
        #: run owned again may have changed while another replica had it).
        self.handled: dict[str, tuple[int, int]] = {}
        self.retries: dict[str, asyncio.Task[None]] = {}
        #: By uid, the labels last recorded (a label change makes no new generation).
        self.labels: dict[str, dict[str, str]] = {}
        #: By uid, the last version of each object another replica owned that is not
        #: settled (a run not shown ended, or its newest generation unhandled: never
        #: recorded, say, or ended while its status write was lost with its replica).
        #: Should it become this replica's, no watch event says so: it is handled then
        #: (see take_over).
        self.unowned: dict[str, Mapping[str, Any]] = {}
        self._epoch_seen = 0

    def owns(self, uid: str) -> bool:
        return self.binding.sharing is None or self.binding.sharing.owns(uid)

    def epoch(self) -> int:
        return 0 if self.binding.sharing is None else self.binding.sharing.epoch

    def see(self, event_type: str | None, body: Mapping[str, Any]) -> Awaitable[None] | None:
        """Take in one watch event: the bookkeeping at once, and for an object this replica
        owns, its handling as the awaitable returned (the watch runs it in order)."""
        uid = str(body["metadata"]["uid"])
        if isinstance(self.binding.store, SeesVersions):
            if event_type == "DELETED":
                self.binding.store.gone(uid)
            else:
                self.binding.store.saw(body)
        if not self.owns(uid):
            self.handled.pop(uid, None)
            self.labels.pop(uid, None)
            if event_type != "DELETED" and not self._settled(body):
                self.unowned[uid] = body
            else:
                self.unowned.pop(uid, None)
            return None
        self.unowned.pop(uid, None)
        return self._on_owned(event_type, body, uid)

    async def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        work = self.see(event_type, body)
        if work is not None:
            await work

    async def _on_owned(self, event_type: str | None, body: Mapping[str, Any], uid: str) -> None:
        meta = body["metadata"]
        if event_type == "DELETED":
            self.handled.pop(uid, None)
            self.labels.pop(uid, None)
            await self.binding.store.delete(self.ctx, _ref(meta))
            return
        if meta.get("deletionTimestamp"):
            if self.finalizer in (meta.get("finalizers") or ()):
                await self.binding.store.delete(self.ctx, _ref(meta))
                await self.ctx.kube.remove_instance_finalizer(
                    meta["namespace"], meta["name"], self.finalizer
                )
            return
        generation = int(meta.get("generation") or 0)
        if self.handled.get(uid) == (generation, self.epoch()):
            # A status write or a label: nothing asked of the run changed. New labels are
            # recorded with the run's rows (the run list filters by them), nothing more.
            await self._relabel(meta, uid)
            return
        await self._handle(body, uid, generation)

    async def _relabel(self, meta: Mapping[str, Any], uid: str) -> None:
        labels = dict(meta.get("labels") or {})
        store = self.binding.store
        if self.labels.get(uid) == labels or not isinstance(store, Relabel):
            return
        try:
            await store.relabel(self.ctx, _ref(meta))
        except Exception:
            logger.exception(
                "recording the labels of %s %s/%s", self.binding.info.kind, *_where(meta)
            )
            return
        self.labels[uid] = labels

    async def _handle(self, body: Mapping[str, Any], uid: str, generation: int) -> None:
        meta = body["metadata"]
        epoch = self.epoch()
        patch = kopf.Patch()
        view = kopf.Body(cast(kopf.RawBody, dict(body)))
        try:
            await self.reconcile(
                body=view,
                spec=view.spec,
                meta=view.meta,
                status=view.status,
                patch=patch,
            )
        except kopf.TemporaryError as exc:
            self._retry_later(meta, exc.delay or RETRY_AFTER_ERROR_SECONDS)
        except Exception:
            logger.exception("handling %s %s/%s", self.binding.info.kind, *_where(meta))
            self._retry_later(meta, RETRY_AFTER_ERROR_SECONDS)
        else:
            self.handled[uid] = (generation, epoch)
            self.labels[uid] = dict(meta.get("labels") or {})
            logger.debug(
                "%s %s/%s generation %d is handled",
                self.binding.info.kind,
                *_where(meta),
                generation,
            )
        finally:
            status = dict(patch).get("status")
            if status:
                await self.ctx.kube.patch_instance_status(
                    meta["namespace"], meta["name"], dict(status)
                )

    def _settled(self, body: Mapping[str, Any]) -> bool:
        store = self.binding.store
        if body["metadata"].get("deletionTimestamp"):
            return True
        return isinstance(store, SeesVersions) and store.settled(body)

    async def take_over(self) -> None:
        """Handle the objects last seen as another replica's that are now this one's, as
        their last watch event gave them."""
        for uid, body in list(self.unowned.items()):
            if self.owns(uid) and self.unowned.get(uid) is body:
                del self.unowned[uid]
                await self.on_event(None, body)

    async def follow_ownership(self) -> None:
        """Take over (see take_over) whenever the division among replicas changes."""
        while True:
            await asyncio.sleep(OWNERSHIP_POLL_SECONDS)
            epoch = self.epoch()
            if epoch == self._epoch_seen:
                continue
            try:
                await self.take_over()
            except Exception:
                logger.exception("handling the %ss taken over failed", self.binding.info.kind)
                continue  # tried again at the next look
            self._epoch_seen = epoch

    def _retry_later(self, meta: Mapping[str, Any], delay: float) -> None:
        uid = str(meta["uid"])
        running = self.retries.get(uid)
        if running is not None and not running.done():
            return

        async def again() -> None:
            await asyncio.sleep(delay)
            self.retries.pop(uid, None)
            obj = await self.ctx.kube.get_instance(meta["namespace"], meta["name"])
            if obj is not None and str(obj["metadata"]["uid"]) == uid:
                await self.on_event(None, obj)

        self.retries[uid] = asyncio.create_task(again())


def _ref(meta: Mapping[str, Any]) -> ObjectRef:
    return ObjectRef(
        meta["namespace"],
        meta["name"],
        str(meta["uid"]),
        int(meta.get("generation") or 0),
        dict(meta.get("annotations") or {}),
        dict(meta.get("labels") or {}),
    )


def _where(meta: Mapping[str, Any]) -> tuple[str, str]:
    return meta["namespace"], meta["name"]


def follow_kind(
    registry: kopf.OperatorRegistry,
    binding: KindBinding,
    ctx: OperatorContext,
    reconcile: Reconcile,
    *,
    finalizer: str,
) -> Subscription:
    """The watch of a followed kind (only WorkflowInstance is), to be run as a stream; the
    take-overs, when replicas share the objects, run with Kopf's operator."""
    if binding.info.plural != "workflowinstances":
        raise ValueError(f"only WorkflowInstances are followed, not {binding.info.kind}")
    follower = _Follower(binding, ctx, reconcile, finalizer)
    takeovers: list[asyncio.Task[None]] = []

    async def start(**_: Any) -> None:
        if binding.sharing is not None:
            takeovers.append(asyncio.create_task(follower.follow_ownership()))

    async def stop(**_: Any) -> None:
        # Retries due later are not waited for at exit: the next start lists every object.
        tasks = [*takeovers, *follower.retries.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    kopf.on.startup(id=f"take-over-{binding.info.plural}", registry=registry)(start)
    kopf.on.cleanup(id=f"stop-following-{binding.info.plural}", registry=registry)(stop)
    return Watched(API_GROUP, API_VERSION, binding.info.plural), follower.see
