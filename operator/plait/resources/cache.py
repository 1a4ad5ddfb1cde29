"""``cache``: reuse an earlier result instead of running a task again (Argo's memoize).

An attempt of a task with ``cache`` evaluates its key; when an attempt with the same key
in the same namespace succeeded within ``ttlSeconds``, the new attempt is recorded
Succeeded with that attempt's outputs, and no Job runs.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from plait.resources.common import CelExpression, PlaitModel

__all__ = ["CACHE_KEY_VARIABLES", "TaskCache"]

#: What a cache key's CEL sees.
CACHE_KEY_VARIABLES = frozenset({"inputs", "definition"})


class TaskCache(PlaitModel):
    """Reuse the outputs of an earlier successful attempt with the same key."""

    key: CelExpression
    """CEL over inputs (the attempt's evaluated inputs) and definition (name and version
    of the TaskDefinition it runs, or for an inline template of the WorkflowDefinition);
    any JSON value. Attempts in one namespace with equal keys share results, whichever
    workflow they belong to, e.g. 'resize-' + inputs.url + '-v' + string(definition.version)."""
    ttl_seconds: Annotated[int, Field(ge=1, le=31536000)] = 86400
    """How long a result may be reused, from the end of the attempt that produced it."""
