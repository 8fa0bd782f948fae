"""How the SQLite backend keeps packs (cas_store/packs.py) in its objects table.

A pack is an object row of kind PACK (its frame holds the page's messages). A chunk whose
bytes live in a pack keeps its own row, so it is still found by its id, but of stored kind
PACKED with ``data`` the reference ``packs.ref(pack, position)`` instead of a frame. Readers
never see that form: ``resolve`` turns such rows back into (CHUNK, frame), the frame
compressed again from the pack member (fast level), so fsck, migrate, GC and windowed
reads work on any stored form unchanged.

Packing happens inside ``SQLiteBackend.commit``, under its write lock: every closed
level-1 page new in the commit gets a pack of all the items under it, and every other new
leaf page a pack of its own, in the same transaction; the members' rows become
references: new ones are inserted so; older ones (plain, or naming a pack of one of the
level-1 page's leaves) are deleted and inserted again as references (``move_rows``: an
in-place rewrite leaves holes SQLite never refills), their search-index entries
renumbered with them. A chunk already packed elsewhere keeps its reference; the new pack
holds a copy, so a load of either page is one read. The only packs deleted here are the
leaf packs a level-1 pack replaces, once no reference names them (``retire``); GC's
sweep removes any other pack only when no reference names it
(``SQLiteBackend.delete_objects``).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import zstandard

from .. import lists as L
from .. import packs
from ..errors import CasError, CorruptObject
from ..objects import (
    Kind,
    Oid,
    compress,
    decode_page_full,
    decompress,
)
from .base import stored_kind

#: Stored kind of a chunk kept in a pack (never an id's kind: the id stays a CHUNK's).
PACKED = 6

#: Leaf pages of fewer ids are not packed (one of 16 leaves holds a single id: packing it
#: still spares a load its separate lookup).
MIN_MEMBERS = 1

Query = Callable[[str, Sequence[Any]], list[Any]]

_local = threading.local()


def _fast_frame(payload: bytes) -> bytes:
    # A member handed out as a frame of its own: level 1 costs a few microseconds, and
    # the frame lives only as long as the read.
    c = getattr(_local, "fast", None)
    if c is None:
        c = _local.fast = zstandard.ZstdCompressor(level=1, write_checksum=True)
    return c.compress(payload)


class PackCache:
    """A small thread-safe LRU of decoded packs (None: the pack is damaged)."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._items: OrderedDict[Oid, packs.Pack | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, query: Query, oids: Sequence[Oid]) -> dict[Oid, packs.Pack | None]:
        """Return each stored pack decoded (None if it does not decode); missing left out."""
        out: dict[Oid, packs.Pack | None] = {}
        need = []
        with self._lock:
            for o in dict.fromkeys(oids):
                if o in self._items:
                    self._items.move_to_end(o)
                    out[o] = self._items[o]
                else:
                    need.append(o)
        for i in range(0, len(need), 500):
            part = need[i : i + 500]
            marks = ",".join("?" * len(part))
            for oid, kind, data in query(
                    f"SELECT oid, kind, data FROM objects WHERE oid IN ({marks})", part):
                o = Oid(bytes(oid))
                out[o] = _decode(o, data) if kind == Kind.PACK else None
        with self._lock:
            for o in need:
                if o in out:
                    self._items[o] = out[o]
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return out


@functools.lru_cache(maxsize=64)
def decoded(oid: bytes, frame: bytes) -> packs.Pack | None:
    """Return a pack decoded from its stored frame, or None if it is damaged (memoised)."""
    return _decode(Oid(oid), frame)


def _decode(oid: Oid, frame: bytes) -> packs.Pack | None:
    try:
        pack = packs.Pack(decompress(oid, frame, verify=False))
    except (CasError, ValueError):
        return None
    return pack if packs.pack_id(pack.page) == oid else None


