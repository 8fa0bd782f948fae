from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from support import msgs

from cas_store import CorruptObject, ObjectNotFound, Store
from cas_store.objects import Kind


def _chunk_of(store: Store, sid: str, index: int) -> bytes:
    from cas_store import lists as L

    io = store.io()
    man = io.manifest(bytes.fromhex(store.load_meta(sid).manifest))  # type: ignore[arg-type]
    return L.read_ids(man.messages, io, index, index + 1)[0]


def test_clean_store_is_ok(store: Store) -> None:
    store.create("a", {"title": "x"}, msgs(0, 300))
    store.append("a", msgs(300, 310))
    store.save("a", [])
    store.fork("a", "b", seq=1)
    report = store.fsck()
    assert report.ok
    assert report.versions_checked == 4 and report.sessions_checked == 2
    assert report.objects_checked == sum(store.stats().objects.values())


def test_flipped_byte_is_named_with_the_versions_it_affects(store: Store,
                                                             store_path: Path) -> None:
    store.create("a", {}, msgs(0, 100))
    store.append("a", msgs(100, 101))
    store.create("other", {}, msgs(1000, 1010))
    victim = _chunk_of(store, "a", 50)
    with sqlite3.connect(store_path) as con:
        (data,) = con.execute("SELECT data FROM objects WHERE oid = ?", (victim,)).fetchone()
        broken = bytearray(data)
        broken[len(broken) // 2] ^= 0xFF
        con.execute("UPDATE objects SET data = ? WHERE oid = ?", (bytes(broken), victim))
    report = store.fsck()
    assert not report.ok
    [problem] = report.problems
    assert problem.kind == "corrupt" and problem.object_id == victim.hex()
    assert sorted(problem.affects) == [("a", 1), ("a", 2)]
    with pytest.raises(CorruptObject) as exc:
        store.load("a")
    assert exc.value.object_id == victim.hex()
    assert store.load("other").messages == msgs(1000, 1010)
    assert store.messages("a", offset=-10) == msgs(91, 101)  # the rest stays readable


def test_missing_object_is_reported(store: Store, store_path: Path) -> None:
    store.create("a", {}, msgs(0, 20))
    victim = _chunk_of(store, "a", 3)
    with sqlite3.connect(store_path) as con:
        con.execute("DELETE FROM objects WHERE oid = ?", (victim,))
    report = store.fsck()
    assert [(p.kind, p.object_id, p.affects) for p in report.problems] == [
        ("missing", victim.hex(), [("a", 1)])]
    with pytest.raises(ObjectNotFound):
        store.load("a")


def test_fsck_changes_nothing(store: Store, store_path: Path) -> None:
    store.create("a", {}, msgs(0, 50))
    store.backend.checkpoint()  # type: ignore[attr-defined]
    before = store_path.read_bytes()
    store.fsck()
    store.backend.checkpoint()  # type: ignore[attr-defined]
    assert store_path.read_bytes() == before


def test_wrong_kind_is_corrupt(store: Store, store_path: Path) -> None:
    store.create("a", {"t": 1}, msgs(0, 3))
    victim = _chunk_of(store, "a", 0)
    with sqlite3.connect(store_path) as con:
        con.execute("UPDATE objects SET kind = ? WHERE oid = ?", (int(Kind.META), victim))
    assert not store.fsck().ok
    with pytest.raises(CorruptObject):
        store.load("a")


def test_corruption_is_named_on_the_threaded_load_path(store: Store, store_path: Path) -> None:
    many = [{"i": i, "pad": "x" * 50} for i in range(3000)]  # long enough for worker threads
    store.create("a", {}, many)
    victim = _chunk_of(store, "a", 2500)
    with sqlite3.connect(store_path) as con:
        (data,) = con.execute("SELECT data FROM objects WHERE oid = ?", (victim,)).fetchone()
        broken = bytearray(data)
        broken[len(broken) // 2] ^= 0xFF
        con.execute("UPDATE objects SET data = ? WHERE oid = ?", (bytes(broken), victim))
    with pytest.raises(CorruptObject) as exc:
        store.load("a")
    assert exc.value.object_id == victim.hex()
    assert store.messages("a", offset=0, limit=10) == many[:10]
