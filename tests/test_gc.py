"""GC: retention rules, the mark, the grace rule beside writers, dry run, interruption."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cas_store import InvalidArgument, Store, StoreLocked, VersionNotFound
from cas_store.backends import open_backend
from cas_store.gc import DAY, Bitmap, GCReport, gc
from cas_store.objects import Kind, canonical_json, object_id

NOW = 1_750_000_000.0

# Run on every backend (tests/conftest.py).
pytestmark = pytest.mark.all_backends


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def path(store_path: Path) -> Path:
    return store_path


def open_at(path: Path) -> Store:
    return Store(open_backend(path, synchronous="NORMAL"), clock=Clock())


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    s = open_at(path)
    yield s
    s.close()


def msg(i: int | str, size: int = 40) -> dict[str, Any]:
    return {"role": "user", "content": f"message {i} " + "x" * size}


def run_gc(store: Store, **kw: Any) -> GCReport:
    """Run GC (grace 0 unless given: everything written before it counts as old)."""
    kw.setdefault("grace", 0)
    time.sleep(0.002)  # write times strictly before the GC's start
    report = gc(store, **kw)
    fsck = store.fsck()
    assert fsck.ok, fsck.problems
    # Every version the log still names loads completely.
    for head in store.backend.iter_heads():
        for e in store.backend.versions(head.sid):
            store.load(head.sid, seq=e.seq)
    return report


def seqs(store: Store, sid: str) -> list[int]:
    return sorted(v.seq for v in store.versions(sid))


def chunk_stored(store: Store, value: Any) -> bool:
    oid = object_id(Kind.CHUNK, canonical_json(value))
    return not store.backend.missing([oid])


def history(store: Store, sid: str, n: int, *, start: float, step: float) -> None:
    """Create sid and append until it has n versions, version k at start + k*step."""
    store.create(sid, {"title": sid}, [msg(f"{sid}-0")], at=start)
    for k in range(2, n + 1):
        store.append(sid, [msg(f"{sid}-{k}")], at=start + k * step)


# --- retention, rule by rule -----------------------------------------------------------------


def test_default_keeps_every_version_and_every_object(store: Store) -> None:
    history(store, "a", 10, start=NOW - 100 * DAY, step=DAY)
    store.rewind("a", 3, at=NOW)
    before = store.stats()
    report = run_gc(store)
    assert seqs(store, "a") == list(range(1, 12))
    assert (report.versions_pruned, report.objects_swept) == (0, 0)
    assert store.stats().objects == before.objects


def test_keep_last(store: Store) -> None:
    history(store, "a", 10, start=NOW - DAY, step=60)
    report = run_gc(store, keep_last=3)
    assert seqs(store, "a") == [8, 9, 10]
    assert report.versions_pruned == 7
    assert report.versions_kept == 3


def test_keep_within(store: Store) -> None:
    history(store, "a", 10, start=NOW - 10 * DAY, step=DAY)  # version k at NOW - (10-k) days
    run_gc(store, keep_within=3 * DAY)
    assert seqs(store, "a") == [7, 8, 9, 10]


def test_keep_last_and_keep_within_combine_as_either(store: Store) -> None:
    history(store, "old", 10, start=NOW - 100 * DAY, step=DAY)  # all old: keep-last decides
    history(store, "new", 10, start=NOW - 10 * DAY, step=DAY)  # keep-within keeps more
    run_gc(store, keep_last=2, keep_within=4.5 * DAY)
    assert seqs(store, "old") == [9, 10]
    assert seqs(store, "new") == [6, 7, 8, 9, 10]


def test_head_is_always_kept(store: Store) -> None:
    history(store, "a", 5, start=NOW - 100 * DAY, step=DAY)
    run_gc(store, keep_within=DAY)
    assert seqs(store, "a") == [5]
    assert store.load("a").meta.message_count == 5


def test_pruned_version_objects_go_and_retained_ones_stay(store: Store) -> None:
    store.create("a", {}, [msg(i) for i in range(40)], at=NOW - 3 * DAY)
    store.rewind("a", 10, [msg("new")], at=NOW - 2 * DAY)  # intentional: 30 messages cut
    report = run_gc(store, keep_last=1)
    assert seqs(store, "a") == [2]
    assert not chunk_stored(store, msg(39))
    assert chunk_stored(store, msg(9)) and chunk_stored(store, msg("new"))
    assert report.objects_swept >= 30 and report.bytes_swept > 0
    assert [m["content"] for m in store.load("a").messages][-1] == msg("new")["content"]


def test_recovery_keeps_the_larger_side_of_a_suspect_shrink_and_all_after(store: Store) -> None:
    store.create("a", {}, [msg(i) for i in range(20)], at=NOW - 10 * DAY)
    for k in range(5):
        store.append("a", [msg(f"a{k}")], at=NOW - 9 * DAY + k)  # seqs 2..6
    store.save("a", [msg(0)], at=NOW - DAY)  # seq 7: suspect shrink, inside the window
    for k in range(3):
        store.append("a", [msg(f"b{k}")], at=NOW - DAY + k + 1)  # seqs 8..10
    run_gc(store, keep_last=1)
    assert seqs(store, "a") == [6, 7, 8, 9, 10]
    report = store.recover("a")
    assert [a.action for a in report.actions] == ["recovered"]
    assert store.load("a").meta.message_count == 25 + 3


def test_an_old_unreviewed_shrink_keeps_what_recovery_needs(store: Store) -> None:
    # Recovery acts on an unreviewed suspect shrink however old it is (an imported wipe
    # keeps its file's old times), so GC must not prune its larger side either: that
    # would make the loss permanent.
    store.create("a", {}, [msg(i) for i in range(20)], at=NOW - 30 * DAY)
    store.save("a", [msg(0)], at=NOW - 20 * DAY)  # suspect, older than the 7-day window
    store.append("a", [msg("z")], at=NOW - 19 * DAY)
    run_gc(store, keep_last=1)
    assert seqs(store, "a") == [1, 2, 3]
    assert chunk_stored(store, msg(19))
    report = store.recover("a")
    assert [a.action for a in report.actions] == ["recovered"]
    assert [m["content"] for m in store.load("a").messages] == [
        msg(i)["content"] for i in range(20)] + [msg("z")["content"]]
    run_gc(store, keep_last=1)  # resolved now: the old versions may go
    assert seqs(store, "a") == [4]


def test_resolved_shrink_keeps_nothing_extra(store: Store) -> None:
    store.create("a", {}, [msg(i) for i in range(20)], at=NOW - 3 * DAY)
    store.save("a", [msg(0)], at=NOW - 2 * DAY)
    store.recover("a")
    store.append("a", [msg("z")], at=NOW - 1)
    run_gc(store, keep_last=1)
    assert seqs(store, "a") == [4]
    assert store.load("a").meta.message_count == 21


def test_deleted_session_keeps_its_versions_until_deleted_retention(store: Store) -> None:
    history(store, "recent", 6, start=NOW - 50 * DAY, step=DAY)
    store.delete("recent", at=NOW - 10 * DAY)
    history(store, "expired", 6, start=NOW - 90 * DAY, step=DAY)
    store.append("expired", [msg("only-in-expired")], at=NOW - 80 * DAY)
    store.delete("expired", at=NOW - 40 * DAY)
    report = run_gc(store, keep_last=1)
    assert seqs(store, "recent") == list(range(1, 8))  # whole history, despite keep-last
    assert store.backend.head("expired") is None
    assert not chunk_stored(store, msg("only-in-expired"))
    assert report.sessions_dropped == 1
    assert report.versions_pruned == 8
    store.restore("recent", 3)  # still restorable
    assert store.load("recent").meta.message_count == 3


def test_deleted_retention_is_configurable(store: Store) -> None:
    history(store, "a", 3, start=NOW - 5 * DAY, step=1)
    store.delete("a", at=NOW - 2 * DAY)
    run_gc(store, deleted_retention=3 * DAY)
    assert store.backend.head("a") is not None
    run_gc(store, deleted_retention=DAY)
    assert store.backend.head("a") is None


def test_invalid_arguments(store: Store) -> None:
    for kw in ({"keep_last": 0}, {"keep_last": 1.5}, {"keep_within": -1}, {"grace": "1h"},
               {"deleted_retention": float("nan")}):
        with pytest.raises(InvalidArgument):
            gc(store, **kw)


# --- the grace rule beside writers -----------------------------------------------------------


def _orphan(store: Store, value: dict[str, Any]) -> None:
    """Leave value's chunk stored but referenced by no version (pruned by a first GC)."""
    store.create("src", {}, [value], at=NOW - 5 * DAY)
    store.rewind("src", 0, [msg("other")], at=NOW - 4 * DAY)