def resolve(query: Query, cache: PackCache,
            rows: Sequence[tuple[Any, int, bytes]]) -> dict[Oid, tuple[Kind, bytes]]:
    """Return (kind, frame) per row (oid, stored kind, data), packed chunks as frames.

    A chunk whose pack is gone or damaged, or whose reference is malformed, comes back
    with an empty frame, which no reader decompresses: its row is there, its bytes are
    not, so whoever reads it reports it corrupt (fsck says which pack).
    """
    out: dict[Oid, tuple[Kind, bytes]] = {}
    refs: list[tuple[Oid, Oid, int]] = []
    for oid, kind, data in rows:
        o = Oid(bytes(oid))
        if kind == PACKED:
            try:
                pack_oid, i = packs.parse_ref(data)
            except ValueError:
                out[o] = (Kind.CHUNK, b"")
                continue
            refs.append((o, pack_oid, i))
        else:
            out[o] = (stored_kind(kind, o), data)
    if refs:
        got = cache.get(query, [p for _, p, _ in refs])
        for o, p, i in refs:
            pack = got.get(p)
            out[o] = (Kind.CHUNK, _fast_frame(pack.member(i))
                      if pack is not None and i < len(pack) else b"")
    return out


def members(query: Query, cache: PackCache,
            rows: Sequence[tuple[Any, int, bytes]]) -> dict[Oid, bytes]:
    """Return the payload of each packed row (oid, stored kind, data), from its pack.

    Rows of other kinds are left out. Raises CorruptObject naming a packed chunk whose
    reference is malformed or whose pack is damaged or not stored.
    """
    refs: list[tuple[Oid, Oid, int]] = []
    for oid, kind, data in rows:
        if kind == PACKED:
            o = Oid(bytes(oid))
            try:
                refs.append((o, *packs.parse_ref(data)))
            except ValueError:
                raise CorruptObject(f"object {o.hex()} has a malformed pack reference",
                                    object_id=o.hex()) from None
    out: dict[Oid, bytes] = {}
    got = cache.get(query, [p for _, p, _ in refs]) if refs else {}
    for o, p, i in refs:
        pack = got.get(p)
        if pack is None or i >= len(pack):
            raise CorruptObject(f"object {o.hex()} is kept in pack {p.hex()}, which is"
                                " damaged or not stored", object_id=o.hex())
        out[o] = pack.member(i)
    return out


def payload(query: Query, cache: PackCache, kind: int, data: bytes) -> bytes | None:
    """Return a chunk row's payload, packed or not; None if it cannot be read."""
    try:
        if kind != PACKED:
            return decompress(b"", data, verify=False)
        pack_oid, i = packs.parse_ref(data)
    except (CasError, ValueError):
        return None
    pack = cache.get(query, [pack_oid]).get(pack_oid)
    return pack.member(i) if pack is not None and i < len(pack) else None


def pack_frames(query: Query, pages: Sequence[Oid]) -> list[tuple[Oid, bytes]]:
    """Return (page, stored frame of its pack) for each of these pages whose pack is stored."""
    ids = {packs.pack_id(page): page for page in pages}
    out: list[tuple[Oid, bytes]] = []
    keys = list(ids)
    for i in range(0, len(keys), 500):
        part = keys[i : i + 500]
        marks = ",".join("?" * len(part))
        out.extend((ids[Oid(bytes(oid))], data) for oid, data in query(
            f"SELECT oid, data FROM objects WHERE oid IN ({marks})"
            f" AND kind = {int(Kind.PACK)}", part))
    return out


def _readable(oid: Oid, frame: bytes) -> bool:
    try:
        decompress(oid, frame, verify=False)
    except CasError:
        return False
    return True


Row = tuple[Oid, int, int, bytes]  # (oid, stored kind, payload size, data) to insert
Move = tuple[bytes, Oid, bytes]  # (reference, chunk id, payload) of a plain row to move


