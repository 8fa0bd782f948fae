"""Recovery planning: from a session's recent versions, the lists a suspect shrink cut short.

This module is pure: it sees version entries and their id lists, and returns a plan.
``Store.recover`` reads the versions, and commits the plan with compare-and-swap.

One rule serves every list of a session (``messages`` and each named list such as
``context_messages`` or ``tool_calls``), replayed for each list on its own. The replay
keeps ``intended = base + prev[k:]``: ``base`` is what recovery will restore in front,
``prev`` the list of the version just seen, and ``prev[:k]`` the part of it that
``base`` already covers. A suspect shrink that cut a prefix folds everything into
``base``; an append or any change right of ``k`` (even an intentional one) is taken as
it is, so an intentional shrink is never undone; a change left of ``k`` (a restore, an
intentional cut into the old items, a shrink that rewrote instead of cut) stops the
plan, because which items the user wants is no longer clear.

A shrink is suspect only if it lost content: a save whose dropped items all still occur
in the new list (a chat UI collapsing duplicate partial messages) is not flagged, so
recovery never fights such a self-heal (see ``lost_content``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .backends import LogEntry
from .lists import common_prefix
from .objects import Oid

#: Ops after which a suspect shrink counts as handled: someone chose a state on purpose.
RESOLVING_OPS = frozenset({"recover", "restore"})
MESSAGES = "messages"
#: Metadata counts derived from a list, set from the recovered list by a recovery.
DERIVED_COUNTS = {"message_count": MESSAGES}


@dataclass(frozen=True, slots=True)
class Plan:
    """What recovery would make the head's lists, and why."""

    shrink: LogEntry  # the first unresolved suspect shrink
    before: LogEntry  # the larger version it cut
    ids: list[Oid]  # the recovered message list
    read: list[tuple[int, Oid]]  # versions (seq, manifest) the new head references
    skipped: str = ""  # non-empty: no change, and why
    #: Every list recovery changes, by name (``messages`` included when it changes).
    lists: dict[str, list[Oid]] = field(default_factory=dict)


def lost_content(old: Sequence[Oid], new: Sequence[Oid]) -> bool:
    """Return True if replacing list old by new drops an item that new does not hold.

    With content addressing this is one set test over the items right of the common
    prefix: equal items share an id, so a shrink that only removes duplicates (or
    reorders) loses nothing.
    """
    cp = common_prefix(old, new)
    if cp == len(old):
        return False
    kept = set(new)
    return any(o not in kept for o in old[cp:])


def first_unresolved_shrink(entries: Sequence[LogEntry],
                            window_start: float | None = None) -> int | None:
    """Return the index in ascending entries of the first suspect shrink to act on, or None.

    Any unresolved suspect shrink counts however old it is; ``window_start`` (used by GC's
    retention) counts only the ones at or after that time.
    """
    start = 0
    for i, e in enumerate(entries):
        # A new life (a create or fork after a delete) owes nothing of the deleted one:
        # bringing its messages back would undo the deletion.
        if e.op in RESOLVING_OPS or (i and entries[i - 1].op == "delete"):
            start = i + 1
    for i in range(max(start, 1), len(entries)):
        e = entries[i]
        if e.suspect_shrink and (window_start is None or e.created_at >= window_start):
            return i
    return None


def _replay(entries: Sequence[LogEntry], ids_of: Callable[[LogEntry], list[Oid]]
            ) -> tuple[list[Oid], list[Oid]] | LogEntry:
    """Return (recovered list, head's list) of one list, or the entry that stops the plan."""
    base = ids_of(entries[0])
    prev, k = base, len(base)
    for e in entries[1:]:
        cur = ids_of(e)
        cp = common_prefix(prev, cur)
        if e.suspect_shrink and cp == len(cur):
            base, k = base + prev[k:], len(cur)
        elif cp >= k:
            pass  # the change lies right of what base covers: keep it as it is
        else:
            return e
        prev = cur
    return base + prev[k:], prev


def plan(entries: Sequence[LogEntry],
         lists_of: Callable[[LogEntry], Mapping[str, list[Oid]]]) -> Plan | None:
    """Return a recovery plan for one session's ascending, contiguous versions, or None.

    ``lists_of(entry)`` returns that version's lists by name (an absent list is empty).
    None means there is no unresolved suspect shrink. A plan whose ``skipped`` is set
    explains why recovery leaves the session alone: one list it cannot replay leaves all
    of them alone, so a session is never recovered by halves.
    """
    i = first_unresolved_shrink(entries)
    if i is None:
        return None
    before, shrink = entries[i - 1], entries[i]
    run = entries[i - 1 :]
    cache: dict[int, Mapping[str, list[Oid]]] = {}

    def of(e: LogEntry) -> Mapping[str, list[Oid]]:
        if e.seq not in cache:
            cache[e.seq] = lists_of(e)
        return cache[e.seq]

    names = sorted({n for e in run for n in of(e)} | {MESSAGES})
    changed: dict[str, list[Oid]] = {}
    ids: list[Oid] = []
    for name in names:

        def ids_of(e: LogEntry, name: str = name) -> list[Oid]:
            return list(of(e).get(name, []))

        got = _replay(run, ids_of)
        if isinstance(got, LogEntry):
            why = (f"version {got.seq} ({got.op}) changed {name} the shrink had cut;"
                   " restore by hand from the version history")
            return Plan(shrink, before, [], [], skipped=why)
        recovered, head = got
        if name == MESSAGES:
            ids = recovered
        if recovered != head:
            changed[name] = recovered
    read = [(e.seq, e.manifest) for e in run]
    if not changed:
        return Plan(shrink, before, ids, read, skipped="nothing was lost")
    return Plan(shrink, before, ids, read, lists=changed)