def test_old_unreferenced_chunk_is_swept(store: Store) -> None:
    _orphan(store, msg("orphan"))
    run_gc(store, keep_last=1)
    assert not chunk_stored(store, msg("orphan"))


def test_unreferenced_chunk_within_grace_survives(store: Store) -> None:
    _orphan(store, msg("orphan"))
    report = run_gc(store, keep_last=1, grace=3600)
    assert chunk_stored(store, msg("orphan"))
    assert report.objects_swept == 0


@pytest.mark.parametrize("batch", [1, 20], ids=["put", "touch"])
def test_dedup_hit_on_old_unreferenced_chunk_survives(store: Store, batch: int) -> None:
    # A writer reuses an old chunk nothing references just after the mark finished: the
    # dedup hit refreshes its write time, so the sweep spares it and the new version is
    # complete. (batch > 8 takes the "known to exist, refresh only" path of a save.)
    _orphan(store, msg("orphan"))
    store.create("b", {}, [], at=NOW)
    wrote: list[int] = []

    def writer(phase: str, done: int, total: int | None) -> None:
        if phase == "sweep" and not wrote:
            extra = [msg(f"pad{i}") for i in range(batch - 1)]
            wrote.append(store.save("b", [*extra, msg("orphan")], at=NOW).seq)

    report = run_gc(store, keep_last=1, progress=writer)
    assert wrote
    assert chunk_stored(store, msg("orphan"))
    assert store.load("b").messages[-1] == msg("orphan")
    assert report.objects_swept >= 1  # the other garbage of "src" did go


