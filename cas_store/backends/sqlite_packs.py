"""How the SQLite backend keeps packs (cas_store/packs.py) in its objects table.

A pack is an object row of kind PACK (its frame holds the page's messages). A chunk whose
bytes live in a pack keeps its own row, so it is still found by its id, but of stored kind
PACKED with ``data`` the reference ``packs.ref(pack, position)`` instead of a frame. Readers
never see that form: ``resolve`` turns such rows back into (CHUNK, frame), the frame
compressed again from the pack member (fast level), so fsck, migrate, GC and windowed
reads work on any stored form unchanged.

Packing happens inside ``SQLiteBackend.commit``, under its write lock: every new leaf page
of the commit gets its pack in the same transaction, and its members' rows become
references: new ones are inserted so; older plain ones are deleted and inserted again as
references (``move_rows``: an in-place rewrite leaves holes SQLite never refills), their
search-index entries renumbered with them. A chunk already packed elsewhere keeps its
reference; the new pack holds a copy, so a load of either page is one read. Nothing is
deleted for good here: GC's sweep removes a pack only when no reference names it
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

from .. import packs
from ..errors import CasError
from ..objects import Kind, Oid, compress, decode_page_full, decompress, decompress_many

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
            out[o] = (Kind(kind), data)
    if refs:
        got = cache.get(query, [p for _, p, _ in refs])
        for o, p, i in refs:
            pack = got.get(p)
            out[o] = (Kind.CHUNK, _fast_frame(pack.member(i))
                      if pack is not None and i < len(pack) else b"")
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


def bodies(query: Query, leaves: Sequence[Oid]) -> dict[Oid, tuple[int, memoryview, bool]]:
    """Return (count, members joined by commas, exact) for each leaf page with a sound pack.

    One query, one batched decompression (outside the GIL) and the fixed header only: the
    member count is not checked here, the caller compares it with the page's.
    """
    ids = {packs.pack_id(leaf): leaf for leaf in leaves}
    out: dict[Oid, tuple[int, memoryview, bool]] = {}
    keys = list(ids)
    for i in range(0, len(keys), 500):
        part = keys[i : i + 500]
        marks = ",".join("?" * len(part))
        rows = query(f"SELECT oid, data FROM objects WHERE oid IN ({marks})"
                     f" AND kind = {int(Kind.PACK)}", part)
        try:
            got = decompress_many([data for _, data in rows], copy=False)
        except CasError:
            # A damaged pack in the batch: take the sound ones one by one; the reader
            # takes a damaged one's page by its chunks instead.
            got = [_payload_or_empty(data) for _, data in rows]
        for (oid, _), got_one in zip(rows, got, strict=True):
            leaf = ids[Oid(bytes(oid))]
            view = memoryview(got_one)
            members = packs.body(view, leaf) if len(view) else None
            if members is not None:
                out[leaf] = (_count(view), members, bool(view[1] & packs.EXACT))
    return out


def _readable(oid: Oid, frame: bytes) -> bool:
    try:
        decompress(oid, frame, verify=False)
    except CasError:
        return False
    return True


def _payload_or_empty(frame: bytes) -> bytes:
    try:
        return decompress(b"", frame, verify=False)
    except CasError:
        return b""


def _count(payload: memoryview) -> int:
    # The member count: the first LEB128 after the fixed header (one byte below 128).
    first = payload[packs.FIXED]
    return first if first < 0x80 else len(packs.Pack(bytes(payload)))


Row = tuple[Oid, int, int, bytes]  # (oid, stored kind, payload size, data) to insert
Move = tuple[bytes, Oid, bytes]  # (reference, chunk id, payload) of a plain row to move


def pack_commit(con: sqlite3.Connection, cache: PackCache, rows: Sequence[Row]
                ) -> tuple[list[Row], Iterator[Row], list[Move]]:
    """Return the commit's rows, the packs of its new leaf pages, and the rows to repoint.

    New members come back as references. The packs are to be inserted after the rows, so
    their rowids follow their members' (GC's sweep, by rowid, meets a dead pack after the
    members that named it). Moves are the plain chunk rows stored before, to be
    re-inserted as references (``move_rows``), also before the packs.
    """
    def query(sql: str, params: Sequence[Any]) -> list[Any]:
        return con.execute(sql, params).fetchall()

    leaves: list[tuple[Oid, list[Oid]]] = []
    for oid, kind, _, data in rows:
        if kind == Kind.PAGE:
            try:
                decoded_page = decode_page_full(decompress(oid, data, verify=False))
            except (CasError, ValueError):
                continue
            if decoded_page.height == 0 and len(decoded_page) >= MIN_MEMBERS:
                leaves.append((oid, list(decoded_page)))
    if leaves:
        marks = ",".join("?" * len(leaves))
        have = {bytes(r[0]) for r in query(f"SELECT oid FROM objects WHERE oid IN ({marks})",
                                           [packs.pack_id(p) for p, _ in leaves])}
        leaves = [(p, kids) for p, kids in leaves if packs.pack_id(p) not in have]
    if not leaves:
        return list(rows), iter(()), []
    out = {r[0]: r for r in rows}
    new = {r[0]: r for r in rows if r[1] == Kind.CHUNK}
    payloads: dict[Oid, bytes] = {}
    stored_kind: dict[Oid, int] = {}
    # Members written by earlier commits: their payloads, from rows of either form.
    older = list({c for _, kids in leaves for c in kids if c not in new})
    for i in range(0, len(older), 500):
        part = older[i : i + 500]
        qm = ",".join("?" * len(part))
        for oid, kind, data in query(
                f"SELECT oid, kind, data FROM objects WHERE oid IN ({qm})", part):
            o = Oid(bytes(oid))
            got = payload(query, cache, kind, data)
            if got is not None:
                payloads[o] = got
                stored_kind[o] = kind
    chosen: list[tuple[Oid, list[Oid]]] = []
    repoint: list[Move] = []
    claimed: set[Oid] = set()
    for page, kids in leaves:
        if not all(c in payloads or (c in new and _readable(c, new[c][3])) for c in kids):
            continue  # a member not readable here: this page stays unpacked
        chosen.append((page, kids))
        pack_oid = packs.pack_id(page)
        for i, c in enumerate(kids):
            if c in claimed:
                continue
            if c in new:
                claimed.add(c)
                out[c] = (c, PACKED, new[c][2], packs.ref(pack_oid, i))
            elif stored_kind.get(c) == Kind.CHUNK:
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

    return list(out.values()), made(), repoint


def move_rows(con: sqlite3.Connection, moves: Sequence[Move],
              now: float) -> list[tuple[int, int, bytes]]:
    """Re-insert plain chunk rows as references; return (old rowid, new rowid, payload).

    Deleted and inserted anew rather than updated in place: a row shrunk in place leaves
    its frame's bytes as a hole in a b-tree page SQLite never refills (rows lie in
    insertion order, new ones go at the end): 1.37x the disk of an append-grown store,
    measured. A delete lets SQLite merge the emptied pages and reuse them.
    """
    out: list[tuple[int, int, bytes]] = []
    for i in range(0, len(moves), 500):
        part = moves[i : i + 500]
        marks = ",".join("?" * len(part))
        old = {bytes(o): (r, size) for o, r, size in con.execute(
            f"SELECT oid, rowid, size FROM objects WHERE oid IN ({marks})"
            f" AND kind = {int(Kind.CHUNK)}", [c for _, c, _ in part])}
        todo = [m for m in part if m[1] in old]
        if not todo:
            continue
        con.executemany("DELETE FROM objects WHERE oid = ?", [(c,) for _, c, _ in todo])
        con.executemany("INSERT INTO objects (oid, kind, size, data, wtime) VALUES (?,?,?,?,?)",
                        [(c, PACKED, old[c][1], ref, now) for ref, c, _ in todo])
        new = {bytes(o): r for o, r in con.execute(
            f"SELECT oid, rowid FROM objects WHERE oid IN ({','.join('?' * len(todo))})",
            [c for _, c, _ in todo])}
        out.extend((old[c][0], new[c], payload) for _, c, payload in todo)
    return out
