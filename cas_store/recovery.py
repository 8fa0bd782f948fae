"""Recovery planning: from a session's recent versions, the list a suspect shrink cut short.

This module is pure: it sees version entries and their id lists, and returns a plan.
``Store.recover`` reads the versions, and commits the plan with compare-and-swap.

The replay keeps ``intended = base + prev[k:]``: ``base`` is what recovery will restore
in front, ``prev`` the list of the version just seen, and ``prev[:k]`` the part of it
that ``base`` already covers. A suspect shrink that cut a prefix folds everything into
``base``; an append or any change right of ``k`` (even an intentional one) is taken as
it is, so an intentional shrink is never undone; a change left of ``k`` (a restore, an
intentional cut into the old messages, a shrink that rewrote instead of cut) stops the
plan, because which messages the user wants is no longer clear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .backends import LogEntry
from .lists import common_prefix
from .objects import Oid

#: Ops after which a suspect shrink counts as handled: someone chose a state on purpose.
RESOLVING_OPS = frozenset({"recover", "restore"})


@dataclass(frozen=True, slots=True)
class Plan:
    """What recovery would make the head's message list, and why."""

    shrink: LogEntry  # the first unresolved suspect shrink
    before: LogEntry  # the larger version it cut
    ids: list[Oid]  # the recovered message list
    read: list[tuple[int, Oid]]  # versions (seq, manifest) the new head references
    skipped: str = ""  # non-empty: no change, and why


def first_unresolved_shrink(entries: Sequence[LogEntry], window_start: float) -> int | None:
    """Return the index in ascending entries of the first suspect shrink to act on, or None."""
    start = 0
    for i, e in enumerate(entries):
        # A new life (a create or fork after a delete) owes nothing of the deleted one:
        # bringing its messages back would undo the deletion.
        if e.op in RESOLVING_OPS or (i and entries[i - 1].op == "delete"):
            start = i + 1
    for i in range(max(start, 1), len(entries)):
        e = entries[i]
        if e.suspect_shrink and e.created_at >= window_start:
            return i
    return None


def plan(entries: Sequence[LogEntry], ids_of: Callable[[LogEntry], list[Oid]],
         window_start: float) -> Plan | None:
    """Return a recovery plan for one session's ascending, contiguous versions, or None.

    None means there is no unresolved suspect shrink in the window. A plan whose
    ``skipped`` is set explains why recovery leaves the session alone.
    """
    i = first_unresolved_shrink(entries, window_start)
    if i is None:
        return None
    before, shrink = entries[i - 1], entries[i]
    base = ids_of(before)
    prev, k = base, len(base)
    for e in entries[i:]:
        cur = ids_of(e)
        cp = common_prefix(prev, cur)
        if e.suspect_shrink and cp == len(cur):
            base, k = base + prev[k:], len(cur)
        elif cp >= k:
            pass  # the change lies right of what base covers: keep it as it is
        else:
            why = (
                f"version {e.seq} ({e.op}) changed messages the shrink had cut;"
                " restore by hand from the version history"
            )
            return Plan(shrink, before, [], [], skipped=why)
        prev = cur
    ids = base + prev[k:]
    read = [(e.seq, e.manifest) for e in entries[i - 1 :]]
    if ids == prev:
        return Plan(shrink, before, ids, read, skipped="nothing was lost")
    return Plan(shrink, before, ids, read)
