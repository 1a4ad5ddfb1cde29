"""What a replica keeps of its runs' records between advances, and how much of it.

An advance that starts from a run's row and attempts as the last advance left them (kept
current by the Job events recorded since) reads neither. They are kept for every
unfinished run a replica owns alone; :class:`KeptRecords` bounds what that holds in
memory, whatever the number and size of the runs: past its budget, the runs whose records
were kept longest ago are dropped, and are read at their next advance.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from plait.task_execution.repository import TaskInstance
from plait.task_execution.states import TaskState
from plait.workflow_orchestrator.repository import WorkflowInstance

__all__ = ["MAX_KEPT_ATTEMPTS", "KeptRecords", "Records"]

#: Attempts kept in memory at most, over all runs (a run's row counts as one more). An
#: attempt with small inputs and outputs takes about 1.2 KiB (22 MiB for 20,000, measured
#: with tracemalloc), more with outputs near their 4 KiB limit: a 10,000-task run fits,
#: with room for thousands of small runs beside it.
MAX_KEPT_ATTEMPTS = 20_000

#: The order an attempt's states come in: a Job event recorded later never takes an
#: attempt back to an earlier state in the records kept in memory.
_STATE_RANK = {TaskState.PENDING: 0, TaskState.WAITING: 1, TaskState.RUNNING: 1}


@dataclass
class Records:
    """A run's row and its current attempts (those no retry of the run set aside, by id,
    with the numbering base of those it did) as this process knows them without reading
    them; changed in place, one Job event at a time (a wide run's thousands of events
    must not each copy its thousands of attempts)."""

    instance: WorkflowInstance
    attempts: dict[uuid.UUID, TaskInstance]
    base: dict[str, int]
    epoch: int
    """The members' epoch they were known in: after a change of members another replica
    may have written them."""

    @classmethod
    def of(
        cls,
        instance: WorkflowInstance,
        attempts: Sequence[TaskInstance],
        base: Mapping[str, int],
        epoch: int,
    ) -> Records:
        return cls(instance, {a.id: a for a in attempts}, dict(base), epoch)

    @property
    def size(self) -> int:
        """What these records count for in :class:`KeptRecords`' budget."""
        return len(self.attempts) + 1

    def take(self, attempt: TaskInstance) -> bool:
        """Take in ``attempt`` as now recorded; False when it is not among these records
        (they would not be complete with it)."""
        known = self.attempts.get(attempt.id)
        if known is None:
            return False
        if _STATE_RANK.get(attempt.state, 2) >= _STATE_RANK.get(known.state, 2):
            self.attempts[attempt.id] = attempt
        return True


class KeptRecords:
    """Records by run, holding at most ``budget`` of :attr:`Records.size` in all: keeping
    more drops the runs kept longest ago (their next advance reads them); records larger
    than the whole budget are not kept at all. :meth:`take` never adds attempts, so only
    :meth:`keep` can go over the budget."""

    def __init__(self, budget: int = MAX_KEPT_ATTEMPTS) -> None:
        self._budget = budget
        self._held = 0
        self._runs: OrderedDict[uuid.UUID, Records] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, uid: object) -> bool:
        return uid in self._runs

    @property
    def held(self) -> int:
        """The sizes of the records kept, summed."""
        return self._held

    def get(self, uid: uuid.UUID) -> Records | None:
        return self._runs.get(uid)

    def pop(self, uid: uuid.UUID) -> Records | None:
        records = self._runs.pop(uid, None)
        if records is not None:
            self._held -= records.size
        return records

    def keep(self, uid: uuid.UUID, records: Records) -> None:
        """Keep ``records`` as the run's (the newest kept), dropping the oldest others while
        over the budget."""
        self.pop(uid)
        if records.size > self._budget:
            return
        self._runs[uid] = records
        self._held += records.size
        while self._held > self._budget:
            _, oldest = self._runs.popitem(last=False)
            self._held -= oldest.size

    def take(self, uid: uuid.UUID, attempt: TaskInstance) -> None:
        """The run's ``attempt`` was recorded: the kept records take it in, or are dropped
        when they cannot (see :meth:`Records.take`)."""
        records = self._runs.get(uid)
        if records is not None and not records.take(attempt):
            self.pop(uid)
