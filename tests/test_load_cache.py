"""Repeat full loads (caches.ByteCache): what a store decoded once is only parsed again.

A chat UI reopens the conversation it just appended to; its frozen pages have not
changed, so a repeat load reads no pack and only the tail's new chunks. These tests
count what the backend is asked for, and check that what is kept never changes what a
load returns, stays within its budget, and hides no damage from fsck.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support import msgs

from cas_store import Limits, Store, open_store, packs
from cas_store import lists as L
from cas_store.caches import ByteCache
from cas_store.objects import Kind, canonical_json, object_id


class Spy:
    """Counts the pack frames and chunks a store's backend is asked for."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = store
        self.pack_reads = 0
        real = store.backend.pack_frames

        def pack_frames(pages: Any) -> Any:
            self.pack_reads += 1
            return real(pages)

        monkeypatch.setattr(store.backend, "pack_frames", pack_frames)

    def chunks(self) -> int:
        return self.store.reads["chunk"]


def _quiet_message(store: Store, sid: str, start: int) -> dict[str, object]:
    """Return a message whose append freezes no page (its id ends none, the tail has room)."""
    tail = store.io().manifest(bytes.fromhex(store.load_meta(sid).manifest)).messages.tail  # type: ignore[arg-type]
    assert len(tail) + 1 < L.MAX_PAGE
    for i in range(start, start + 1000):
        m = {"role": "user", "content": f"one more, number {i}"}
        if not L.ends_page(object_id(Kind.CHUNK, canonical_json(m))):
            return m
    raise AssertionError("no such message in 1,000 tries")


