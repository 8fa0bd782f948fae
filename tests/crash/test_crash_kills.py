"""SIGKILL at random moments: no acknowledged save is lost, and the store stays whole.

Counts come from CAS_CRASH_KILLS (default 200 for the main run); the other runs scale
from it. Every figure is recorded as a test property for tests/RELIABILITY.md.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crash_harness import Child, kill_count, opened, run_kills
from crash_writer import digest

from cas_store import Store, open_store

Record = Callable[[str, Any], None]
SEED = 8


def _record(record_property: Record, what: str, figures: dict[str, Any]) -> None:
    record_property("what", what)
    for name, value in figures.items():
        record_property(name, value)


@pytest.mark.slow
def test_sigkill_during_writes_loses_nothing(tmp_path: Path, record_property: Record) -> None:
    kills = kill_count()
    figures = run_kills(tmp_path / "crash.db", kills, SEED)
    _record(record_property, "writer killed with SIGKILL mid-operation (synchronous=FULL)",
            figures.as_properties())
    assert figures.kills == kills
    assert figures.acks_checked >= figures.acks
    # The kills must land mid-write often enough to mean something.
    assert figures.in_flight_landed + figures.in_flight_not_landed > kills // 4


@pytest.mark.slow
def test_sigkill_with_synchronous_normal_loses_nothing(tmp_path: Path,
                                                       record_property: Record) -> None:
    kills = max(10, kill_count() // 4)
    figures = run_kills(tmp_path / "crash.db", kills, SEED + 1, sync="NORMAL")
    _record(record_property, "writer killed with SIGKILL (synchronous=NORMAL)",
            figures.as_properties())
    assert figures.kills == kills


@pytest.mark.slow
def test_sigkill_during_gc_beside_a_writer(tmp_path: Path, record_property: Record) -> None:
    kills = max(10, kill_count() // 4)
    figures = run_kills(tmp_path / "crash.db", kills, SEED + 2, with_gc=True)
    _record(record_property, "GC loop (keep_last=3, grace=0) and writer both killed",
            figures.as_properties())
    assert figures.kills == kills
    assert figures.kills_mid_gc > 0
    assert figures.gc_runs > 0


# --- recovery ------------------------------------------------------------------------------


def _head_digest(store: Store, sid: str) -> tuple[int, str]:
    s = store.load(sid)
    return s.seq, digest(list(s.messages), dict(s.metadata))


def _build_suspect_store(path: Path, sessions: int) -> list[str]:
    """Sessions cut short by an undeclared shrink (and one declared), then appended to."""
    rng = random.Random(SEED)
    store = open_store(path)
    sids = []
    for i in range(sessions):
        sid = f"r{i}"
        sids.append(sid)
        msgs = [{"role": "user", "content": f"{sid} m{j}"} for j in range(rng.randint(8, 30))]
        store.create(sid, {"title": sid}, msgs)
        store.append(sid, [{"role": "assistant", "content": f"{sid} a"}])
        cut = msgs[: rng.randint(0, 5)]
        store.save(sid, cut, intentional_shrink=(i % 5 == 0))
        store.append(sid, [{"role": "user", "content": f"{sid} after {k}"} for k in range(2)])
        store.update_metadata(sid, {"poll": i})
    store.close()
    return sids


def _copy(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    b.close()
    a.close()


@pytest.mark.slow
def test_sigkill_during_recovery(tmp_path: Path, record_property: Record) -> None:
    rounds = max(5, kill_count() // 8)
    pristine = tmp_path / "pristine.db"
    sids = _build_suspect_store(pristine, 40)
    with opened(pristine, "FULL") as store:
        before = {s: _head_digest(store, s) for s in sids}
    reference = tmp_path / "reference.db"
    _copy(pristine, reference)
    with opened(reference, "FULL") as store:
        t0 = time.monotonic()
        done = store.recover()
        duration = time.monotonic() - t0
        after = {s: _head_digest(store, s) for s in sids}
    recovered = {a.session_id for a in done.actions if a.action == "recovered"}
    assert len(recovered) >= 20  # the fixture is mostly suspect shrinks
    assert all(after[s][1] == before[s][1] for s in sids if s not in recovered)

    rng = random.Random(SEED)
    work = tmp_path / "work.db"
    partial = mid = 0
    for k in range(rounds):
        _copy(pristine, work)
        child = Child("recover", work, k, "FULL")
        child.wait_ready()
        time.sleep(rng.uniform(0.0, duration * 1.3))
        lines = child.kill(check=False)
        finished = any("recovered" in x for x in lines)
        mid += not finished
        with opened(work, "FULL") as store:
            assert store.fsck().ok
            done_here = 0
            for s in sids:
                seq, d = _head_digest(store, s)
                # Each session is either untouched or recovered whole: never half.
                assert (seq, d) in (before[s], after[s]), s
                done_here += (seq, d) == after[s] and s in recovered
            partial += 0 < done_here < len(recovered)
            # A later recovery completes the job, and a third one changes nothing.
            store.recover()
            assert {s: _head_digest(store, s) for s in sids} == after
            again = store.recover()
            assert not [a for a in again.actions if a.action == "recovered"]
            assert {s: _head_digest(store, s) for s in sids} == after
            assert store.fsck().ok
    _record(record_property, "recovery (40 sessions) killed mid-run, then run again twice", {
        "kills": rounds, "kills_mid_recovery": mid, "kills_with_part_recovered": partial,
        "sessions_to_recover": len(recovered), "recovery_seconds": round(duration, 3),
    })
    assert mid > 0
