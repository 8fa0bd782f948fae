"""The change feed: cursors on the log, the backfill migration, blocking and async followers."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from cas_store import InvalidArgument, StorageError, Store, open_store
from cas_store.backends import sqlite as sqlite_backend
from cas_store.feed import Change


def m(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


@pytest.mark.all_backends
def test_cursors_increase_across_sessions_and_changes_resumes_exactly(store: Store) -> None:
    store.create("a", {}, [m("1")])
    store.create("b", {}, [])
    store.append("a", [m("2")])
    store.delete("b")
    all_ = store.changes()
    assert [(c.session_id, c.seq, c.op) for c in all_] == [
        ("a", 1, "create"), ("b", 1, "create"), ("a", 2, "append"), ("b", 2, "delete")]
    assert [c.cursor for c in all_] == [1, 2, 3, 4]
    assert all_[3].deleted and not all_[2].deleted
    assert all_[2].message_count == 2
    assert store.changes(after=2) == all_[2:]
    assert store.changes(after=0, session_id="b") == [all_[1], all_[3]]
    assert store.changes(after=4) == []
    assert store.changes(after=0, limit=2) == all_[:2]
    with pytest.raises(InvalidArgument):
        store.changes(after=-1)


@pytest.mark.all_backends
def test_a_cursor_is_never_reused_when_gc_drops_the_newest_entries(store: Store) -> None:
    store.create("a", {}, [])
    v = store.delete("a")
    assert store.backend.drop_session("a", v.seq)
    assert store.changes() == []
    store.create("b", {}, [])
    assert [c.cursor for c in store.changes()] == [3]


def test_a_store_whose_counter_ran_ahead_of_its_log_keeps_counting_after_the_upgrade(
        store_path: Path) -> None:
    # A store written by the counter-row schema (6), where GC then dropped the newest
    # entries: its row says 3 while the newest entry left holds cursor 1.
    with open_store(store_path) as s:
        s.create("a", {}, [m("1")])
        s.create("b", {}, [])
        v = s.delete("b")
        assert s.backend.drop_session("b", v.seq)
    con = sqlite3.connect(store_path)
    con.execute("UPDATE store_info SET value = '6' WHERE key = 'schema'")
    con.execute("UPDATE store_info SET value = '3' WHERE key = 'cursor'")
    con.commit()
    con.close()
    with open_store(store_path) as s:
        assert s.backend.last_cursor() == 3
        s.append("a", [m("2")])
        assert [c.cursor for c in s.changes()] == [1, 4]
    con = sqlite3.connect(store_path)
    assert con.execute("SELECT value FROM store_info WHERE key = 'schema'").fetchone() == (
        str(sqlite_backend.SCHEMA_VERSION),)
    con.close()


def test_migration_numbers_existing_entries_by_time_and_marks_search_stale(
        store_path: Path) -> None:
    # A store as the first schema wrote it: no cursor column, no search tables.
    con = sqlite3.connect(store_path)
    con.executescript(sqlite_backend._SCHEMA)
    con.execute("INSERT INTO store_info VALUES ('schema', '1')")
    con.commit()
    con.close()
    with open_store(store_path) as s:  # migrates the empty store
        s.create("late", {}, [m("zebra")])
        s.create("early", {}, [m("yak")], at=1.0)
    # Back to a first-schema store holding those rows, cursors forgotten.
    con = sqlite3.connect(store_path)
    rows = con.execute("SELECT sid, seq, manifest, created_at, op, message_count, nbytes,"
                       " flags FROM versions").fetchall()
    objects = con.execute("SELECT oid, kind, size, data, wtime FROM objects").fetchall()
    heads = con.execute("SELECT sid, seq, manifest, message_count, nbytes, title, created_at,"
                        " updated_at, deleted, suspect_pending FROM sessions").fetchall()
    con.close()
    store_path.unlink()
    con = sqlite3.connect(store_path)
    con.executescript(sqlite_backend._SCHEMA)
    con.execute("INSERT INTO store_info VALUES ('schema', '1')")
    con.executemany("INSERT INTO versions VALUES (?,?,?,?,?,?,?,?)", rows)
    con.executemany("INSERT INTO objects VALUES (?,?,?,?,?)", objects)
    con.executemany("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?)", heads)
    con.commit()
    con.close()
    with open_store(store_path) as s:
        assert [(c.session_id, c.cursor) for c in s.changes()] == [("early", 1), ("late", 2)]
        s.append("late", [m("more")])
        assert s.changes(after=2)[0].cursor == 3
        with pytest.raises(StorageError, match="reindex"):
            s.search("zebra")
        assert s.fsck().ok  # a stale index is a known state, not damage
        s.reindex()
        assert [h.session_id for h in s.search("zebra").hits] == ["late"]
        assert s.fsck().ok


@pytest.mark.all_backends
def test_follow_yields_the_backlog_then_live_changes(store: Store) -> None:
    store.create("a", {}, [])
    got: list[Change] = []
    t = threading.Thread(target=lambda: got.extend(store.follow(after=0, timeout=1.5)))
    t.start()
    time.sleep(0.3)
    store.append("a", [m("x")])
    store.create("b", {}, [])
    t.join(10)
    assert [(c.session_id, c.op) for c in got] == [("a", "create"), ("a", "append"),
                                                   ("b", "create")]


@pytest.mark.all_backends
def test_follow_from_now_and_one_session_only(store: Store) -> None:
    store.create("a", {}, [])
    store.create("b", {}, [])
    got: list[Change] = []
    t = threading.Thread(target=lambda: got.extend(store.follow(session_id="b",
                                                                timeout=1.5)))
    t.start()
    time.sleep(0.3)
    store.append("a", [m("x")])
    store.append("b", [m("y")])
    t.join(10)
    assert [(c.session_id, c.seq) for c in got] == [("b", 2)]


_WRITER = """
import sys
from cas_store import open_store
with open_store(sys.argv[1]) as s:
    for i in range(5):
        s.append("a", [{"role": "user", "content": str(i)}])