def test_a_repeat_load_reads_no_pack_and_no_chunk(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    want = msgs(0, 3000)
    with open_store(tmp_path / "s.db") as store:
        store.create("a", {"title": "t"}, want)
    with open_store(tmp_path / "s.db") as store:
        spy = Spy(store, monkeypatch)
        assert store.load("a").messages == want
        # Read once, nothing is kept (an export or a scan pushes nothing out).
        assert len(store._loaded) == 0 and store._loaded.used == 0
        first_packs, first_chunks = spy.pack_reads, spy.chunks()
        assert first_packs >= 3 and first_chunks > 0  # three batches of a thousand, a tail
        assert store.load("a").messages == want  # read again: now kept
        assert spy.pack_reads == 2 * first_packs and spy.chunks() == 2 * first_chunks
        second_packs, second_chunks = spy.pack_reads, spy.chunks()
        again = store.load("a").messages
        assert again == want
        assert (spy.pack_reads, spy.chunks()) == (second_packs, second_chunks)
        # Each load parses anew: a caller changing what it got changes no later load.
        again[0]["content"] = "changed"
        assert store.load("a").messages == want


def test_after_an_append_a_reload_reads_only_the_new_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(tmp_path / "s.db") as store:
        store.create("a", {}, msgs(0, 1500))
        spy = Spy(store, monkeypatch)
        store.load("a")
        store.load("a")  # the second read of the same pages keeps them
        extra = _quiet_message(store, "a", 0)
        store.append("a", [extra])
        packs_before, chunks_before = spy.pack_reads, spy.chunks()
        assert store.load("a").messages == [*msgs(0, 1500), extra]
        assert spy.pack_reads == packs_before
        assert spy.chunks() == chunks_before + 1


def test_a_session_over_half_the_budget_is_not_kept(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A scan larger than the cache would push out everything else and then miss itself.
    want = msgs(0, 3000)
    size = sum(len(canonical_json(m)) for m in want)
    for budget, kept in ((2 * size + 2, True), (2 * size - 2, False), (0, False)):
        path = tmp_path / f"s{budget}.db"
        with open_store(path) as store:
            store.create("a", {}, want)
        store = Store(open_store(path).backend, limits=Limits(load_cache_bytes=budget))
        with store:
            spy = Spy(store, monkeypatch)
            assert store.load("a").messages == want
            assert store.load("a").messages == want
            second = spy.pack_reads
            assert store.load("a").messages == want
            assert (spy.pack_reads == second) == kept
            assert store._loaded.used <= budget


def test_fsck_reads_the_disk_not_what_a_load_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as store:
        store.create("a", {}, msgs(0, 1000))
        for _ in range(2):  # kept from the second read on
            assert store.load("a").messages == msgs(0, 1000)
        assert len(store._loaded) > 0
        io = store.io()
        man = io.manifest(bytes.fromhex(store.load_meta("a").manifest))  # type: ignore[arg-type]
        page = next(u for u, _, kids in L.units(man.messages, io)
                    if L.closed([k for k, _ in kids]))
        victim = packs.pack_id(page)  # type: ignore[arg-type]
        with sqlite3.connect(path) as con:
            con.execute("UPDATE objects SET data = zeroblob(length(data)) WHERE oid = ?",
                        (victim,))
        # This handle keeps the messages it decoded before the damage, and they are
        # right (ids name contents); fsck still finds the damaged pack on disk.
        assert store.load("a").messages == msgs(0, 1000)
        report = store.fsck()
        assert not report.ok
        assert any(p.object_id == victim.hex() for p in report.problems)


def test_byte_cache_keeps_the_most_recent_within_its_budget() -> None:
    cache = ByteCache(10)

    def offer(key: str, value: bytes) -> None:
        cache.put(key, value, len(value))

    offer("a", b"aaaa")
    assert cache.get("a") is None and cache.used == 0  # offered once: passed through
    offer("a", b"aaaa")
    offer("b", b"bbbb")
    offer("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # a is now the most recent
    offer("c", b"cccc")
    offer("c", b"cccc")  # 12 > 10: the least recent (b) goes
    assert cache.get_many(["a", "b", "c"]) == {"a": b"aaaa", "c": b"cccc"}
    assert cache.used == 8 and len(cache) == 2
    offer("a", b"AA")  # a replaced: its old size is given back
    assert cache.used == 6 and cache.get("a") == b"AA"
    offer("big", b"x" * 11)
    offer("big", b"x" * 11)  # larger than the budget: not kept, nothing pushed out
    assert cache.get("big") is None and len(cache) == 2
    zero = ByteCache(0)
    zero.put("a", b"", 1)
    zero.put("a", b"", 1)
    assert zero.get_many(["a"]) == {}


def test_byte_cache_forgets_keys_offered_once_beyond_its_memory() -> None:
    cache = ByteCache(1 << 20)
    cache.put("first", b"x", 1)
    for i in range(ByteCache.SEEN):
        cache.put(i, b"y", 1)  # each offered once: "first" is forgotten
    cache.put("first", b"x", 1)
    assert cache.get("first") is None
    cache.put("first", b"x", 1)
    assert cache.get("first") == b"x"


def test_loads_beside_appends_and_saves_see_whole_versions(tmp_path: Path) -> None:
    # Threads share one store and its cache while another appends and saves a shorter
    # list: every load returns exactly some version's messages, never a mix of two.
    import threading

    extra = msgs(5000, 5300)
    cut = 150  # after this append, a save cuts the first 2,000 back to 1,500

    def whole(got: list[Any]) -> bool:
        n = len(got)
        if 2000 <= n <= 2000 + cut + 1:
            return got == [*msgs(0, 2000), *extra[: n - 2000]]
        return n > 1500 + cut and got == [*msgs(0, 1500), *extra[: n - 1500]]

    with open_store(tmp_path / "s.db") as store:
        store.create("a", {}, msgs(0, 2000))
        errors: list[BaseException] = []
        stop = threading.Event()
        seen: list[int] = []

        def reader() -> None:
            try:
                while not stop.is_set():
                    got = store.load("a").messages
                    assert whole(got), len(got)
                    seen.append(len(got))
            except BaseException as exc:  # the test thread's to raise
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for i, m in enumerate(extra):
                store.append("a", [m])
                if i == cut:
                    store.save("a", [*msgs(0, 1500), *extra[: i + 1]])
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert not errors, errors[0]
        assert len(seen) > 10 and len(store._loaded) > 0
        assert min(seen) < 2000 <= max(seen)  # loads ran on both sides of the save
        assert store.load("a").messages == [*msgs(0, 1500), *extra]
