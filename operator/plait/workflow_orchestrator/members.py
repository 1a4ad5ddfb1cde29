"""Operator replicas sharing the runs: membership in PostgreSQL, ownership by hashing.

Every replica keeps a row of ``operator_members`` fresh (a heartbeat every
``heartbeat_seconds``); the live members of its scope (the namespaces it watches) are
those whose heartbeat is younger than ``lease_seconds`` by the database's clock. A run
belongs to the live member that rendezvous hashing picks for its id: every replica
computes the same answer from the same rows, and when a member comes or goes only the
runs it gains or loses change hands.

Ownership divides the work; it is not what keeps work from being done twice. During a
change of membership two replicas can briefly both think they own a run, and that is
safe: attempts and Jobs have deterministic names and unique rows (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from plait.kernel.database import Database

__all__ = ["Membership", "MembershipSettings", "Ownership", "owner_of", "scope_of", "sole_owner"]

logger = logging.getLogger(__name__)
COMPONENT = "workflow_orchestrator"


@dataclass(frozen=True)
class MembershipSettings:
    """How replicas find each other. A dead replica's runs are taken over after at most
    ``lease_seconds + heartbeat_seconds``."""

    heartbeat_seconds: float = 2.0
    """How often a replica refreshes its row and reads the others'."""
    lease_seconds: float = 8.0
    """A member whose heartbeat is older than this is taken for dead."""


def owner_of(uid: uuid.UUID, members: Sequence[str]) -> str | None:
    """The member that owns run ``uid`` (rendezvous hashing); None without members."""
    if not members:
        return None
    return max(
        members, key=lambda m: hashlib.blake2b(f"{m}/{uid}".encode(), digest_size=8).digest()
    )


class Ownership:
    """Which runs this process owns; one that is alone (or not sharing) owns them all."""

    def __init__(self, me: str, *, exclusive: bool = True) -> None:
        self.me = me
        self.members: tuple[str, ...] = (me,)
        #: Grows at every change of the members (what was handled before may now be
        #: another replica's, or this one's again).
        self.epoch = 0
        self._exclusive = exclusive

    @property
    def exclusive(self) -> bool:
        """No other process advances the runs this one owns (while the epoch stays the
        same): what it wrote of them last is what they are. False for replicas that each
        advance every run (``--no-share-runs``, Kopf's peering at a handover)."""
        return self._exclusive

    def owns(self, uid: uuid.UUID | str) -> bool:
        return owner_of(uuid.UUID(str(uid)), self.members) == self.me


def sole_owner(*, exclusive: bool = True) -> Ownership:
    """Ownership of a process that shares nothing: it owns every run (its name, new at
    every start, tells its in-flight work from a previous process's). ``exclusive``:
    no other process advances them (see Ownership.exclusive)."""
    return Ownership(member_name(), exclusive=exclusive)


def scope_of(namespaces: Sequence[str] | None) -> str:
    """The scope of a replica that watches ``namespaces`` (None: all): replicas share runs
    only with replicas of the same scope, so none is given a run it does not watch."""
    return "*" if namespaces is None else ",".join(sorted(set(namespaces)))


def member_name() -> str:
    """This replica's name: its pod name (HOSTNAME in a pod) and a random suffix, so a
    restarted replica is a new member and never inherits a stale row's heartbeat."""
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host[:200]}-{uuid.uuid4().hex[:8]}"


class Membership(Ownership):
    """This replica's membership: joins, keeps its heartbeat, learns the others, and
    calls ``on_change`` with the new members whenever the live set changes."""

    def __init__(
        self,
        db: Database,
        settings: MembershipSettings | None = None,
        *,
        scope: str = "*",
        me: str | None = None,
        on_change: Callable[[tuple[str, ...]], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(me or member_name())
        #: Whether replicas of other scopes live (as of the last heartbeat that changed
        #: the epoch): they may advance runs of namespaces both watch.
        self.elsewhere = False
        self._elsewhere_seen = False  # by the last heartbeat
        self.scope = scope
        self._db = db
        self.settings = settings or MembershipSettings()
        self._on_change = on_change

    @property
    def exclusive(self) -> bool:
        """Only while this replica is the one live operator replica (of any scope): with
        others, a run's records may be written by another replica (a FailedCreate Event
        handled there, an HTTP answer to a request it sent, a replica that has not seen
        the change of members yet), so they are read at every advance."""
        return self.members == (self.me,) and not self.elsewhere

    def set_on_change(self, on_change: Callable[[tuple[str, ...]], Awaitable[None]]) -> None:
        self._on_change = on_change

    async def beat(self) -> tuple[str, ...]:
        """Refresh this member's heartbeat and read the live members (one transaction);
        returns them, sorted."""
        async with self._db.connection(COMPONENT) as conn:
            await conn.execute(
                "INSERT INTO workflow_orchestrator_service.operator_members (member, scope) "
                "VALUES (%s, %s) "
                "ON CONFLICT (member) DO UPDATE SET heartbeat_at = clock_timestamp()",
                (self.me, self.scope),
            )
            cur = await conn.execute(
                "SELECT member, scope FROM workflow_orchestrator_service.operator_members "
                "WHERE heartbeat_at > clock_timestamp() - make_interval(secs => %s) "
                "ORDER BY member",
                (self.settings.lease_seconds,),
            )
            rows = await cur.fetchall()
        self._elsewhere_seen = any(scope != self.scope for _, scope in rows)
        return tuple(member for member, scope in rows if scope == self.scope)

    async def leave(self) -> None:
        """Stop being a member at once: the others take this replica's runs over on
        their next heartbeat instead of after the lease."""
        async with self._db.connection(COMPONENT) as conn:
            await conn.execute(
                "DELETE FROM workflow_orchestrator_service.operator_members WHERE member = %s",
                (self.me,),
            )

    async def _forget_the_long_dead(self) -> None:
        """Drop rows of members dead for an hour (a replica killed never deletes its own)."""
        async with self._db.connection(COMPONENT) as conn:
            await conn.execute(
                "DELETE FROM workflow_orchestrator_service.operator_members "
                "WHERE heartbeat_at < clock_timestamp() - interval '1 hour'"
            )

    async def refresh(self) -> bool:
        """One heartbeat; True when the live members changed (``on_change`` was called)."""
        members = await self.beat()
        elsewhere, self.elsewhere = self.elsewhere, self._elsewhere_seen
        if members == self.members:
            if elsewhere != self.elsewhere:
                self.epoch += 1  # what was kept alone is not known alone any more, or is
            return False
        logger.info("operator members: %s (this one: %s)", ", ".join(members), self.me)
        self.members = members
        self.epoch += 1
        if self._on_change is not None:
            await self._on_change(members)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat until ``stop``; then leave. A failed heartbeat (the database away)
        is tried again at the next interval; meanwhile ownership stays as last known."""
        beats = 0
        try:
            while not stop.is_set():
                try:
                    await self.refresh()
                    if beats % 900 == 0:
                        await self._forget_the_long_dead()
                    beats += 1
                except Exception:
                    logger.exception("operator membership heartbeat failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.heartbeat_seconds)
        finally:
            with contextlib.suppress(Exception):
                await self.leave()
