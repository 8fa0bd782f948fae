"""Flip bytes in stored objects: fsck names the object and exactly the versions it breaks;
loading one of those raises CorruptObject (HTTP 500 corrupt_object); everything else keeps
working.

"Exactly" is checked against the loader: for every version in the store, loading it
fails with CorruptObject if and only if fsck listed it as affected.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from fastapi.testclient import TestClient

from cas_store import CorruptObject, Store, open_store
from cas_store.api import Settings, create_app
from cas_store.objects import Kind, canonical_json, object_id

Record = Callable[[str, Any], None]
FLIPS = 100


def _build(path: Path) -> Store:
    # Every chunk a frame of its own: here a full load reads each object it needs once,
    # so fsck's affected versions and the loader's failures must agree exactly. Packs
    # hold a second form of their members' bytes (tests/test_packs.py damages those).
    store = open_store(path, synchronous="NORMAL")
    store.backend.packs = False  # type: ignore[misc]
    big = [{"role": "user", "content": f"a{i} " + "x" * (i % 7)} for i in range(90)]
    store.create("a", {"title": "A"}, big[:40])
    for k in range(40, 90, 10):
        store.append("a", big[k:k + 10])
    store.update_metadata("a", {"poll": 1})
    store.fork("a", "b", seq=3)
    store.append("b", [{"role": "user", "content": "b only"}])
    store.create("c", {"title": "C"}, [{"role": "user", "content": f"c{i}"} for i in range(5)])
    return store


def _all_versions(store: Store) -> list[tuple[str, int]]:
    return [(sid, v.seq) for sid in ("a", "b", "c") for v in store.versions(sid)]


def _objects(path: str) -> list[tuple[bytes, int, bytes]]:
    with sqlite3.connect(path) as con:
        rows = con.execute("SELECT oid, kind, data FROM objects ORDER BY oid").fetchall()
    con.close()
    return rows


def _set_data(path: str, oid: bytes, data: bytes) -> None:
    with sqlite3.connect(path) as con:
        con.execute("UPDATE objects SET data = ? WHERE oid = ?", (data, oid))
    con.close()


def _same_payload(good: bytes, bad: bytes) -> bool:
    try:
        return bool(zstandard.ZstdDecompressor().decompress(bad) ==
                    zstandard.ZstdDecompressor().decompress(good))
    except zstandard.ZstdError:
        return False


def _broken(store: Store) -> set[tuple[str, int]]:
    """Return the versions whose full load raises CorruptObject (others must load).

    Loaded through a freshly opened store: a store keeps decoded manifests and pages it
    has read (verified then) in memory, so a long-running one may keep serving a page
    that has rotted on disk since; a new process reads the disk.
    """
    out = set()
    with open_store(store.backend.location, synchronous="NORMAL") as fresh:
        for sid, seq in _all_versions(fresh):
            try:
                fresh.load_version(sid, seq)
            except CorruptObject:
                out.add((sid, seq))
    return out


@pytest.mark.slow
def test_random_byte_flips_are_named_with_the_versions_they_break(
        tmp_path: Path, record_property: Record) -> None:
    store = _build(tmp_path / "flip.db")
    path = store.backend.location
    rows = _objects(path)
    rng = random.Random(8)
    by_kind: dict[str, int] = {}
    affected_total = harmless = 0
    for n in range(FLIPS):
        oid, kind, data = rows[rng.randrange(len(rows))] if n >= 4 else \
            next(r for r in rows if r[1] == [Kind.CHUNK, Kind.PAGE, Kind.MANIFEST,
                                               Kind.META][n])
        pos = rng.randrange(len(data))
        bad = bytearray(data)
        bad[pos] ^= 1 << rng.randrange(8)
        by_kind[Kind(kind).name.lower()] = by_kind.get(Kind(kind).name.lower(), 0) + 1
        _set_data(path, oid, bytes(bad))
        try:
            report = store.fsck()
            if _same_payload(data, bytes(bad)):
                # A flip zstd ignores (say, a header flag): the object is still exactly
                # what its id names, so there is nothing to report and nothing broken.
                assert report.ok and _broken(store) == set()
                harmless += 1
                continue
            assert [p.object_id for p in report.problems] == [oid.hex()]
            problem = report.problems[0]
            assert problem.kind == "corrupt"
            named = {(s, q) for s, q in problem.affects}
            assert named == _broken(store), f"flip {n}: fsck and the loader disagree"
            affected_total += len(named)
            # The session nothing shares with keeps working, reads and writes.
            if ("c", 1) not in named:
                store.append("c", [{"role": "user", "content": f"during flip {n}"}])
                assert store.load("c").messages[-1]["content"] == f"during flip {n}"
        finally:
            _set_data(path, oid, data)
    assert store.fsck().ok
    assert _broken(store) == set()
    store.close()
    record_property("what", "random single-bit flips in stored objects, fsck vs loader")
    record_property("flips", FLIPS)
    record_property("flips_by_kind", ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())))
    record_property("affected_versions_named", affected_total)
    record_property("flips_zstd_ignores", harmless)


def test_flipped_chunk_names_exactly_the_versions_holding_that_message(tmp_path: Path) -> None:
    store = _build(tmp_path / "chunk.db")
    path = store.backend.location
    message = {"role": "user", "content": "a5 xxxxx"}
    oid = object_id(Kind.CHUNK, canonical_json(message))
    data = dict((r[0], r[2]) for r in _objects(path))[oid]
    _set_data(path, oid, data[:-1] + bytes([data[-1] ^ 0xFF]))
    expected = {(sid, seq) for sid, seq in _all_versions(store)}  # message 5 is in all of a, b
    expected = {(s, q) for s, q in expected if s in ("a", "b")}
    report = store.fsck()
    assert not report.ok
    assert [(p.object_id, set(map(tuple, p.affects))) for p in report.problems] == [
        (oid.hex(), expected)]
    with pytest.raises(CorruptObject) as info:
        store.load("a")
    assert info.value.object_id in ("", oid.hex())
    assert store.load_meta("a").message_count == 91 - 1  # metadata-only reads need no chunk
    assert store.messages("a", 50, 10) == store.messages("a", 50, 10)  # other pages read
    assert store.load("c").messages[0]["content"] == "c0"
    store.append("c", [{"role": "user", "content": "still works"}])

    app = create_app(Settings(store=Path(path), allowed_hosts=["testserver"]), store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/api/sessions/a")
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["code"] == "corrupt_object"
        r = client.get("/api/sessions/b/versions/1")
        assert r.status_code == 500 and r.json()["error"]["code"] == "corrupt_object"
        assert client.get("/api/sessions/a/meta").status_code == 200
        assert client.get("/api/sessions/c").status_code == 200
        r = client.post("/api/sessions/c/messages", json={"messages": [{"c": 1}]})
        assert r.status_code == 200
        assert client.get("/api/sessions").status_code == 200
    store.close()


def test_flip_that_hides_the_frame_size_is_corrupt_object_on_a_bulk_load(
        tmp_path: Path) -> None:
    """Regression: clearing a frame header's single-segment bit hides the content size,
    which the parallel decompression of a long session reported as a bare ValueError
    (an HTTP 500 internal_error) instead of CorruptObject naming the object."""
    store = _build(tmp_path / "header.db")
    path = store.backend.location
    oid = object_id(Kind.CHUNK, canonical_json({"role": "user", "content": "a5 xxxxx"}))
    data = dict((r[0], r[2]) for r in _objects(path))[oid]
    bad = bytearray(data)
    bad[4] ^= 0x20  # Frame_Header_Descriptor: Single_Segment_flag
    _set_data(path, oid, bytes(bad))
    with pytest.raises(CorruptObject) as info:
        store.load("a")  # 90 messages: the batched, parallel path
    assert info.value.object_id == oid.hex()
    assert [p.object_id for p in store.fsck().problems] == [oid.hex()]
    store.close()
