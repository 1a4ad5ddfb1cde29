"""``forEach``: one task run per item of a list (a fan-out, Argo's ``withItems``).

The list is given literally (``items``) or by a CEL expression over the run's parameters
and upstream outputs (``expression``), so it may be known only at run time. Each item runs
as its own task, named ``<task>[<index>]``, whose CEL sees ``item`` and ``index``.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from plait.resources.common import CelExpression, PlaitModel, cel_rule

__all__ = ["MAX_ITEMS", "ForEach", "item_name", "item_names", "split_item_name"]

#: Most items in one fan-out; a longer list fails the task before any item starts.
MAX_ITEMS = 10000

#: Checked by the admission webhook: the CRD's CEL cannot see ``items``, whose elements
#: have no schema (any JSON value).
ONE_SOURCE = "exactly one of items or expression must be set"
_RATIO_WITH_CONTINUE = cel_rule(
    "!has(self.minSuccessRatio) || self.failurePolicy == 'Continue'",
    "minSuccessRatio needs failurePolicy Continue",
)


class ForEach(PlaitModel):
    """Run the task once per item of a list; its inputs and when see ``item`` and
    ``index``, and downstream tasks read the items' outputs as a list, in item order."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_RATIO_WITH_CONTINUE]}
    )

    items: (
        Annotated[
            list[
                Annotated[
                    Any, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
                ]
            ],
            Field(max_length=1000),
        ]
        | None
    ) = None
    """The list, written out (at most 1000 items; use expression for more)."""
    expression: CelExpression | None = None
    """CEL over params and upstream tasks that gives the list, e.g. params.regions or
    tasks.list.outputs.files; evaluated when the task's dependencies have finished."""
    parallelism: Annotated[int, Field(ge=1, le=MAX_ITEMS)] | None = None
    """At most this many items run at once (the workflow's parallelism bounds them too);
    unset: only the workflow's."""
    failure_policy: Literal["Stop", "Continue"] = "Stop"
    """Stop: after the first item fails for good no further item starts (those running
    finish) and the task fails. Continue: every item runs, and the task succeeds when at
    least minSuccessRatio of the items did not fail."""
    min_success_ratio: Annotated[float, Field(ge=0, le=1)] | None = None
    """With Continue: the share of items that must succeed (or be skipped by when) for
    the task to succeed; 1 when unset."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.items is None) == (self.expression is None):
            raise ValueError(ONE_SOURCE)
        if self.min_success_ratio is not None and self.failure_policy != "Continue":
            raise ValueError(str(_RATIO_WITH_CONTINUE["message"]))
        return self


def item_name(task: str, index: int) -> str:
    """The name of one item's task: ``<task>[<index>]`` (its attempts' task name)."""
    return f"{task}[{index}]"


@functools.lru_cache(maxsize=8)
def item_names(task: str, size: int) -> tuple[str, ...]:
    """Every item's name of a fan-out of ``size`` items, in order: made once for the few
    fan-outs planned lately (each plan of a 10,000-item run would format them again)."""
    return tuple(item_name(task, i) for i in range(size))


def split_item_name(name: str) -> tuple[str, int | None]:
    """``("process", 7)`` for ``process[7]``; ``(name, None)`` for a task that is no item."""
    if name.endswith("]") and "[" in name:
        task, _, index = name[:-1].partition("[")
        if index.isdigit():
            return task, int(index)
    return name, None