def pack_commit(con: sqlite3.Connection, cache: PackCache, rows: Sequence[Row]
                ) -> tuple[list[Row], Iterator[Row], list[Move], list[Oid]]:
    """Return the commit's rows, its new packs, the rows to repoint and packs to retire.

    A closed level-1 page new in the commit gets one pack of every item under it; a new
    leaf page not under one gets a pack of its own. New members come back as
    references. Older members become references to the new pack (``move_rows``): plain
    rows, and rows referring to the packs of the level-1 page's own leaves, which are
    then retired (deleted once no reference names them). The packs are to be inserted
    after the moved rows, so their rowids follow their members' (GC's sweep, by rowid,
    meets a dead pack after the members that named it).
    """
    def query(sql: str, params: Sequence[Any]) -> list[Any]:
        return con.execute(sql, params).fetchall()

    new_pages: dict[Oid, Any] = {}
    for oid, kind, _, data in rows:
        if kind == Kind.PAGE:
            try:
                new_pages[oid] = decode_page_full(decompress(oid, data, verify=False))
            except (CasError, ValueError):
                continue
    units = [(oid, list(page)) for oid, page in new_pages.items()
             if page.height == 1 and L.closed(page)]
    under = {leaf for _, kids in units for leaf in kids}
    # The leaves of each unit: new ones from the commit, older ones from the store.
    older_leaves = [leaf for leaf in under if leaf not in new_pages]
    leaf_ids: dict[Oid, list[Oid]] = {o: list(p) for o, p in new_pages.items()
                                      if p.height == 0}
    for i in range(0, len(older_leaves), 500):
        part = older_leaves[i : i + 500]
        qm = ",".join("?" * len(part))
        for oid, kind, data in query(
                f"SELECT oid, kind, data FROM objects WHERE oid IN ({qm})", part):
            try:
                stored_page = decode_page_full(decompress(b"", data, verify=False))
            except (CasError, ValueError):
                continue
            if kind == Kind.PAGE and stored_page.height == 0:
                leaf_ids[Oid(bytes(oid))] = list(stored_page)
    # What to pack: (page, members, leaves whose packs it replaces).
    wanted: list[tuple[Oid, list[Oid], list[Oid]]] = [
        (u, [c for leaf in kids for c in leaf_ids[leaf]], kids)
        for u, kids in units if all(leaf in leaf_ids for leaf in kids)]
    wanted += [(p, kids, []) for p, kids in leaf_ids.items()
               if p in new_pages and p not in under and len(kids) >= MIN_MEMBERS]
    if wanted:
        marks = ",".join("?" * len(wanted))
        have = {bytes(r[0]) for r in query(f"SELECT oid FROM objects WHERE oid IN ({marks})",
                                           [packs.pack_id(p) for p, _, _ in wanted])}
        wanted = [w for w in wanted if packs.pack_id(w[0]) not in have]
    if not wanted:
        return list(rows), iter(()), [], []
    out = {r[0]: r for r in rows}
    new = {r[0]: r for r in rows if r[1] == Kind.CHUNK}
    payloads: dict[Oid, bytes] = {}
    stored: dict[Oid, tuple[int, bytes]] = {}  # older member: (stored kind, data)
    # Members written by earlier commits: their payloads, from rows of either form.
    older = list({c for _, kids, _ in wanted for c in kids if c not in new})
    for i in range(0, len(older), 500):
        part = older[i : i + 500]
        qm = ",".join("?" * len(part))
        for oid, kind, data in query(
                f"SELECT oid, kind, data FROM objects WHERE oid IN ({qm})", part):
            o = Oid(bytes(oid))
            got = payload(query, cache, kind, data)
            if got is not None:
                payloads[o] = got
                stored[o] = (kind, bytes(data))
    chosen: list[tuple[Oid, list[Oid]]] = []
    repoint: list[Move] = []
    retire: list[Oid] = []
    claimed: set[Oid] = set()
    for unit, kids, replaced in wanted:
        if not all(c in payloads or (c in new and _readable(c, new[c][3])) for c in kids):
            continue  # a member not readable here: this page stays unpacked
        chosen.append((unit, kids))
        pack_oid = packs.pack_id(unit)
        mine = {packs.pack_id(leaf) for leaf in replaced}
        retire.extend(mine)
        for i, c in enumerate(kids):
            if c in claimed:
                continue
            if c in new:
                claimed.add(c)
                out[c] = (c, PACKED, new[c][2], packs.ref(pack_oid, i))
            elif c in stored and (stored[c][0] == Kind.CHUNK or (
                    stored[c][0] == PACKED and _pack_of(stored[c][1]) in mine)):
                # Plain, or kept in a pack this one replaces; one kept elsewhere stays.
                claimed.add(c)
                repoint.append((packs.ref(pack_oid, i), c, payloads[c]))

    def made() -> Iterator[Row]:
        # Built one at a time as the insert consumes them: a big import never holds
        # every pack (or every payload) at once beside its frames.
        for page, kids in chosen:
            members = [payloads[c] if c in payloads else
                       decompress(c, new[c][3], verify=False) for c in kids]
            body = packs.encode(page, members)
            yield packs.pack_id(page), int(Kind.PACK), len(body), compress(body)

    return list(out.values()), made(), repoint, retire


