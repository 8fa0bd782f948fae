"""Several writers on one store: no lost update, no silent overwrite, order per writer kept."""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

import pytest

from cas_store import Conflict, Store, open_store

# Run on every backend (tests/conftest.py).
pytestmark = pytest.mark.all_backends


def _appender(path: str, writer: int, count: int) -> None:
    store = open_store(path)
    for i in range(count):
        store.append("shared", [{"role": "user", "writer": writer, "i": i}])
    store.close()


def _patcher(path: str, count: int) -> None:
    store = open_store(path)
    for i in range(count):
        meta = store.load_meta("shared")
        store.update_metadata("shared", {"active_stream_id": None, "poll": i})
        assert store.load_meta("shared").message_count >= meta.message_count
    store.close()


def _check_per_writer_order(store: Store, writers: int, count: int) -> None:
    messages = store.load("shared").messages
    assert len(messages) == writers * count
    for w in range(writers):
        assert [m["i"] for m in messages if m["writer"] == w] == list(range(count))


@pytest.mark.slow
def test_processes_appending_to_one_session_lose_nothing(store_path: Path) -> None:
    store = open_store(store_path)
    store.create("shared", {}, [])
    ctx = mp.get_context("spawn")
    writers, count = 4, 60
    procs = [ctx.Process(target=_appender, args=(str(store_path), w, count))
             for w in range(writers)]
    procs.append(ctx.Process(target=_patcher, args=(str(store_path), 60)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    _check_per_writer_order(store, writers, count)
    versions = store.versions("shared")
    counts = [v.message_count for v in reversed(versions)]
    assert counts == sorted(counts), "the message count only ever grows"
    assert store.fsck().ok
    store.close()


def test_threads_appending_to_one_session_lose_nothing(store: Store) -> None:
    store.create("shared", {}, [])
    writers, count = 4, 40

    def run(w: int) -> None:
        for i in range(count):
            store.append("shared", [{"role": "user", "writer": w, "i": i}])

    threads = [threading.Thread(target=run, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_per_writer_order(store, writers, count)
    assert store.versions("shared", limit=1)[0].seq == writers * count + 1


def test_racing_saves_with_the_same_expected_exactly_one_wins(store: Store) -> None:
    store.create("s", {}, [{"n": 0}])
    for round_ in range(10):
        seq = store.load_meta("s").seq
        results: list[str] = []
        barrier = threading.Barrier(4)

        def save(k: int, seq: int = seq, round_: int = round_,
                 barrier: threading.Barrier = barrier, results: list[str] = results) -> None:
            barrier.wait()
            try:
                store.save("s", [{"n": 0}, {"round": round_, "writer": k}], expected=seq)
                results.append("won")
            except Conflict:
                results.append("lost")

        threads = [threading.Thread(target=save, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["lost", "lost", "lost", "won"]
        assert store.load_meta("s").seq == seq + 1
