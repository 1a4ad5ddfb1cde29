"""The contract between the reconciler and the components that persist each kind.

The operator process (:mod:`plait.controller.reconcile`) validates an object and calls its
kind's :class:`Store`; components implement stores and declare a :class:`KindBinding` per
kind. Both sides meet here, below them, so no component imports the process that runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from plait.kernel.conditions import Condition
from plait.kernel.database import Database
from plait.kernel.kube import Kube
from plait.resources import KindInfo
from plait.resources.common import PlaitModel

__all__ = [
    "Applied",
    "KindBinding",
    "ObjectRef",
    "OperatorContext",
    "ReferenceNotStored",
    "Relabel",
    "SeesVersions",
    "Sharing",
    "Store",
]


@dataclass(frozen=True)
class OperatorContext:
    """What stores work with: the database pools and Plait's own Kubernetes calls."""

    db: Database
    kube: Kube


@dataclass(frozen=True)
class ObjectRef:
    """Which object a store call is about."""

    namespace: str
    name: str
    uid: str
    generation: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """What a store did: the condition to report and extra status fields."""

    reason: str
    message: str
    status: Mapping[str, Any] = field(default_factory=dict)
    condition_status: str = "True"
    published: bool = False
    """The store wrote the object's status itself (a WorkflowInstance's summary has
    writers outside reconciliation and is written with optimistic concurrency)."""
    conditions: tuple[Condition, ...] = ()
    """Conditions besides the kind's own to set (a WorkflowDefinition's TestsPassed)."""

    @classmethod
    def version(cls, version: int, *, in_status: bool = True) -> Applied:
        """An accepted versioned spec. The message states the result, never whether this
        call wrote it, so a repeated reconciliation computes the same status."""
        return cls(
            reason="Accepted",
            message=f"the spec is stored as version {version}",
            status={"version": version} if in_status else {},
        )


class ReferenceNotStored(Exception):
    """A store cannot apply the spec yet: an object it refers to is not stored (yet), such as
    the definition version a run is pinned to. The reconciler reports ``ReferenceNotFound``
    with this message and tries again shortly."""


class Store(Protocol):
    """A component's writer of one kind's rows."""

    async def apply(self, ctx: OperatorContext, ref: ObjectRef, spec: PlaitModel) -> Applied:
        """Make the rows match ``spec``; must be idempotent."""

    async def delete(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        """Mark the object's rows deleted; must be idempotent."""


@runtime_checkable
class Relabel(Protocol):
    """A store that keeps an object's labels with its rows: told when only the labels
    changed (no new generation, so nothing else is handled)."""

    async def relabel(self, ctx: OperatorContext, ref: ObjectRef) -> None:
        """Record ``ref.labels``; must be idempotent."""


@runtime_checkable
class SeesVersions(Protocol):
    """A store that writes its objects' status itself: told of every version of an object
    the watch delivers, so its next status write can start from it without a read."""

    def saw(self, obj: Mapping[str, Any]) -> None:
        """An object as the watch delivered it (any replica's, owned or not)."""

    def gone(self, uid: str) -> None:
        """The object was deleted."""

    def settled(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object says all there is to say (a run shown ended, its newest
        generation handled): a replica that takes it over need not handle it."""


class Sharing(Protocol):
    """Which objects of a followed kind this replica handles, among replicas that share
    them; ``epoch`` changes whenever that may have changed."""

    epoch: int

    def owns(self, uid: str) -> bool: ...


@dataclass(frozen=True)
class KindBinding:
    """A kind, the store that persists it, and the condition type it reports."""

    info: KindInfo
    store: Store
    condition_type: str = "Ready"
    rejected_status: Mapping[str, Any] = field(default_factory=dict)
    """Extra status fields set when the object is invalid (an instance's phase, say)."""
    waiting_status: Mapping[str, Any] = field(default_factory=dict)
    """Extra status fields while an object it refers to does not exist yet (a run waiting
    for its definition is Pending)."""
    waiting_condition: str = "False"
    """The condition's status meanwhile: a run that waits has not failed (Unknown)."""
    followed: bool = False
    """Follow the objects by their watch events alone: no finalizer and no progress
    annotations are written back (only the status), each generation is handled once, and
    a deletion is seen in the watch. For the kind with the most objects and changes
    (WorkflowInstance), where every write per object is a cost at scale."""
    sharing: Sharing | None = None
    """For a followed kind: which objects this replica handles (replicas share them);
    None: every replica handles every object."""
