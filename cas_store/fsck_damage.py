"""fsck of a damaged database file: what the file's own check finds, and what can still be read.

``run_fsck`` walks objects and versions assuming the file itself is sound. When it is not
(a truncated file, garbage pages: SQLite says "malformed"), the walk stops with a
``CorruptStore`` part way. This module turns that into a report instead of an error:
the backend's own integrity check (SQLite's ``PRAGMA integrity_check``), why the walk
stopped, and a walk session by session that names each session whose head still loads
and each that does not, so the readable ones can be exported before anything is repaired.
Read-only, like fsck.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import CasError, CorruptStore, NotFound
from .model import FsckProblem, FsckReport

if TYPE_CHECKING:
    from .store import Store

#: Lines of the file check reported (SQLite stops at 100 anyway).
MAX_CHECK_LINES = 20


def file_problems(store: Store, *, full: bool) -> list[FsckProblem]:
    """Return one problem per finding of the backend's check of its own files (none: sound)."""
    check = getattr(store.backend, "integrity_check", None)
    if check is None:
        return []
    found: list[str] = check() if full else check(max_errors=1, quick=True)
    if found and not full:
        found = check()  # the quick check found something: get the whole list
    return [FsckProblem("corrupt_store", "", f"database check: {line}")
            for line in found[:MAX_CHECK_LINES]]


def guarded(store: Store, walk: Callable[[], FsckReport]) -> FsckReport:
    """Return walk()'s report plus the file check; a damaged file is reported, never raised."""
    try:
        report = walk()
    except CorruptStore as exc:
        return salvage(store, exc)
    damage = getattr(store.backend, "damage", None)
    problems = file_problems(store, full=damage is not None)
    if damage is not None and not problems:
        problems = [FsckProblem("corrupt_store", "", f"opening the store: {damage}")]
    if not problems:
        return report
    return FsckReport(report.objects_checked, report.versions_checked,
                      report.sessions_checked, report.problems + problems)


def salvage(store: Store, exc: CorruptStore) -> FsckReport:
    """Report a store whose walk stopped at damage: the file check, then session by session."""
    problems = file_problems(store, full=True)
    problems.append(FsckProblem("corrupt_store", "", f"object walk stopped: {exc}"))
    heads: list[tuple[str, int]] = []
    try:
        for head in store.backend.iter_heads():
            heads.append((head.sid, head.seq))
    except CasError as err:
        problems.append(FsckProblem(
            "corrupt_store", "", f"the session list is damaged after {len(heads)} sessions"
            f" ({err}); sessions past that point are not named"))
    readable: list[tuple[str, int]] = []
    versions = 0
    for sid, seq in heads:
        try:
            store.load(sid, seq=seq)
            versions += 1
            readable.append((sid, seq))
        except NotFound as err:  # a head row whose version entry was lost with a page
            problems.append(FsckProblem("unreadable_session", "", f"session {sid!r}: {err}",
                                        [(sid, seq)]))
        except CasError as err:
            problems.append(FsckProblem("unreadable_session", "", f"session {sid!r}: {err}",
                                        [(sid, seq)]))
    names = ", ".join(sid for sid, _ in readable[:50])
    more = f" (+{len(readable) - 50} more)" if len(readable) > 50 else ""
    problems.append(FsckProblem(
        "readable_sessions", "",
        f"{len(readable)} of {len(heads)} sessions still load at their head: {names or 'none'}"
        f"{more}; copy them out with `cas-store export SESSION` before repairing",
        readable))
    return FsckReport(0, versions, len(heads), problems)
