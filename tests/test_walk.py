"""The object-graph walker shared by fsck and gc: damage under a version, named with why."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support import msgs

from cas_store import Store
from cas_store.objects import Kind
from cas_store.walk import Damage


def _pages(path: Path) -> set[bytes]:
    with sqlite3.connect(path) as con:
        return {r[0] for r in con.execute("SELECT oid FROM objects WHERE kind = ?",
                                          (int(Kind.PAGE),))}


def _manifest(store: Store, sid: str) -> bytes:
    return bytes.fromhex(store.load_meta(sid).manifest)


def _sql(path: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(path) as con:
        con.execute(statement, args)


def test_a_clean_version_has_no_damage(store: Store, store_path: Path) -> None:
    store.create("a", {}, msgs(0, 300))
    walk = Damage(store.backend)
    assert walk.version(_manifest(store, "a")) == frozenset()
    assert walk.bad == {} and walk.missing == set()


def test_unreadable_pages_are_named_with_why(store: Store, store_path: Path) -> None:
    store.create("a", {}, msgs(0, 300))
    pages = sorted(_pages(store_path))
    flipped, wrong = pages[0], pages[1]
    _sql(store_path, "UPDATE objects SET data = x'00' WHERE oid = ?", flipped)
    _sql(store_path, "UPDATE objects SET kind = ? WHERE oid = ?", int(Kind.CHUNK), wrong)
    walk = Damage(store.backend)  # nothing known beforehand: the walk finds it
    assert walk.version(_manifest(store, "a")) >= {flipped, wrong}
    assert "does not decompress" in walk.bad[flipped]
    assert walk.bad[wrong] == "is a chunk, expected a page"
    assert walk.missing == set()


def test_missing_and_unreadable_manifests(store: Store, store_path: Path) -> None:
    store.create("a", {}, msgs(0, 3))
    store.create("b", {}, msgs(10, 13))
    a, b = _manifest(store, "a"), _manifest(store, "b")
    _sql(store_path, "DELETE FROM objects WHERE oid = ?", a)
    _sql(store_path, "UPDATE objects SET data = x'00' WHERE oid = ?", b)
    walk = Damage(store.backend)
    assert walk.version(a) == {a} and walk.missing == {a} and a not in walk.bad
    assert walk.version(b) == {b} and "does not decompress" in walk.bad[b]


def test_known_bad_objects_are_not_read_again(store: Store) -> None:
    store.create("a", {}, msgs(0, 3))
    a = _manifest(store, "a")
    walk = Damage(store.backend, {a: "known"})
    assert walk.version(a) == {a}
    assert walk.bad == {a: "known"} and walk.missing == set()


def test_a_well_hashed_but_malformed_manifest(store: Store, store_path: Path) -> None:
    from cas_store.objects import compress, object_id

    junk = b"not a manifest"
    oid = object_id(Kind.MANIFEST, junk)
    _sql(store_path, "INSERT INTO objects VALUES (?, ?, ?, ?, 0)", oid, int(Kind.MANIFEST),
         len(junk), compress(junk))
    walk = Damage(store.backend)
    assert walk.version(oid) == {oid}
    assert walk.bad == {oid: "manifest is malformed"}


def test_a_missing_chunk_in_the_tail_and_in_a_delta(store: Store, store_path: Path) -> None:
    from cas_store.objects import canonical_json, object_id

    def chunk(m: object) -> bytes:
        return object_id(Kind.CHUNK, canonical_json(m))

    store.create("a", {}, msgs(0, 20))  # the last ids sit in the manifest's inline tail
    full = _manifest(store, "a")
    store.append("a", msgs(20, 21))  # a delta manifest on the full one
    delta = _manifest(store, "a")
    tail, added = chunk(msgs(19, 20)[0]), chunk(msgs(20, 21)[0])
    for oid in (tail, added):
        _sql(store_path, "DELETE FROM objects WHERE oid = ?", oid)
    walk = Damage(store.backend)
    assert walk.version(full) == {tail}
    assert walk.version(delta) == {tail, added}
    assert walk.missing == {tail, added}
