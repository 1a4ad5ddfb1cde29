"""``synchronization``: a named lock held while a run, or a task's attempt, runs.

A mutex (``limit`` 1) or a semaphore of ``limit`` holders, named by a CEL key, e.g.
``"deploy-" + params.env``: one deploy per environment at a time, whatever workflow asks.
Held in PostgreSQL; waiters are granted in order, higher ``spec.priority`` of the run
first, then first come.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from plait.resources.common import CelExpression, PlaitModel

__all__ = ["RUN_LOCK_VARIABLES", "TASK_LOCK_VARIABLES", "Synchronization"]

#: What a workflow's lock key sees.
RUN_LOCK_VARIABLES = frozenset({"params"})
#: What a task's lock key sees: the attempt's evaluated inputs too.
TASK_LOCK_VARIABLES = frozenset({"params", "inputs"})


class Synchronization(PlaitModel):
    """Hold a named lock while running: a mutex, or a semaphore of limit holders."""

    key: CelExpression
    """CEL giving the lock's name (a string, at most 253 characters): over params for a
    workflow, over params and inputs (the attempt's) for a task. Locks are per namespace."""
    limit: Annotated[int, Field(ge=1, le=10000)] = 1
    """How many may hold the lock at once; 1 (a mutex) when unset."""