def test_versions_committed_during_the_mark_are_marked_too(store: Store) -> None:
    history(store, "a", 3, start=NOW - DAY, step=1)
    done: list[int] = []

    def writer(phase: str, n: int, total: int | None) -> None:
        if phase == "mark" and not done:  # first report: the listing is done
            done.append(store.fork("a", "f").seq)
            store.rewind("a", 0, [msg("after")], at=NOW)

    report = gc(store, keep_last=1, grace=0, progress=writer)
    assert done
    assert report.versions_kept == 3  # a@3 from the listing; f@1 and a@4 from the re-scan
    assert store.fsck().ok
    assert store.load("f").meta.message_count == 3
    assert store.load("a").messages == [msg("after")]


# --- the mark ----------------------------------------------------------------------------------


def test_shared_pages_are_read_once(store: Store) -> None:
    store.create("a", {}, [msg(i) for i in range(16 * 20)], at=NOW - DAY)
    for k in range(30):
        store.append("a", [msg(f"n{k}")], at=NOW - DAY + k)
    for k in range(5):
        store.fork("a", f"f{k}")
    backend = store.backend
    asked: list[bytes] = []
    original = backend.get_frames

    def counting(oids: Any) -> Any:
        got = original(oids)
        asked.extend(o for o in oids if got.get(o, (None,))[0] == Kind.PAGE)
        return got

    backend.get_frames = counting  # type: ignore[method-assign]
    report = gc(store)
    backend.get_frames = original  # type: ignore[method-assign]
    pages = store.stats().objects["page"]
    assert len(asked) == len(set(asked)) == pages
    total = sum(store.stats().objects.values())
    assert report.objects_marked == total


def test_bitmap() -> None:
    b = Bitmap()
    assert b.add(0) and b.add(7) and b.add(8) and b.add(1_000_003)
    assert not b.add(7)
    assert 7 in b and 1_000_003 in b and 6 not in b and 5_000_000 not in b and -0 in b
    assert b.count == 4
    assert b.nbytes < 300_000


# --- dry run, report, interruption -------------------------------------------------------------


def _garbage_store(store: Store) -> None:
    history(store, "a", 8, start=NOW - 10 * DAY, step=DAY)
    store.rewind("a", 2, [msg("r")], at=NOW - DAY)
    history(store, "d", 4, start=NOW - 90 * DAY, step=DAY)
    store.delete("d", at=NOW - 60 * DAY)


