"""The SQLite backend keeps its WAL near a quarter of the database while the store is open."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cas_store import open_store
from cas_store.backends import sqlite as S
from cas_store.backends import sqlite_wal as W


def _msg(i: int) -> dict[str, object]:
    return {"role": "user", "content": f"message {i} " + "lorem ipsum dolor " * (20 + i % 40)}


def test_wal_stays_near_its_share_of_the_database_while_open(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    backend = store.backend
    assert isinstance(backend, S.SQLiteBackend)
    store.create("c", {"title": "t"}, [])
    store.append("c", [_msg(i) for i in range(2000)])  # one big commit: a WAL of MiBs
    for i in range(2000, 2300):
        store.append("c", [_msg(i)])
    cp = backend._wal.checkpointer
    assert cp is not None and cp.passes > 0
    deadline = time.monotonic() + 30
    while not cp.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(2300, 2303):
        store.append("c", [_msg(i)])
    sizes = backend.file_sizes()
    wal, db = sizes["s.db-wal"], sizes["s.db"]
    limit = max(W.WAL_FLOOR_PAGES * S.PAGE_SIZE, int(db * W.WAL_RATIO))
    assert wal <= limit + 128 * 1024, (wal, db)
    assert len(store.load("c").messages) == 2303
    store.close()
    # Closed: the WAL is folded back and every message is there on reopening.
    with open_store(tmp_path / "s.db") as again:
        assert again.load_meta("c").message_count == 2303


def test_the_wal_fill_read_from_the_index_header_is_sqlites_own_count(tmp_path: Path) -> None:
    # The checkpoint is asked for by the frames in the WAL, read from the -shm header:
    # it must agree with what SQLite reports, before and after the WAL restarts.
    with open_store(tmp_path / "s.db") as store:
        backend = store.backend
        assert isinstance(backend, S.SQLiteBackend)
        store.create("c", {}, [])
        frame = S.PAGE_SIZE + 24

        def frames_in_wal() -> int:
            # -1 while the store's own checkpointer holds the checkpoint lock: ask again.
            deadline = time.monotonic() + 30
            while True:
                _, n, _ = backend._con().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if n >= 0 or time.monotonic() > deadline:
                    return int(n)
                time.sleep(0.01)

        for i in range(60):
            store.append("c", [_msg(i)])
            assert backend._wal.used() == 32 + frames_in_wal() * frame
        backend._con().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        store.append("c", [_msg(60)])
        frames = frames_in_wal()
        assert 0 < frames < 40
        assert backend._wal.used() == 32 + frames * frame


def _page_size(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("PRAGMA page_size").fetchone()[0])
    finally:
        con.close()


def test_a_new_store_takes_the_page_size_and_an_older_file_keeps_its_own(
        tmp_path: Path) -> None:
    with open_store(tmp_path / "new.db") as store:
        store.create("c", {}, [_msg(0)])
        assert store.backend._wal.floor == W.WAL_FLOOR_PAGES * S.PAGE_SIZE  # type: ignore[attr-defined]
    assert _page_size(tmp_path / "new.db") == S.PAGE_SIZE
    # A file made with SQLite's default pages, as stores were before PAGE_SIZE.
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute("PRAGMA page_size = 4096")
    con.execute("CREATE TABLE t (x)")
    con.execute("DROP TABLE t")
    con.close()
    assert _page_size(old) == 4096
    with open_store(old) as store:
        store.create("c", {}, [_msg(i) for i in range(300)])
        for i in range(300, 320):
            store.append("c", [_msg(i)])
        # Its WAL floor holds as many 4 KiB pages as a new store's does of its own.
        assert store.backend._wal.floor == W.WAL_FLOOR_PAGES * 4096  # type: ignore[attr-defined]
    assert _page_size(old) == 4096
    with open_store(old) as again:
        assert again.load_meta("c").message_count == 320


def test_close_stops_the_checkpointer_and_a_reopened_store_starts_another(
        tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    store.create("c", {}, [_msg(i) for i in range(1500)])
    for i in range(200):
        store.append("c", [_msg(i)])
    cp = store.backend._wal.checkpointer  # type: ignore[attr-defined]
    assert cp is not None
    store.close()
    assert not cp._thread.is_alive()
    with open_store(tmp_path / "s.db") as again:
        again.append("c", [_msg(i) for i in range(1500)])
        for i in range(200):
            again.append("c", [_msg(i)])
        assert again.load_meta("c").message_count == 1500 + 200 + 1700



def _level_on_another_thread(backend: S.SQLiteBackend, work: Callable[[], object]) -> int:
    seen: list[int] = []

    def run() -> None:
        work()
        seen.append(backend._con().execute("PRAGMA synchronous").fetchone()[0])

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return seen[0]


@pytest.mark.parametrize(("mode", "level"), [("NORMAL", 1), ("FULL", 2), ("EXTRA", 3)])
def test_every_connection_that_writes_or_checkpoints_has_the_durability_asked_for(
        tmp_path: Path, mode: str, level: int) -> None:
    # The write-side settings are applied before a connection's first write (not at
    # connect): a commit, a batch, a checkpoint on any thread must still get them.
    with open_store(tmp_path / "s.db", synchronous=mode) as store:
        backend = store.backend
        assert isinstance(backend, S.SQLiteBackend)
        store.create("a", {}, [_msg(0)])
        assert backend._con().execute("PRAGMA synchronous").fetchone()[0] == level

        def batched() -> None:
            with backend.batch():
                store.append("a", [_msg(1)])

        assert _level_on_another_thread(backend, batched) == level
        assert _level_on_another_thread(backend, backend.checkpoint) == level
        limit = backend._con().execute("PRAGMA journal_size_limit").fetchone()[0]
        assert limit == backend._wal.limit
