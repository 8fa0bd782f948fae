"""Metadata as objects per large value, key order, and stores written before that format."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from cas_store import CorruptObject, Store, open_store
from cas_store.backends import Commit
from cas_store.backends.sqlite import SCHEMA_VERSION
from cas_store.objects import Kind, compress

DATA = Path(__file__).parent / "data"


def _old_store(tmp_path: Path) -> Path:
    path = tmp_path / "v1.db"
    shutil.copy(DATA / "store_v1.db", path)
    return path


def test_a_store_of_the_previous_format_opens_and_reads(tmp_path: Path) -> None:
    path = _old_store(tmp_path)
    with open_store(path) as store:
        s = store.load("old-1")
        assert s.metadata["title"] == "Old store, renamed"
        assert len(s.metadata["anchor_activity_scenes"]) == 60
        assert len(s.messages) == 5 and len(store.load_version("old-1", 21).messages) == 40
        assert len(s.lists["tool_calls"]) == 10
        assert store.fsck().ok
        # Heads written before the summary column list with an empty summary.
        rows = {r.session_id: r for r in store.list_sessions().sessions}
        assert set(rows) == {"old-1", "old-2"} and rows["old-1"].suspect_shrink
        # Recovery reads the old manifests, and writes the new format beside them.
        assert [a.action for a in store.recover().actions] == ["recovered"]
        s = store.load("old-1")
        assert len(s.messages) == 40 and s.metadata["message_count"] == 40
        store.update_metadata("old-1", {"pinned": False})
        meta = store.load_meta("old-1").metadata
        assert meta["pinned"] is False and len(meta["anchor_activity_scenes"]) == 60
        assert store.list_sessions(where={"pinned": False}).sessions[0].session_id == "old-1"
        assert store.fsck().ok
    con = sqlite3.connect(path)
    schema = con.execute("SELECT value FROM store_info WHERE key='schema'").fetchone()[0]
    assert schema == str(SCHEMA_VERSION)
    con.close()


def _written(store: Store) -> list[int]:
    """Start counting the bytes (uncompressed) of new non-chunk objects each commit writes."""
    out: list[int] = []
    real = store.backend.commit

    def counting(change: Commit) -> None:
        out.append(sum(o.size for o in change.objects
                       if o.frame is not None and o.kind != Kind.CHUNK))
        real(change)

    store.backend.commit = counting  # type: ignore[method-assign]
    return out


def _big_metadata() -> dict[str, object]:
    scenes = {f"scene-{i:04d}": {"summary": f"scene {i} " + "lorem ipsum dolor " * 20,
                                 "anchors": list(range(i % 11))} for i in range(1000)}
    return {"title": "t", "pinned": False, "model": "m", "anchor_activity_scenes": scenes}


def test_a_one_key_patch_writes_only_what_changed(store: Store) -> None:
    meta = _big_metadata()
    store.create("s", meta, [{"role": "user", "content": "hi"}])
    written = _written(store)
    store.update_metadata("s", {"pinned": True})
    assert written[-1] < 2048  # the small fields' object and a delta manifest
    store.update_metadata("s", {"anchor_activity_scenes": {"scene-0000": None}})
    assert written[-1] > 300_000  # the changed large value is written again, once
    got = store.load_meta("s").metadata
    assert got["pinned"] is True and "scene-0000" not in got["anchor_activity_scenes"]
    assert len(got["anchor_activity_scenes"]) == 999


def test_an_unchanged_large_value_is_shared_across_saves_and_sessions(store: Store) -> None:
    meta = _big_metadata()
    store.create("a", meta, [])
    written = _written(store)
    store.create("b", dict(meta, title="other"), [])
    assert written[-1] < 2048
    store.save("a", [{"role": "user"}], dict(meta, pinned=True))
    assert written[-1] < 2048


def test_key_order_is_kept_through_saves(store: Store) -> None:
    order = ["title", "zeta", "alpha", "message_count", "messages", "tool_calls"]
    meta = {"zeta": 1, "alpha": 2, "title": "x", "message_count": 0}
    store.create("s", meta, [], lists={"tool_calls": [1, 2]}, key_order=order)
    assert store.load_meta("s").key_order == tuple(order)
    assert list(store.load_meta("s").metadata) == ["title", "zeta", "alpha", "message_count"]
    store.save("s", [{"role": "user"}], {"alpha": 3, "title": "y", "beta": 0,
                                         "message_count": 1})
    assert store.load_meta("s").key_order == ("title", "alpha", "message_count", "beta",
                                              "messages", "tool_calls")
    # Without a recorded order, metadata comes back sorted (the old behaviour).
    store.create("plain", {"b": 1, "a": 2}, [])
    assert list(store.load_meta("plain").metadata) == ["a", "b"]
    assert store.load_meta("plain").key_order == ()


def test_gc_keeps_the_metadata_objects_of_kept_versions(store: Store) -> None:
    from cas_store.gc import gc

    meta = _big_metadata()
    store.create("s", meta, [])
    store.update_metadata("s", {"anchor_activity_scenes": {"scene-0001": None}})
    store.update_metadata("s", {"pinned": True})
    report = gc(store, keep_last=1, grace=0.0)
    assert report.to_json()["missing"] == 0
    got = store.load_meta("s").metadata
    assert got["pinned"] is True and len(got["anchor_activity_scenes"]) == 999
    assert store.fsck().ok


def test_the_metadata_limit_counts_values_the_patch_did_not_read(tmp_path: Path) -> None:
    import pytest

    from cas_store import Limits
    from cas_store.errors import InvalidMetadata

    with open_store(tmp_path / "l.db", limits=Limits(max_metadata_bytes=600_000)) as store:
        store.create("s", _big_metadata(), [])
        with pytest.raises(InvalidMetadata):
            store.update_metadata("s", {"more": "x" * 300_000})
        store.update_metadata("s", {"more": "x" * 1000})
        assert len(store.load_meta("s").metadata["more"]) == 1000


def test_metadata_stored_as_another_json_type_is_named_corrupt(tmp_path: Path) -> None:
    # A fresh handle reads the fields, large values and key order in one query; a damaged
    # object among them (sound frame, wrong JSON type) is a CorruptObject naming it and the
    # session, never an assertion or a wrong answer.
    path = tmp_path / "s.db"
    with open_store(path) as store:
        store.create("a", {"z": 1, "a": "x" * 2000}, [{"role": "user", "content": "hi"}],
                     key_order=["z", "a"])
        man = store.io().manifest(bytes.fromhex(store.load_meta("a").manifest))  # type: ignore[arg-type]
        ref = man.meta_ref
        assert ref.layout is not None and len(ref.values) == 1
    for victim, blob in ((ref.meta, b"[1]"), (ref.layout, b'{"z": 1}')):
        with sqlite3.connect(path) as con:
            (saved,) = con.execute("SELECT data FROM objects WHERE oid = ?", (victim,)).fetchone()
            con.execute("UPDATE objects SET data = ? WHERE oid = ?", (compress(blob), victim))
        with open_store(path) as store:
            with pytest.raises(CorruptObject) as err:
                store.load_meta("a")
            assert err.value.object_id == victim.hex() and "'a'" in str(err.value)
        with sqlite3.connect(path) as con:
            con.execute("UPDATE objects SET data = ? WHERE oid = ?", (saved, victim))
    with open_store(path) as store:
        assert list(store.load_meta("a").metadata) == ["z", "a"]
