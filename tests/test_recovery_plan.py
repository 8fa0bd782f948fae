"""recovery.plan as a pure function: the whole plan (list, versions read, reason) it returns.

The store uses only part of a plan for some outcomes; these pin all of it, so a change in
any field is seen (tests/MUTATION.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cas_store.backends import LogEntry
from cas_store.objects import Oid
from cas_store.recovery import Plan, first_unresolved_shrink, plan

T = 1000.0


def ids(*names: str) -> list[Oid]:
    return [Oid(n.encode().ljust(32, b".")) for n in names]


def log(*steps: tuple[str, list[Oid], dict[str, Any]]) -> tuple[list[LogEntry],
                                                                 dict[int, list[Oid]]]:
    entries, lists = [], {}
    for seq, (op, items, flags) in enumerate(steps, 1):
        entries.append(LogEntry("s", seq, Oid(bytes([seq]) * 32), flags.get("at", T), op,
                                len(items), 0, flags.get("intentional", False),
                                flags.get("suspect", False)))
        lists[seq] = items
    return entries, lists


def run(entries: list[LogEntry], lists: dict[int, list[Oid]]) -> Plan | None:
    """Plan over the message list alone; the per-list part is checked, then set aside."""
    got = plan(entries, lambda e: {"messages": lists[e.seq]})
    if got is None:
        return None
    if got.skipped:
        assert got.lists == {}
    else:
        assert got.lists == {"messages": got.ids}
    return replace(got, lists={})


def test_a_wipe_then_appends_is_planned_whole() -> None:
    entries, lists = log(("create", ids("a", "b", "c"), {}),
                         ("save", [], {"suspect": True}),
                         ("append", ids("d"), {}))
    got = run(entries, lists)
    assert got == Plan(entries[1], entries[0], ids("a", "b", "c", "d"),
                       [(e.seq, e.manifest) for e in entries])


def test_a_second_cut_after_a_partial_cut() -> None:
    entries, lists = log(("create", ids("a", "b", "c", "d"), {}),
                         ("save", ids("a", "b"), {"suspect": True}),
                         ("append", ids("a", "b", "x"), {}),
                         ("save", ids("a"), {"suspect": True}),
                         ("append", ids("a", "y"), {}))
    got = run(entries, lists)
    assert got is not None and not got.skipped
    assert got.ids == ids("a", "b", "c", "d", "x", "y")
    assert got.shrink == entries[1] and got.before == entries[0]


def test_a_change_left_of_the_cut_is_skipped_with_its_reason() -> None:
    entries, lists = log(("create", ids("a", "b", "c"), {}),
                         ("save", ids("a", "b"), {"suspect": True}),
                         ("rewind", ids("z"), {"intentional": True}))
    got = run(entries, lists)
    assert got == Plan(entries[1], entries[0], [], [], skipped=(
        "version 3 (rewind) changed messages the shrink had cut; restore by hand from the"
        " version history"))


def test_a_flagged_version_that_lost_nothing_is_skipped() -> None:
    # Not made by this store's rules, but a plan never writes a version that changes nothing.
    entries, lists = log(("create", ids("a"), {}), ("save", ids("a"), {"suspect": True}))
    got = run(entries, lists)
    assert got == Plan(entries[1], entries[0], ids("a"), [(1, entries[0].manifest),
                                                         (2, entries[1].manifest)],
                       skipped="nothing was lost")


def test_the_versions_read_start_at_the_larger_version() -> None:
    entries, lists = log(("create", ids("q"), {}),
                         ("append", ids("q", "a"), {}),
                         ("save", [], {"suspect": True}),
                         ("append", ids("b"), {}))
    got = run(entries, lists)
    assert got is not None
    assert got.read == [(e.seq, e.manifest) for e in entries[1:]]
    assert got.ids == ids("q", "a", "b")


def test_the_window_starts_at_its_first_second() -> None:
    entries, lists = log(("create", ids("a"), {"at": T - 10}),
                         ("save", [], {"suspect": True, "at": T}))
    assert first_unresolved_shrink(entries, T) == 1
    assert first_unresolved_shrink(entries, T + 0.001) is None
    assert run(entries, lists) is not None


def test_the_first_version_is_never_a_shrink_to_act_on() -> None:
    entries, _ = log(("save", [], {"suspect": True}), ("append", ids("a"), {}))
    assert first_unresolved_shrink(entries, 0.0) is None