def _file_hash(path: Path) -> str | None:
    """The SQLite file's hash (None for a networked store)."""
    if not isinstance(path, Path):
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(store: Store) -> tuple[Any, ...]:
    """What the backend holds, as values: heads, logs, object infos with write times."""
    b = store.backend
    heads = sorted(b.iter_heads(), key=lambda h: h.sid)
    return (heads, [b.versions(h.sid) for h in heads],
            sorted(b.iter_objects(), key=lambda i: i.oid))


def test_dry_run_changes_nothing_and_predicts_the_real_run(path: Path) -> None:
    s = open_at(path)
    _garbage_store(s)
    s.close()  # the last connection folds the WAL into the file
    before = _file_hash(path)
    s = open_at(path)
    state = _state(s)
    time.sleep(0.002)
    dry = gc(s, keep_last=2, grace=0, dry_run=True)
    s.close()
    assert _file_hash(path) == before
    s = open_at(path)
    assert _state(s) == state
    s.close()
    assert dry.dry_run and dry.versions_pruned > 0 and dry.objects_swept > 0
    s = open_at(path)
    real = run_gc(s, keep_last=2)
    for field in ("versions_pruned", "versions_kept", "sessions_dropped", "objects_swept",
                  "bytes_swept", "objects_marked"):
        assert getattr(real, field) == getattr(dry, field), field
    again = run_gc(s, keep_last=2)
    assert (again.versions_pruned, again.objects_swept) == (0, 0)
    s.close()


def test_report_json(store: Store) -> None:
    _garbage_store(store)
    j = run_gc(store, keep_last=2).to_json()
    assert j["dry_run"] is False
    assert j["versions_pruned"] > 0 and j["objects_swept"] > 0 and j["bytes_swept"] > 0
    assert set(j) >= {"sessions", "sessions_dropped", "versions_kept", "objects_marked",
                      "missing", "seconds", "cutoff"}


@pytest.mark.parametrize("phase", ["retention", "mark", "sweep"])
def test_interrupted_gc_leaves_a_consistent_store_and_a_rerun_finishes(
        store: Store, phase: str) -> None:
    for k in range(120):
        history(store, f"s{k:03}", 3, start=NOW - 10 * DAY, step=1)
        store.rewind(f"s{k:03}", 0, [msg(f"r{k}")], at=NOW - DAY)
    expected = gc(store, keep_last=1, grace=0, dry_run=True)

    def interrupt(p: str, done: int, total: int | None) -> None:
        # retention: after 100 of 120 sessions; mark: between mark and sweep; sweep: after
        # the first batch of deletes.
        if p == phase:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gc(store, keep_last=1, grace=0, progress=interrupt)
    assert store.fsck().ok
    first_total = store.stats()
    rest = run_gc(store, keep_last=1)
    assert rest.objects_swept <= expected.objects_swept
    after = store.stats()
    assert sum(after.objects.values()) == sum(first_total.objects.values()) - rest.objects_swept
    assert after.versions == 120
    assert gc(store, keep_last=1, grace=0, dry_run=True).objects_swept == 0


def test_pruned_version_is_gone_for_restore(store: Store) -> None:
    history(store, "a", 4, start=NOW - DAY, step=1)
    run_gc(store, keep_last=1)
    with pytest.raises(VersionNotFound):
        store.restore("a", 1)


def test_a_second_gc_is_refused_while_one_holds_the_lease(store: Store) -> None:
    _garbage_store(store)
    assert store.backend.lease("gc", "other-run", 60)
    with pytest.raises(StoreLocked, match="another gc is running"):
        gc(store, keep_last=1, grace=0)
    assert gc(store, keep_last=1, grace=0, dry_run=True).versions_pruned > 0  # writes nothing
    assert store.versions("a")[-1].seq == 1  # nothing was pruned by the refused run
    store.backend.release("gc", "other-run")
    assert run_gc(store, keep_last=1).versions_pruned > 0
    assert store.backend.lease("gc", "next", 60)  # the finished run gave the lease up


def test_a_killed_gc_blocks_the_next_one_only_until_its_lease_expires(store: Store) -> None:
    assert store.backend.lease("gc", "killed-run", 0.05)
    time.sleep(0.1)
    run_gc(store)
