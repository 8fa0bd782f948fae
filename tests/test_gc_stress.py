"""GC in a loop beside writer processes: afterwards fsck is clean and every version loads.

Writers append, save with suspect and intentional shrinks, update metadata, fork from
old versions, restore old versions and delete sessions, while the test process runs GC
with a small grace and a tight retention over and over. The only errors a writer may
see are the ones a pruned version or a deleted session explain.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest

from cas_store import (
    Conflict,
    SessionExists,
    SessionNotFound,
    Store,
    VersionNotFound,
    gc,
)
from cas_store.backends import open_backend

# Run on every backend (tests/conftest.py).
pytestmark = pytest.mark.all_backends

WRITERS = 3
SECONDS = 20.0
EXPECTED = (VersionNotFound, SessionNotFound, SessionExists, Conflict)


def _msg(rng: random.Random, tag: str) -> dict[str, Any]:
    return {"role": rng.choice(["user", "assistant"]),
            "content": f"{tag} " + "y" * rng.randint(10, 300)}


def writer(path: str, wid: int, seconds: float, errors: Any, counts: Any) -> None:
    """Do random session operations until the deadline; report unexpected errors."""
    rng = random.Random(wid)
    store = Store(open_backend(path, synchronous="NORMAL"))
    ops = 0
    mine: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            heads = [h.sid for h in store.backend.list_heads(limit=50)]
            sid = rng.choice(mine or heads or [""])
            roll = rng.random()
            try:
                if not sid or roll < 0.05:
                    sid = f"w{wid}-{uuid.uuid4().hex[:8]}"
                    store.create(sid, {"title": sid},
                                 [_msg(rng, f"{sid}-{i}") for i in range(rng.randint(0, 40))])
                    mine.append(sid)
                elif roll < 0.50:
                    store.append(sid, [_msg(rng, f"{sid}-{ops}-{i}")
                                       for i in range(rng.randint(1, 3))])
                elif roll < 0.60:
                    s = store.load(sid)
                    keep = rng.randint(0, max(0, len(s.messages) - 1))
                    store.save(sid, s.messages[:keep], intentional_shrink=rng.random() < 0.5)
                elif roll < 0.65:
                    # keep comes from this read: pin it, or another writer's restore
                    # may shorten the session first (keep > count is refused).
                    meta = store.load_meta(sid)
                    store.rewind(sid, rng.randint(0, meta.message_count),
                                 [_msg(rng, f"{sid}-rw{ops}")], expected=meta.seq)
                elif roll < 0.75:
                    store.update_metadata(sid, {"title": f"t{ops}", "n": ops})
                elif roll < 0.83:
                    seq = rng.choice(store.versions(sid)).seq
                    store.fork(sid, f"f{wid}-{uuid.uuid4().hex[:8]}", seq=seq)
                elif roll < 0.91:
                    seq = rng.choice(store.versions(sid)).seq
                    store.restore(sid, seq)
                elif roll < 0.93:
                    store.delete(sid)
                    if sid in mine:
                        mine.remove(sid)
                else:
                    seq = rng.choice(store.versions(sid)).seq
                    store.load(sid, seq=seq)
                ops += 1
            except EXPECTED:
                pass
    except BaseException:
        errors.put(f"writer {wid}: {traceback.format_exc()}")
    finally:
        counts.put(ops)
        store.close()


@pytest.mark.slow
def test_gc_loop_beside_writers(store_path: Path) -> None:
    path = store_path
    Store(open_backend(path)).close()
    ctx = multiprocessing.get_context("spawn")
    errors, counts = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(str(path), w, SECONDS, errors, counts))
             for w in range(WRITERS)]
    for p in procs:
        p.start()
    store = Store(open_backend(path, synchronous="NORMAL"))
    rng = random.Random(0)
    runs = swept = pruned = 0
    try:
        while any(p.is_alive() for p in procs):
            report = gc(store, keep_last=rng.choice([None, 1, 2, 3]),
                        keep_within=rng.choice([None, 0.5, 2.0]), deleted_retention=0.5,
                        grace=0.05, dry_run=rng.random() < 0.1)
            runs += 1
            if not report.dry_run:
                swept += report.objects_swept
                pruned += report.versions_pruned
            time.sleep(0.05)
    finally:
        for p in procs:
            p.join(timeout=60)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, "\n".join(failures)
    ops = sum(counts.get() for _ in procs)
    assert all(p.exitcode == 0 for p in procs)
    # The run did what it is meant to: many writes, many GCs that removed things.
    print("ops", ops, "gc runs", runs, "swept", swept, "pruned", pruned)
    assert ops > 200 and runs > 5 and swept > 0 and pruned > 0, (ops, runs, swept, pruned)

    report = store.fsck()
    assert report.ok, report.problems[:5]
    loaded = 0
    for head in store.backend.iter_heads():
        for e in store.backend.versions(head.sid):
            s = store.load(head.sid, seq=e.seq)
            assert len(s.messages) == e.message_count
            loaded += 1
    assert loaded == report.versions_checked
    # A last GC with nothing writing leaves nothing behind that it would still remove.
    gc(store, grace=0)
    assert gc(store, grace=0, dry_run=True).objects_swept == 0
    assert store.fsck().ok
    store.close()
