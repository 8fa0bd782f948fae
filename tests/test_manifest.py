from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import msg, msgs

from cas_store import Store
from cas_store import manifest as M
from cas_store.lists import FANOUT, ListRef
from cas_store.objects import Kind, Oid, object_id


def oid(i: int) -> Oid:
    return object_id(Kind.CHUNK, str(i).encode())


def test_full_manifest_round_trips() -> None:
    lists = {
        "messages": ListRef(20, 999, oid(1), (oid(2), oid(3))),
        "context": ListRef(1, 5, None, (oid(4),)),
        "empty": ListRef(0, 0, None, ()),
    }
    raw = M.decode(M.encode_full(oid(0), lists))
    assert raw.base is None and raw.meta == oid(0)
    assert raw.lists == {k: v for k, v in lists.items() if k != "empty"}


def test_delta_round_trips() -> None:
    raw = M.decode(M.encode_delta(oid(0), oid(9), 3, 21, 1000, [oid(5)]))
    assert (raw.base, raw.depth, raw.count, raw.nbytes, raw.add) == (oid(9), 3, 21, 1000,
                                                                     (oid(5),))
    assert M.references(raw) == ([oid(9)], [oid(0), oid(5)], [])


@pytest.mark.parametrize("payload", [b"", b"M\x01", b"X\x01\x00" + bytes(32), b"M\x01\x07"
                                     + bytes(32), M.encode_delta(oid(0), oid(1), 1, 1, 1, [])
                                     + b"!"])
def test_malformed_manifests_are_rejected(payload: bytes) -> None:
    with pytest.raises(ValueError):
        M.decode(payload)


def test_appends_write_deltas_and_resolve(store: Store) -> None:
    store.create("s", {"title": "t"}, msgs(0, 3))
    for i in range(3, 3 + 3 * FANOUT):
        store.append("s", [msg(i)])
        assert store.load("s").messages == msgs(0, i + 1)
    io = store.io()
    forms = []
    for v in store.versions("s"):
        raw = io.raw_manifest(bytes.fromhex(v.manifest))  # type: ignore[arg-type]
        forms.append("delta" if raw.base else "full")
        assert raw.depth <= M.MAX_DEPTH
    assert forms.count("delta") > forms.count("full")
    assert store.fsck().ok


def test_metadata_updates_chain_to_the_depth_limit_then_write_full(store: Store) -> None:
    store.create("s", {"n": 0}, msgs(0, 2))
    for n in range(1, M.MAX_DEPTH + 5):
        store.update_metadata("s", {"n": n})
    io = store.io()
    depths = [io.raw_manifest(bytes.fromhex(v.manifest)).depth  # type: ignore[arg-type]
              for v in reversed(store.versions("s"))]
    assert max(depths) == M.MAX_DEPTH and depths.count(0) == 2
    assert store.load("s").metadata == {"n": M.MAX_DEPTH + 4}
    assert store.load("s").messages == msgs(0, 2)


def test_gc_keeps_the_bases_of_a_kept_delta(store: Store) -> None:
    from cas_store.gc import gc

    store.create("s", {}, msgs(0, 5))
    for i in range(5, 12):
        store.append("s", [msg(i)])
    report = gc(store, keep_last=1, grace=0)
    assert report.versions_pruned == 7
    assert store.load("s").messages == msgs(0, 12)
    assert store.fsck().ok


def test_cold_load_meta_of_a_delta_reads_one_manifest(store: Store, store_path: Path) -> None:
    from cas_store import open_store

    store.create("s", {"title": "t"}, msgs(0, 3), lists={"context": [1, 2]})
    store.append("s", [msg(3)])
    store.update_metadata("s", {"title": "u"})
    cold = open_store(store_path)
    meta = cold.load_meta("s")
    assert (meta.message_count, meta.list_counts, meta.metadata) == (4, {"context": 2},
                                                                     {"title": "u"})
    assert cold.reads["manifest"] == 1 and cold.reads["page"] == 0
    assert cold.load("s").lists == {"context": [1, 2]}
    cold.close()


def _metadata_chain(store: Store, sid: str, links: int) -> None:
    """Give sid a head whose manifest is a delta chain of links manifests (a full one first)."""
    store.create(sid, {"n": 0}, msgs(0, 2))
    for n in range(1, links):
        store.update_metadata(sid, {"n": n})


def _count_reads(store: Store) -> list[str]:
    """Record each call of the backend's object reads (by name) from now on."""
    calls: list[str] = []
    backend = store.backend
    for name in ("get_frames", "log_manifest_frames"):
        real = getattr(backend, name)

        def counted(*args: object, _real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return _real(*args)

        setattr(backend, name, counted)
    return calls


@pytest.mark.all_backends
def test_a_fresh_handle_reads_a_delta_chain_from_the_log_at_once(store: Store,
                                                                 store_path: Path) -> None:
    from cas_store import open_store

    _metadata_chain(store, "s", M.MAX_DEPTH)
    with open_store(store_path) as cold:
        head = cold.backend.head("s")
        assert head is not None
        calls = _count_reads(cold)
        with cold.backend.snapshot():
            man = cold.io().manifest_of(head)
        # The head, then the 31 links before it in one read of the log joined to the
        # objects; one read a link before.
        assert calls == ["get_frames", "log_manifest_frames"], calls
        assert cold.reads["manifest"] == M.MAX_DEPTH
        assert man.depth == M.MAX_DEPTH - 1 and man.messages.count == 2
        assert cold.load("s").metadata == {"n": M.MAX_DEPTH - 1}


@pytest.mark.all_backends
def test_a_chain_the_log_does_not_hold_is_followed_link_by_link(store: Store,
                                                                store_path: Path) -> None:
    from cas_store import open_store
    from cas_store.gc import gc

    # A fork's chain runs on into its source's history; GC then prunes the source's log.
    _metadata_chain(store, "src", 10)
    store.fork("src", "copy")
    for n in range(10, 15):
        store.update_metadata("copy", {"n": n})
    gc(store, keep_last=1, grace=0)
    with open_store(store_path) as cold:
        session = cold.load("copy")
        assert (session.metadata, session.messages) == ({"n": 14}, msgs(0, 2))
        assert cold.reads["manifest"] == 15
        assert cold.load("src").metadata == {"n": 9}
    assert store.fsck().ok


def test_a_damaged_link_read_ahead_is_named(tmp_path: Path) -> None:
    import sqlite3

    from cas_store import open_store
    from cas_store.errors import CorruptObject

    path = tmp_path / "s.db"
    with open_store(path) as store:
        _metadata_chain(store, "s", 12)
        link = bytes.fromhex(store.versions("s")[5].manifest)
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE objects SET data = ? WHERE oid = ?", (b"not a frame", link))
    con.close()
    with open_store(path) as cold, pytest.raises(CorruptObject) as err:
        cold.load("s")
    assert err.value.object_id == link.hex()
