"""Operator replicas sharing the runs: membership in the real PostgreSQL, ownership by
rendezvous hashing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from plait.kernel.components import COMPONENTS
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.workflow_orchestrator.members import Membership, MembershipSettings, owner_of

RUNS = [uuid.UUID(int=i * 7919 + 1) for i in range(3000)]
FAST = MembershipSettings(heartbeat_seconds=0.1, lease_seconds=1.0)


@pytest.fixture
async def database(component_dsns: dict[str, str]) -> AsyncIterator[Database]:
    environ = {f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS}
    db = await Database.open(Settings(database_url=None), environ=environ)
    async with db:
        yield db


def test_each_run_has_one_owner_and_a_new_member_takes_only_its_share() -> None:
    two = ["a", "b"]
    three = ["a", "b", "c"]
    before = {uid: owner_of(uid, two) for uid in RUNS}
    after = {uid: owner_of(uid, three) for uid in RUNS}
    shares = {m: sum(1 for o in after.values() if o == m) for m in three}
    assert all(800 <= n <= 1200 for n in shares.values()), shares  # about a third each
    moved = [uid for uid in RUNS if before[uid] != after[uid]]
    assert moved
    assert all(after[uid] == "c" for uid in moved), "only runs the newcomer takes move"
    assert owner_of(RUNS[0], []) is None


async def test_replicas_of_a_scope_see_each_other_and_divide_the_runs(database: Database) -> None:
    a = Membership(database, FAST, scope="ns1", me="a")
    b = Membership(database, FAST, scope="ns1", me="b")
    other = Membership(database, FAST, scope="ns2", me="z")
    await a.refresh()
    assert await b.refresh()
    await other.refresh()
    await a.refresh()
    assert a.members == b.members == ("a", "b"), "a replica of another scope is not a member"
    assert other.members == ("z",)
    assert a.epoch == 1, "alone at first: no change until b came"
    assert b.epoch == 1
    owned_by_a = {uid for uid in RUNS if a.owns(uid)}
    owned_by_b = {uid for uid in RUNS if b.owns(str(uid))}
    assert owned_by_a
    assert owned_by_b
    assert owned_by_a | owned_by_b == set(RUNS)
    assert not owned_by_a & owned_by_b
    assert all(other.owns(uid) for uid in RUNS)


async def test_a_stopped_replica_leaves_at_once_and_a_dead_one_after_its_lease(
    database: Database,
) -> None:
    changes: list[tuple[str, ...]] = []

    async def seen(members: tuple[str, ...]) -> None:
        changes.append(members)

    a = Membership(database, FAST, me="a", on_change=seen)
    b = Membership(database, FAST, me="b")
    c = Membership(database, FAST, me="c")
    for m in (b, c, a):
        await m.refresh()
    assert a.members == ("a", "b", "c")
    await b.leave()
    assert await a.refresh()
    assert a.members == ("a", "c"), "a replica that stops is gone at the next heartbeat"
    # c stops beating (a process killed): gone once its heartbeat is older than the lease.
    deadline = time.monotonic() + 10
    while not await _refreshed_to(a, ("a",)):
        assert time.monotonic() < deadline, "the dead member's lease did not run out"
        await asyncio.sleep(FAST.heartbeat_seconds)
    assert all(a.owns(uid) for uid in RUNS)
    assert changes == [("a", "b", "c"), ("a", "c"), ("a",)]


async def _refreshed_to(m: Membership, members: tuple[str, ...]) -> bool:
    await m.refresh()
    return m.members == members


async def test_a_replica_knows_its_runs_alone_only_while_no_other_replica_lives(
    database: Database,
) -> None:
    """A replica keeps runs' records between advances only while it is exclusive: no other
    live replica of its scope, nor of another scope (which may watch the same namespaces).
    Each change of that is a new epoch, so records kept before are not used after."""
    a = Membership(database, FAST, scope="ns1", me="a")
    await a.refresh()
    assert a.exclusive
    other = Membership(database, FAST, scope="*", me="z")
    await other.refresh()
    await a.refresh()
    assert a.members == ("a",)
    assert not a.exclusive, "a replica of another scope lives"
    assert a.epoch == 1
    await other.leave()
    await a.refresh()
    assert a.exclusive
    assert a.epoch == 2
    b = Membership(database, FAST, scope="ns1", me="b")
    await b.refresh()
    await a.refresh()
    assert not a.exclusive, "another replica of its scope lives"
    assert a.epoch == 3