def _pack_of(ref: bytes) -> Oid | None:
    try:
        return packs.parse_ref(ref)[0]
    except ValueError:
        return None


def retire(con: sqlite3.Connection, oids: Sequence[Oid]) -> None:
    """Delete these packs where no reference names them any more (replaced by a larger one)."""
    for i in range(0, len(oids), 500):
        part = oids[i : i + 500]
        marks = ",".join("?" * len(part))
        con.execute(f"DELETE FROM objects WHERE oid IN ({marks}) AND kind = {int(Kind.PACK)}"
                    f" AND NOT EXISTS (SELECT 1 FROM objects c WHERE c.kind = {PACKED}"
                    " AND substr(c.data, 1, 32) = objects.oid)", part)


def move_rows(con: sqlite3.Connection, moves: Sequence[Move],
              now: float) -> list[tuple[int, int, bytes]]:
    """Point chunk rows at a new pack; return (old rowid, new rowid, payload) of those moved.

    A plain row is deleted and inserted anew as a reference rather than updated in
    place: a row shrunk in place leaves its frame's bytes as a hole in a b-tree page
    SQLite never refills (rows lie in insertion order, new ones go at the end): 1.37x
    the disk of an append-grown store, measured. A delete lets SQLite merge the emptied
    pages and reuse them. A row that is a reference already keeps its size, so it is
    updated in place and keeps its rowid (its search entry and id index entry stay).
    """
    out: list[tuple[int, int, bytes]] = []
    for i in range(0, len(moves), 500):
        part = moves[i : i + 500]
        marks = ",".join("?" * len(part))
        old = {bytes(o): (r, kind, size) for o, r, kind, size in con.execute(
            f"SELECT oid, rowid, kind, size FROM objects WHERE oid IN ({marks})"
            f" AND kind IN ({int(Kind.CHUNK)}, {PACKED})", [c for _, c, _ in part])}
        con.executemany("UPDATE objects SET data = ?, wtime = ? WHERE oid = ?",
                        [(ref, now, c) for ref, c, _ in part
                         if c in old and old[c][1] == PACKED])
        todo = [m for m in part if m[1] in old and old[m[1]][1] != PACKED]
        if not todo:
            continue
        con.executemany("DELETE FROM objects WHERE oid = ?", [(c,) for _, c, _ in todo])
        con.executemany("INSERT INTO objects (oid, kind, size, data, wtime) VALUES (?,?,?,?,?)",
                        [(c, PACKED, old[c][2], ref, now) for ref, c, _ in todo])
        new = {bytes(o): r for o, r in con.execute(
            f"SELECT oid, rowid FROM objects WHERE oid IN ({','.join('?' * len(todo))})",
            [c for _, c, _ in todo])}
        out.extend((old[c][0], new[c], payload) for _, c, payload in todo)
    return out
