"""Several processes and threads on one store; the final state is checked against what
every writer was told.

Each worker (a thread inside a process, several processes) writes down every
acknowledgement it got; afterwards the store must hold each acknowledged version exactly
as acknowledged, lose no message, and pass fsck.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cas_store import (
    Conflict,
    SessionExists,
    SessionNotFound,
    Store,
    VersionNotFound,
    open_store,
)

Record = Callable[[str, Any], None]
PROCS, THREADS = 3, 2


def _run_workers(target: Callable[..., None], path: Path, out: Path, *args: Any) -> list[Any]:
    """Run target(path, worker, out_file, *args) in PROCS processes x THREADS threads."""
    ctx = mp.get_context("spawn")
    # All workers start at the same moment (after the slowest process has started), so
    # that they really overlap.
    start_at = time.time() + 3.0
    procs = [ctx.Process(target=_threads,
                         args=(target, str(path), p, str(out), start_at, *args))
             for p in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0, f"worker process failed ({p.exitcode})"
    results = []
    for f in sorted(out.glob("*.json")):
        results.extend(json.loads(f.read_text()))
    return results


def _threads(target: Callable[..., None], path: str, proc: int, out: str, start_at: float,
             *args: Any) -> None:
    store = open_store(path)
    acks: list[Any] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        try:
            got = target(store, worker, *args)
            with lock:
                acks.extend(got)
        except BaseException as exc:  # reported by the exit status below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(proc * THREADS + t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    if errors:
        raise errors[0]
    Path(out, f"{proc}.json").write_text(json.dumps(acks))


# --- appends racing metadata patches (the incident's shape) ---------------------------------


def _append_or_patch(store: Store, worker: int, count: int) -> list[Any]:
    acks = []
    if worker == 0:
        # The poller: reads metadata only, patches it, over and over, as the client
        # in the incident did while another client appended.
        seen = 0
        for i in range(count):
            meta = store.load_meta("shared")
            assert meta.message_count >= seen, "the message count went down"
            seen = meta.message_count
            v = store.update_metadata("shared", {"poll": i, "active_stream_id": None})
            acks.append({"kind": "patch", "i": i, "seq": v.seq, "count": v.message_count})
        return acks
    for i in range(count):
        v = store.append("shared", [{"role": "user", "w": worker, "i": i}])
        acks.append({"kind": "append", "w": worker, "i": i, "seq": v.seq,
                     "count": v.message_count})
    return acks


@pytest.mark.slow
def test_appends_racing_metadata_patches_lose_nothing(tmp_path: Path,
                                                      record_property: Record) -> None:
    path, count = tmp_path / "race.db", 60
    with open_store(path) as store:
        store.create("shared", {"title": "shared"}, [])
    out = tmp_path / "acks"
    out.mkdir()
    acks = _run_workers(_append_or_patch, path, out, count)
    with open_store(path) as store:
        messages = store.load("shared").messages
        appenders = PROCS * THREADS - 1
        assert len(messages) == appenders * count
        for w in range(1, appenders + 1):
            assert [m["i"] for m in messages if m["w"] == w] == list(range(count))
        seqs = Counter(a["seq"] for a in acks)
        assert max(seqs.values()) == 1, "two writers were told the same version"
        for a in acks:
            v = store.version("shared", a["seq"])
            assert v.message_count == a["count"]
            if a["kind"] == "append":
                assert v.op == "append"
                assert store.messages("shared", a["count"] - 1, 1, seq=a["seq"]) == [
                    {"role": "user", "w": a["w"], "i": a["i"]}]
            else:
                assert v.op == "update_metadata"
                assert store.load_meta("shared", seq=a["seq"]).metadata["poll"] == a["i"]
        counts = [v.message_count for v in reversed(store.versions("shared"))]
        assert counts == sorted(counts), "the message count only ever grows"
        assert store.fsck().ok
    record_property("what", "appends (5 writers) racing a metadata poller/patcher,"
                    f" {PROCS} processes x {THREADS} threads")
    record_property("acknowledged_writes", len(acks))
    record_property("versions_checked", len(acks))


# --- saves with If-Match racing ---------------------------------------------------------------


def _racing_saves(store: Store, worker: int, rounds: int) -> list[Any]:
    out = []
    for r in range(rounds):
        head = store.load("racy")
        mine = {"role": "user", "w": worker, "r": r}
        try:
            v = store.save("racy", [*head.messages, mine], {"by": worker}, expected=head.seq)
        except Conflict as exc:
            assert exc.current > head.seq
            out.append({"won": False, "expected": head.seq})
            continue
        assert v.seq == head.seq + 1
        out.append({"won": True, "seq": v.seq, "w": worker, "r": r, "base": head.seq})
    return out


@pytest.mark.slow
def test_saves_with_if_match_racing_exactly_one_wins_per_version(
        tmp_path: Path, record_property: Record) -> None:
    path, rounds = tmp_path / "race.db", 30
    with open_store(path) as store:
        store.create("racy", {}, [])
    out = tmp_path / "acks"
    out.mkdir()
    results = _run_workers(_racing_saves, path, out, rounds)
    wins = [r for r in results if r["won"]]
    with open_store(path) as store:
        head = store.load("racy")
        by_seq = Counter(w["seq"] for w in wins)
        assert max(by_seq.values()) == 1, "two saves won the same version"
        # Every version after the first was won by exactly one told winner.
        assert sorted(by_seq) == list(range(2, head.seq + 1))
        for w in wins:
            s = store.load_version("racy", w["seq"])
            assert s.messages[-1] == {"role": "user", "w": w["w"], "r": w["r"]}
            assert s.metadata == {"by": w["w"]}
            # Each winner built on the version it read: nothing before it was dropped.
            assert s.messages[:-1] == store.load_version("racy", w["base"]).messages
        assert all(not v.suspect_shrink for v in store.versions("racy"))
        assert store.fsck().ok
    record_property("what", f"saves with If-Match racing, {PROCS} processes x {THREADS}"
                    " threads")
    record_property("attempts", len(results))
    record_property("wins", len(wins))
    record_property("conflicts", len(results) - len(wins))


# --- fork, restore, delete interleaved --------------------------------------------------------

POOL = ("a", "b", "c")


def _mixed(store: Store, worker: int, steps: int) -> list[Any]:
    rng = random.Random(worker)
    out: list[Any] = []
    for n in range(steps):
        sid = rng.choice(POOL)
        op = rng.choice(["append", "append", "fork", "restore", "delete", "restore_deleted"])
        try:
            if op == "append":
                v = store.append(sid, [{"w": worker, "n": n}])
                out.append({"op": op, "sid": sid, "seq": v.seq, "count": v.message_count})
            elif op == "fork":
                src = store.versions(sid, limit=1)[0]
                new = f"fork-{worker}-{n % 4}"
                v = store.fork(sid, new, seq=src.seq)
                out.append({"op": op, "sid": new, "seq": v.seq, "src": sid,
                            "src_seq": src.seq, "count": v.message_count})
            elif op in ("restore", "restore_deleted"):
                head = store.versions(sid, limit=1)[0]
                if op == "restore_deleted" and head.op != "delete":
                    continue
                target = rng.randint(1, head.seq)
                v = store.restore(sid, target)
                out.append({"op": "restore", "sid": sid, "seq": v.seq, "target": target,
                            "count": v.message_count})
            else:
                v = store.delete(sid)
                out.append({"op": op, "sid": sid, "seq": v.seq, "count": v.message_count})
        except (SessionNotFound, SessionExists, VersionNotFound):
            continue  # another worker deleted / created it first: nothing was written
    return out


@pytest.mark.slow
def test_fork_restore_delete_interleaved(tmp_path: Path, record_property: Record) -> None:
    path, steps = tmp_path / "race.db", 60
    with open_store(path) as store:
        for sid in POOL:
            store.create(sid, {"title": sid}, [{"w": -1, "n": 0}])
    out = tmp_path / "acks"
    out.mkdir()
    acks = _run_workers(_mixed, path, out, steps)
    with open_store(path) as store:
        keys = Counter((a["sid"], a["seq"]) for a in acks)
        assert max(keys.values()) == 1, "two writers were told the same version"
        for a in acks:
            v = store.version(a["sid"], a["seq"])
            assert v.op == a["op"] and v.message_count == a["count"], a
            if a["op"] == "fork":
                assert v.manifest == store.version(a["src"], a["src_seq"]).manifest
            elif a["op"] == "restore":
                assert v.manifest == store.version(a["sid"], a["target"]).manifest
            elif a["op"] == "append":
                assert store.messages(a["sid"], a["count"] - 1, 1, seq=a["seq"])[0]["n"] >= 0
        sessions = store.list_sessions(limit=1000, include_deleted=True).sessions
        for s in sessions:
            seqs = [v.seq for v in store.versions(s.session_id)]
            assert seqs == list(range(s.seq, 0, -1)), "the version log has a gap"
            store.load_version(s.session_id, s.seq)
        report = store.fsck()
        assert report.ok, report.to_json()
    record_property("what", "append/fork/restore/delete interleaved on 3 sessions,"
                    f" {PROCS} processes x {THREADS} threads")
    record_property("acknowledged_writes", len(acks))
    record_property("ops", ", ".join(f"{k} {v}" for k, v in
                                     sorted(Counter(a["op"] for a in acks).items())))
    record_property("sessions_at_end", len(sessions))
