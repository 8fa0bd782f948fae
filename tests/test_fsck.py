from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support import msgs

from cas_store import (
    CorruptObject,
    CorruptStore,
    Limits,
    ObjectNotFound,
    Store,
    StoreDamaged,
    gc,
    open_store,
)
from cas_store.objects import Kind


@pytest.fixture
def unpacked(store: Store) -> Store:
    """The store writing every chunk as a frame of its own (the form these tests damage)."""
    store.backend.packs = False  # type: ignore[misc]
    return store


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


def test_flipped_byte_is_named_with_the_versions_it_affects(unpacked: Store, store: Store,
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
    # Appends whose change the search index takes in only at the next search: fsck
    # checks the index as it will be, without taking them in.
    store.append("a", msgs(50, 51))
    store.append("a", msgs(51, 52))
    store.backend.checkpoint()  # type: ignore[attr-defined]
    before = store_path.read_bytes()
    assert store.fsck().ok
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


def test_corruption_is_named_on_the_threaded_load_path(unpacked: Store, store: Store,
                                                       store_path: Path) -> None:
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


def _swap(store_path: Path, victim: bytes, donor: bytes) -> None:
    """Store donor's frame (valid zstd, other content) under victim's id."""
    with sqlite3.connect(store_path) as con:
        (data,) = con.execute("SELECT data FROM objects WHERE oid = ?", (donor,)).fetchone()
        con.execute("UPDATE objects SET data = ? WHERE oid = ?", (data, victim))


def test_a_swapped_object_fails_a_verified_load_and_fsck(unpacked: Store, store: Store,
                                                         store_path: Path) -> None:
    store.create("a", {}, msgs(0, 20))
    store.append("a", msgs(20, 21))
    store.create("other", {}, msgs(100, 110))
    victim, donor = _chunk_of(store, "a", 5), _chunk_of(store, "other", 0)
    _swap(store_path, victim, donor)
    store.close()
    # The frame is well-formed, so only the hash catches it: verify_reads on ...
    with open_store(store_path, limits=Limits(verify_reads=True)) as verified:
        with pytest.raises(CorruptObject) as exc:
            verified.load("a")
        assert exc.value.object_id == victim.hex()
        assert "does not match its hash" in str(exc.value)
        with pytest.raises(CorruptObject):
            verified.messages("a", offset=5, limit=1)
        assert verified.load("other").messages == msgs(100, 110)
        assert verified.messages("a", offset=6, limit=3) == msgs(6, 9)
    # ... while an unverified read cannot tell (what verify_reads is for).
    with open_store(store_path) as plain:
        assert plain.load("a").messages[5] == msgs(100, 101)[0]
        report = plain.fsck()
    assert not report.ok
    [problem] = report.problems
    assert (problem.kind, problem.object_id) == ("corrupt", victim.hex())
    assert problem.detail == "chunk does not hash to its id"
    assert sorted(problem.affects) == [("a", 1), ("a", 2)]


def test_a_swapped_page_is_found_by_fsck(store: Store, store_path: Path) -> None:
    def pages() -> set[bytes]:
        with sqlite3.connect(store_path) as con:
            return {r[0] for r in con.execute("SELECT oid FROM objects WHERE kind = ?",
                                              (int(Kind.PAGE),))}

    store.create("a", {}, msgs(0, 300))
    of_a = pages()
    store.create("b", {}, msgs(1000, 1300))
    of_b = pages() - of_a
    assert of_a and of_b
    victim = min(of_a)
    _swap(store_path, victim, min(of_b))
    report = store.fsck()
    assert [(p.kind, p.object_id, p.affects) for p in report.problems] == [
        ("corrupt", victim.hex(), [("a", 1)])]


@pytest.mark.parametrize("damage", [
    # The head names another version's manifest.
    "UPDATE sessions SET manifest = (SELECT manifest FROM versions WHERE sid = 'a' AND seq = 1)"
    " WHERE sid = 'a'",
    # The head is ahead of the log (its version row is gone).
    "DELETE FROM versions WHERE sid = 'a' AND seq = 2",
    # The head has no version at all.
    "DELETE FROM versions WHERE sid = 'a'",
], ids=["other-manifest", "ahead-of-log", "no-log"])
def test_a_head_that_does_not_match_its_newest_version_is_a_problem(
        store: Store, store_path: Path, damage: str) -> None:
    store.create("a", {}, msgs(0, 10))
    store.append("a", msgs(10, 11))
    store.create("b", {}, msgs(0, 3))
    head = store.load_meta("a")
    with sqlite3.connect(store_path) as con:
        con.execute(damage)
        (row,) = con.execute("SELECT manifest FROM sessions WHERE sid = 'a'").fetchone()
    report = store.fsck()
    assert not report.ok
    bad = [p for p in report.problems if p.kind == "bad_head"]
    assert len(bad) == 1 and bad[0].affects == [("a", head.seq)]
    assert bad[0].object_id == row.hex()  # the manifest the head row names
    assert "head row does not match its newest version" in bad[0].detail
    # No object is damaged (the search index, which follows the head row, may disagree).
    assert all(p.kind in ("bad_head", "search_index") for p in report.problems)


def _flip(store_path: Path, victim: bytes) -> None:
    with sqlite3.connect(store_path) as con:
        (data,) = con.execute("SELECT data FROM objects WHERE oid = ?", (victim,)).fetchone()
        broken = bytearray(data)
        broken[len(broken) // 2] ^= 0xFF
        con.execute("UPDATE objects SET data = ? WHERE oid = ?", (bytes(broken), victim))


def test_every_bad_object_of_a_batch_is_named_with_why(unpacked: Store, store: Store,
                                                       store_path: Path) -> None:
    store.create("a", {}, msgs(0, 30))
    victims = sorted({_chunk_of(store, "a", 3), _chunk_of(store, "a", 20)})
    for v in victims:
        _flip(store_path, v)
    seen: list[tuple[str, int]] = []
    report = store.fsck(progress=lambda phase, n: seen.append((phase, n)))
    assert [(p.kind, p.object_id) for p in report.problems] == [
        ("corrupt", v.hex()) for v in victims]
    assert all("does not decompress" in p.detail for p in report.problems)
    assert report.objects_checked == sum(store.stats().objects.values())
    assert ("objects", report.objects_checked) in seen
    assert ("versions", report.versions_checked) in seen


def _pages_of(store: Store, store_path: Path, make: Any) -> tuple[set[bytes], set[bytes]]:
    """Return (page ids before, page ids after) calling make()."""
    def pages() -> set[bytes]:
        with sqlite3.connect(store_path) as con:
            return {r[0] for r in con.execute("SELECT oid FROM objects WHERE kind = ?",
                                              (int(Kind.PAGE),))}

    before = pages()
    make()
    return before, pages()


def test_a_missing_page_is_missing_and_a_page_of_the_wrong_kind_corrupt(
        store: Store, store_path: Path) -> None:
    _, of_a = _pages_of(store, store_path, lambda: store.create("a", {}, msgs(0, 300)))
    before, after = _pages_of(store, store_path,
                              lambda: store.create("b", {}, msgs(1000, 1300)))
    gone, wrong = min(of_a), min(after - before)
    with sqlite3.connect(store_path) as con:
        con.execute("DELETE FROM objects WHERE oid = ?", (gone,))
        con.execute("UPDATE objects SET kind = ? WHERE oid = ?", (int(Kind.CHUNK), wrong))
    report = store.fsck()
    got = sorted((p.kind, p.object_id, p.detail, p.affects) for p in report.problems)
    assert ("missing", gone.hex(), "referenced but not stored", [("a", 1)]) in got
    # A wrong kind hashes wrong too (the kind is part of the id): pass 1 names it.
    assert ("corrupt", wrong.hex(), "chunk does not hash to its id", [("b", 1)]) in got
    assert len(got) == 2


def test_a_well_hashed_but_malformed_page_is_corrupt(store: Store, store_path: Path) -> None:
    from cas_store import manifest as M
    from cas_store.lists import ListRef
    from cas_store.objects import compress, object_id

    store.create("a", {}, msgs(0, 3))
    meta = object_id(Kind.META, b"{}")
    page = b"\x00" + b"not a whole number of ids"
    page_id = object_id(Kind.PAGE, page)
    man = M.encode_full(meta, {"messages": ListRef(16, 10, page_id, ())})
    man_id = object_id(Kind.MANIFEST, man)
    with sqlite3.connect(store_path) as con:
        for oid, kind, payload in [(page_id, Kind.PAGE, page), (man_id, Kind.MANIFEST, man)]:
            con.execute("INSERT INTO objects VALUES (?, ?, ?, ?, 0)",
                        (oid, int(kind), len(payload), compress(payload)))
        con.execute("UPDATE versions SET manifest = ? WHERE sid = 'a'", (man_id,))
        con.execute("UPDATE sessions SET manifest = ? WHERE sid = 'a'", (man_id,))
    report = store.fsck()
    assert [(p.kind, p.object_id, p.detail, p.affects) for p in report.problems] == [
        ("corrupt", page_id.hex(), "page is malformed", [("a", 1)])]


def test_a_corrupt_object_no_version_needs_affects_nothing(store: Store,
                                                           store_path: Path) -> None:
    store.create("a", {}, msgs(0, 3))
    stray = bytes(range(32))
    with sqlite3.connect(store_path) as con:
        con.execute("INSERT INTO objects VALUES (?, ?, 4, x'00', 0)", (stray, int(Kind.CHUNK)))
    report = store.fsck()
    assert [(p.kind, p.object_id, p.affects) for p in report.problems] == [
        ("corrupt", stray.hex(), [])]


def test_a_missing_metadata_object_of_a_pruned_base_affects_no_version(
        store: Store, store_path: Path) -> None:
    from cas_store.gc import gc
    from cas_store.objects import canonical_json, object_id

    store.create("a", {"title": "old"}, msgs(0, 3))
    store.update_metadata("a", {"title": "new"})  # a delta on version 1's manifest
    gc(store, keep_last=1, grace=0)  # version 1 goes; its manifest stays as the base
    assert [v.seq for v in store.versions("a")] == [2]
    old_meta = object_id(Kind.META, canonical_json({"title": "old"}))
    with sqlite3.connect(store_path) as con:
        assert con.execute("DELETE FROM objects WHERE oid = ?", (old_meta,)).rowcount == 1
    report = store.fsck()
    # The delta names its own metadata: nothing a version shows is lost.
    assert [(p.kind, p.object_id, p.affects) for p in report.problems] == [
        ("missing", old_meta.hex(), [])]
    assert store.load("a").metadata == {"title": "new"}


def test_a_kind_that_is_no_kind_is_named_and_the_check_goes_on(tmp_path: Path) -> None:
    # A row's kind is outside its frame's checksum, and SQLite checks no value: a damaged
    # one must be named by fsck (which goes on to the other objects), fail the load as
    # CorruptObject, and leave the figures and other sessions readable.
    path = tmp_path / "k.db"
    with open_store(path) as store:
        store.backend.packs = False  # type: ignore[misc]
        store.create("a", {}, msgs(0, 5))
        store.create("b", {}, msgs(10, 15))
        victim = _chunk_of(store, "a", 2)
    with sqlite3.connect(path) as con:
        con.execute("UPDATE objects SET kind = 22 WHERE oid = ?", (victim,))
    with open_store(path) as store:
        report = store.fsck()
        named = {p.object_id: p for p in report.problems}
        assert "which is no kind" in named[victim.hex()].detail
        assert named[victim.hex()].affects == [("a", 1)]
        assert report.objects_checked == sum(store.stats().objects.values()) + 1
        with pytest.raises(CorruptObject) as err:
            store.load("a")
        assert err.value.object_id == victim.hex()
        assert store.load("b").messages == msgs(10, 15)


def test_an_object_row_whose_id_is_not_bytes_is_reported_not_raised(tmp_path: Path) -> None:
    # A damaged record header can turn a BLOB into a number: fsck reports a damaged file
    # and what still reads, never a TypeError or ValueError.
    path = tmp_path / "o.db"
    with open_store(path) as store:
        store.create("a", {}, msgs(0, 5))
    with sqlite3.connect(path) as con:
        con.execute("UPDATE objects SET oid = -5 WHERE rowid = (SELECT min(rowid) FROM objects)")
    with open_store(path) as store:
        report = store.fsck()
    assert not report.ok
    assert any(p.kind == "corrupt_store" and "object row" in p.detail for p in report.problems)


def test_a_log_row_holding_a_value_of_the_wrong_type_is_a_damaged_file(tmp_path: Path) -> None:
    # SQLite checks no column's type (a damaged record header changes one): reading that
    # version is CorruptStore, and fsck reports it (and what still reads), never a
    # TypeError from the engine.
    path = tmp_path / "v.db"
    with open_store(path) as store:
        store.create("a", {}, msgs(0, 5))
        store.append("a", msgs(5, 6))
        store.create("b", {}, msgs(10, 12))
    with sqlite3.connect(path) as con:
        con.execute("UPDATE versions SET flags = x'01' WHERE sid = 'a' AND seq = 1")
    with open_store(path) as store:
        with pytest.raises(CorruptStore, match="version log row"):
            store.versions("a")
        assert store.load("b").messages == msgs(10, 12)
        report = store.fsck()
    assert not report.ok and any(p.kind == "corrupt_store" for p in report.problems)


def test_an_object_stored_as_a_number_is_named_corrupt(tmp_path: Path) -> None:
    # A damaged record header can turn a frame (BLOB) into a number: every reader names
    # the object (load, fsck, gc's mark), none raises a TypeError.
    path = tmp_path / "n.db"
    with open_store(path) as store:
        store.backend.packs = False  # type: ignore[misc]
        store.create("a", {}, msgs(0, 5))
        victim = bytes.fromhex(store.load_meta("a").manifest)
    with sqlite3.connect(path) as con:
        con.execute("UPDATE objects SET data = 12345 WHERE oid = ?", (victim,))
    with open_store(path) as store:
        with pytest.raises(CorruptObject) as err:
            store.load("a")
        assert err.value.object_id == victim.hex()
        assert victim.hex() in {p.object_id for p in store.fsck().problems}
        with pytest.raises(StoreDamaged):
            gc(store, grace=0, dry_run=True)
