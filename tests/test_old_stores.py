"""Stores written before content-defined pages (fixed fan-out of 16) still read and write."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cas_store import lists as L
from cas_store import open_store
from cas_store.backends import IndexUpdate
from cas_store.inputs import MESSAGES
from cas_store.model import ANY, Op
from cas_store.objects import Oid
from cas_store.store import _Change


def _fixed(ids: Sequence[Oid], nbytes: int, io: L.PageIO) -> L.ListRef:
    # The old layout: full leaves of exactly 16 ids under internal pages without counts.
    full = len(ids) // 16 * 16
    level = [io.put_page(0, ids[i : i + 16]) for i in range(0, full, 16)]
    h = 0
    while len(level) > 1:
        h += 1
        level = [io.put_page(h, level[i : i + 16]) for i in range(0, len(level), 16)]
    return L.ListRef(len(ids), nbytes, level[0] if level else None, tuple(ids[full:]))


def test_a_fixed_fanout_session_loads_pages_and_takes_new_writes(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": f"m{i}"} for i in range(1000)]
    with open_store(tmp_path / "s.db") as store:
        store.create("s", {"title": "old"}, [])
        items = store._items(msgs)

        def build(head, io):  # type: ignore[no-untyped-def]
            man = io.manifest(head.manifest)
            io.put_items(items)
            ref = _fixed(items.ids, items.nbytes, io)
            m = store._put_manifest(io, man.meta_ref, {MESSAGES: ref})
            return _Change(Op.SAVE, m, ref.count, ref.nbytes, head.title,
                           index=IndexUpdate(0, items.ids))

        store._mutate("s", ANY, build)
    with open_store(tmp_path / "s.db") as store:
        assert store.load("s").messages == msgs
        assert store.messages("s", 333, 50) == msgs[333:383]
        assert store.messages("s", -7) == msgs[-7:]
        assert store.fsck().ok
        store.append("s", [{"role": "user", "content": "new"}])
        store.save("s", [{"role": "system", "content": "edited"}, *msgs[1:],
                         {"role": "user", "content": "new"}])
        got = store.load("s").messages
        assert got[0] == {"role": "system", "content": "edited"} and got[1:1000] == msgs[1:]
        assert store.load_version("s", 2).messages == msgs  # the old version reads as before
        assert store.fsck().ok
        # Written again with content-defined pages: the same state as a fresh session.
        assert store.version_state_id("s") == store.state_id(got, {"title": "old"})