"""


@pytest.mark.all_backends
def test_another_processs_commits_arrive_through_the_one_watcher(store: Store,
                                                                  store_path: Path) -> None:
    store.create("a", {}, [])

    async def collect() -> list[Change]:
        got: list[Change] = []
        followers = [store.follow_async(after=None) for _ in range(50)]
        first = followers[0]

        async def drain(it: object) -> None:
            async for _c in it:  # type: ignore[attr-defined]
                pass

        others = [asyncio.create_task(drain(f)) for f in followers[1:]]
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _WRITER,
                                                    str(store_path))
        async for c in first:
            got.append(c)
            if len(got) == 5:
                break
        await proc.wait()
        # Fifty subscribers, one watcher thread.
        assert sum(t.name == "cas-feed" for t in threading.enumerate()) == 1
        for o in others:
            o.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        return got

    got = asyncio.run(asyncio.wait_for(collect(), 60))
    assert [c.seq for c in got] == [2, 3, 4, 5, 6]
    assert store.feed.subscribers <= 1  # the cancelled followers unsubscribed


@pytest.mark.all_backends
def test_close_stops_the_watcher(store_path: Path) -> None:
    s = open_store(store_path)
    s.create("a", {}, [])
    it = s.follow(after=0)
    assert next(it).op == "create"
    s.close()
    assert not any(t.name == "cas-feed" and t.is_alive() for t in threading.enumerate())
    assert list(it) == []


def test_async_followers_of_one_session_get_only_its_moves(store: Store) -> None:
    store.create("a", {}, [])
    store.create("b", {}, [])

    async def run() -> tuple[list[Change], list[Change]]:
        got_a: list[Change] = []
        got_all: list[Change] = []

        async def take(it: object, out: list[Change], n: int) -> None:
            async for c in it:  # type: ignore[attr-defined]
                out.append(c)
                if len(out) == n:
                    return

        ta = asyncio.create_task(take(store.follow_async(session_id="a"), got_a, 2))
        tall = asyncio.create_task(take(store.follow_async(), got_all, 4))
        await asyncio.sleep(0.3)
        for sid in ("b", "a", "b", "a"):
            await asyncio.to_thread(store.append, sid, [m(sid)])
        await asyncio.wait_for(asyncio.gather(ta, tall), 20)
        return got_a, got_all

    got_a, got_all = asyncio.run(run())
    assert [(c.session_id, c.seq) for c in got_a] == [("a", 2), ("a", 3)]
    assert [c.session_id for c in got_all] == ["b", "a", "b", "a"]
    assert store.feed._loops == {}  # every follower unsubscribed
