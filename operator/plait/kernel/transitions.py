"""State machines declared as data: which state may follow which.

A component's ``states.py`` declares each lifecycle once, as a mapping from a state to the
states it may move to, plus the states a row may be inserted in. Everything that changes a
row derives its guard from that one table:

- the repository's UPDATE matches only rows in an allowed predecessor state
  (``WHERE state = ANY(%s)`` with :meth:`StateMachine.sources_sql`), so a transition the
  table does not allow changes nothing and the caller sees a lost race;
- a trigger in the component's migrations refuses the same transitions from any other
  writer, with SQLSTATE 23514 and the constraint name ``<table>_<column>_transition``. The
  table reaches the trigger as its arguments, :meth:`StateMachine.trigger_arguments`.

``tests/kernel/test_states.py`` checks that each trigger's arguments are those, and tries
every pair of states against PostgreSQL: exactly the table's transitions pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Generic, TypeVar

__all__ = ["InvalidTransition", "StateMachine"]

S = TypeVar("S", bound=StrEnum)


class InvalidTransition(ValueError):
    """A state change the machine's table does not allow."""


class StateMachine(Generic[S]):
    """The allowed transitions of one enum; every state must be listed (an empty set
    marks a state nothing follows). Moving to the same state is not a transition."""

    def __init__(
        self,
        states: type[S],
        *,
        initial: Iterable[S],
        transitions: Mapping[S, Iterable[S]],
    ) -> None:
        self.states = states
        self.initial: frozenset[S] = frozenset(initial)
        self.transitions: dict[S, frozenset[S]] = {s: frozenset(t) for s, t in transitions.items()}
        missing = set(states) - self.transitions.keys()
        if missing:
            raise ValueError(f"{states.__name__}: no transitions declared for {sorted(missing)}")
        loops = [s for s, targets in self.transitions.items() if s in targets]
        if loops:
            raise ValueError(f"{states.__name__}: {sorted(loops)} listed as following itself")

    def allows(self, old: S, new: S) -> bool:
        """Whether a row in ``old`` may move to ``new``."""
        return new in self.transitions[old]

    def check(self, old: S, new: S) -> None:
        """Raise :class:`InvalidTransition` unless ``old`` may move to ``new``."""
        if not self.allows(old, new):
            raise InvalidTransition(f"{self.states.__name__} {old.value} -> {new.value}")

    def sources(self, new: S) -> frozenset[S]:
        """The states a row may be in to move to ``new``."""
        return frozenset(s for s, targets in self.transitions.items() if new in targets)

    def sources_sql(self, new: S, *, among: Iterable[S] | None = None) -> list[str]:
        """:meth:`sources` as values for ``= ANY(%s)``, optionally narrowed to ``among``
        (a call site that may make only some of the allowed moves)."""
        allowed = self.sources(new)
        if among is not None:
            allowed &= frozenset(among)
        return sorted(s.value for s in allowed)

    def pairs(self) -> frozenset[tuple[S, S]]:
        """Every allowed (old, new)."""
        return frozenset((s, t) for s, targets in self.transitions.items() for t in targets)

    def trigger_arguments(self) -> list[str]:
        """The table as the transition trigger's arguments, sorted so the text is stable:
        every state by name, ``-> S`` for each state a row may start in, ``A -> B`` for
        each allowed move. Plain text a trigger compares with ``= ANY(TG_ARGV)``: nothing
        to parse per row."""
        return [
            *sorted(s.value for s in self.transitions),
            *sorted(f"-> {s.value}" for s in self.initial),
            *sorted(f"{a.value} -> {b.value}" for a, b in self.pairs()),
        ]
