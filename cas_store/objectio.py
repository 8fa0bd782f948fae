"""Object I/O for one operation: reads through caches, and the writes it stages.

``ObjectIO`` reads payloads, pages, manifests, metadata and whole lists for one store
operation (a per-operation cache over the store's shared LRU of decoded objects), and
stages the objects a mutation writes, so that its commit hands them to the backend at
once. A full load reads frozen pages from their packs (``loading``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import lists as L
from . import loading, packs
from . import manifest as M
from .backends import LOAD_BATCH, HeadRow, LogEntry, ObjectWrite
from .errors import CorruptObject, ObjectNotFound
from .model import JSON
from .objects import (
    Kind,
    Oid,
    Page,
    compress,
    decode_page_full,
    decompress,
    encode_page,
    object_id,
    orjson_exact,
    parse_json,
)

if TYPE_CHECKING:
    from .store import Store


def stored_json(payload: bytes, oid: Oid, what: type | None = None) -> Any:
    """Return a stored object's JSON value (of type what); raise CorruptObject naming it if not.

    Frames are checked by their checksum, not re-hashed (fsck does that), so a frame
    that is sound but holds something else must still fail as a damaged store.
    """
    try:
        value = parse_json(payload)
        sound = what is None or isinstance(value, what)
    except ValueError:
        sound = False
    if not sound:
        raise CorruptObject(f"object {oid.hex()} does not hold the JSON it should; run"
                            " `cas-store fsck`", object_id=oid.hex())
    return value


@dataclass(slots=True)
class Items:
    """Validated list items: their canonical payloads and ids, computed once per call."""

    ids: list[Oid]
    payloads: list[bytes]
    frames: list[bytes] | None = None  # compressed already (see Encoded)

    @property
    def nbytes(self) -> int:
        """Return the items' canonical bytes in all."""
        return sum(len(p) for p in self.payloads)


class ObjectIO:
    """Reads objects with a per-operation cache, and stages new ones for one commit."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.backend = store.backend
        self.cache: dict[Oid, Any] = {}
        self.staged: dict[Oid, ObjectWrite] = {}
        # Frames read ahead of their first use (a delta chain's manifests, from the log).
        self.ahead: dict[Oid, tuple[Kind, bytes]] = {}

    # reading ------------------------------------------------------------------------------

    def payloads(self, oids: Sequence[Oid], kind: Kind) -> dict[Oid, bytes]:
        """Return payloads of these ids (which must exist), verifying as configured."""
        out: dict[Oid, bytes] = {}
        need = [o for o in dict.fromkeys(oids) if o not in self.staged]
        for o in oids:
            if o in self.staged:
                w = self.staged[o]
                assert w.frame is not None
                out[o] = decompress(o, w.frame, verify=False)
        fetch = [o for o in need if o not in self.ahead]
        frames = self.backend.get_frames(fetch) if fetch else {}
        verify = self.store.limits.verify_reads
        self.store.reads[kind.name.lower()] += len(need)
        for o in need:
            got = frames.get(o) or self.ahead.pop(o, None)
            if got is None:
                raise ObjectNotFound(f"object {o.hex()} is missing", object_id=o.hex())
            stored_kind, frame = got
            if stored_kind != kind:
                raise CorruptObject(
                    f"object {o.hex()} is a {stored_kind.name.lower()}, expected a"
                    f" {kind.name.lower()}",
                    object_id=o.hex(),
                )
            out[o] = decompress(o, frame, verify=verify, kind=kind)
        return out

    def pages(self, oids: Sequence[Oid]) -> dict[Oid, Page]:
        """Return each page, decoded (cached)."""
        need = [o for o in oids if o not in self.cache]
        if need:
            shared = self.store._decoded
            missed = []
            for o in need:
                hit = shared.get(o)
                if hit is None:
                    missed.append(o)
                else:
                    self.cache[o] = hit
            for o, payload in self.payloads(missed, Kind.PAGE).items() if missed else ():
                try:
                    children = decode_page_full(payload)
                except ValueError:
                    raise CorruptObject(
                        f"page {o.hex()} is malformed", object_id=o.hex()
                    ) from None
                self.cache[o] = children
                shared.put(o, children)
        return {o: self.cache[o] for o in oids}

    def raw_manifest(self, oid: Oid) -> M.Raw:
        """Return a manifest as stored (full, or a delta on its base)."""
        payload = self.payloads([oid], Kind.MANIFEST)[oid]
        try:
            return M.decode(payload)
        except (ValueError, UnicodeDecodeError):
            raise CorruptObject(f"manifest {oid.hex()} is malformed",
                                object_id=oid.hex()) from None

    def manifest(self, oid: Oid, at: tuple[str, int] | None = None) -> M.Manifest:
        """Return a manifest resolved to its full form (delta chains followed, cached).

        ``at``: the (session, seq) of the version whose manifest this is. Then a delta
        chain not cached is read in one go from the versions before it in the log (its
        links, as a rule) rather than one link at a time.
        """
        got = self._cached_manifest(oid)
        if got is None:
            load = self.raw_manifest if at is None else self._chain_reader(*at)
            try:
                got = M.resolve(oid, load, self._cached_manifest)
            except ValueError as exc:
                raise CorruptObject(f"manifest {oid.hex()}: {exc}",
                                    object_id=oid.hex()) from None
            self.cache[oid] = got
            self.store._decoded.put(oid, got)
        return got

    def manifest_of(self, version: HeadRow | LogEntry) -> M.Manifest:
        """Return the resolved manifest of a session's head or log entry (see manifest)."""
        return self.manifest(version.manifest, (version.sid, version.seq))

    def _chain_reader(self, sid: str, seq: int) -> Callable[[Oid], M.Raw]:
        """Return a raw-manifest reader that, at a delta's first uncached base, reads ahead.

        Each delta is written on the session's head of the time, so a chain's links are
        as a rule the manifests of the versions just before it: one log query and one
        batched read bring them all (``depth`` of them), where following the links takes
        one read each. A link the log does not hold (pruned by GC, or a chain entering
        another session's history) is read on its own, as before. A frame read ahead is
        checked as any read is, when used (its kind and checksum; its hash with
        ``verify_reads``).
        """
        seen: list[M.Raw] = []

        def load(oid: Oid) -> M.Raw:
            if len(seen) == 1 and seen[0].base == oid and seen[0].depth > 1:
                self.ahead.update(self.backend.log_manifest_frames(sid, seq, seen[0].depth))
            raw = self.raw_manifest(oid)
            seen.append(raw)
            return raw

        return load

    def _cached_manifest(self, oid: Oid) -> M.Manifest | None:
        got = self.cache.get(oid)
        if got is None:
            got = self.store._decoded.get(oid)
            if got is not None:
                self.cache[oid] = got
        return got if isinstance(got, M.Manifest) else None

    def metadata(self, oid: Oid) -> dict[str, JSON]:
        """Return a metadata object."""
        value: dict[str, JSON] = stored_json(self.payloads([oid], Kind.META)[oid], oid, dict)
        return value

    def items(self, oids: Sequence[Oid]) -> list[JSON]:
        """Return the decoded list items, in order, a thousand per query."""
        batches = [oids[i : i + LOAD_BATCH] for i in range(0, len(oids), LOAD_BATCH)]
        out: list[JSON] = []
        if self.store.limits.verify_reads or self.staged:
            for part in batches:
                got = self.payloads(part, Kind.CHUNK)
                out.extend(self._parse(part, loading.json_array([got[o] for o in part])))
            return out
        if len(oids) < 2 * LOAD_BATCH:
            # One batched decompression per query rather than a Python call per frame.
            for part in batches:
                out.extend(self._parse(part, self._fetch_joined(part)))
            return out
        # A long list: worker threads fetch and decompress the next batches (SQLite and
        # zstd both release the GIL) while this thread parses the one before. The chunks
        # are immutable and reachable from a version the caller holds, so reading them
        # outside this thread's snapshot sees the same bytes.
        for part, joined in zip(batches, loading.pool().map(self._fetch_joined, batches),
                                strict=True):
            out.extend(self._parse(part, joined))
        return out

    def list_items(self, ref: L.ListRef, meanwhile: Callable[[], Any] | None = None
                   ) -> list[JSON]:
        """Return every item of a list, frozen pages read from their packs where kept so.

        ``meanwhile`` is called once on this thread, while a worker decompresses (or
        first, when nothing is handed over): other reads of the same operation.
        """
        if (not self.backend.packs or self.store.limits.verify_reads or self.staged
                or ref.frozen < 2 * L.MAX_PAGE):
            if meanwhile is not None:
                meanwhile()
            return self.items(L.read_ids(ref, self))
        out: list[JSON] = []
        # About a thousand items at a time: one query for their packs, one parse, and
        # the decompression shared with a worker thread: part of the first batch while
        # this thread reads the rest (meanwhile, the tail's chunks) and decompresses the
        # other part, then batch i + 1 while this thread parses batch i (docs/design.md,
        # "Packs"). A batch joined before (its pages are immutable) is only parsed again
        # ("Repeat loads").
        cache = self.store._loaded
        keep = ref.nbytes <= cache.budget // 2
        batches = loading.batches(L.units(ref, self, lazy=True))
        keys = [tuple(unit for unit, _, _ in batch) for batch in batches]
        kept = cache.get_many(keys) if keep else {}
        todo = [batch for key, batch in zip(keys, batches, strict=True) if key not in kept]
        with loading.Pipeline() as worker:
            first = self._unit_frames(todo[0]) if todo else []
            mine, theirs = loading.cut(first, loading.FIRST_SHARE)
            ahead = (worker.put(theirs, wait=False, last=len(todo) == 1) if theirs
                     else None)
            if meanwhile is not None:
                meanwhile()
            tail = self._tail_joined(ref.tail, keep) if ref.tail else None
            j = 0  # the index in todo of the next batch read
            for key, batch in zip(keys, batches, strict=True):
                joined = kept.get(key)
                if joined is None:
                    frames = [*mine, *theirs]
                    own = packs.payloads(mine)
                    if j + 1 < len(todo):
                        # The next batch goes to the worker before this one is waited for.
                        mine, theirs = loading.cut(self._unit_frames(todo[j + 1]),
                                                   loading.NEXT_SHARE)
                        ahead, now = (worker.put(theirs, last=j + 2 == len(todo)) if theirs
                                      else None), ahead
                    else:
                        now = ahead
                    j += 1
                    payloads = [*own, *(now.result() if now else ())]
                    joined = self._unit_array(batch, packs.read_bodies(frames, payloads))
                    if keep:
                        cache.put(key, joined, len(joined[0]))
                out.extend(loading.parse_array(*joined))
        if tail is not None:
            out.extend(self._parse(list(ref.tail), tail))
        return out

    def _tail_joined(self, tail: Sequence[Oid], keep: bool) -> bytes:
        """Return the tail's chunks as one JSON array, reading only those not kept yet."""
        cache = self.store._loaded
        got = cache.get_many(tail) if keep else {}
        need = [o for o in dict.fromkeys(tail) if o not in got]
        if need:
            for oid, payload in zip(need, self._segments(need), strict=True):
                got[oid] = payload
                if keep:
                    cache.put(oid, payload, len(payload))
        return loading.json_array([got[o] for o in tail])

    def _unit_frames(self, batch: Sequence[loading.Unit]) -> list[tuple[Oid, bytes]]:
        """Return the stored pack frames a batch of level-1 units is read from, in one query.

        A closed level-1 page is packed whole; an open one (the last) by its leaves. A
        unit whose page was not read is closed (only the last is left open), so its own
        pack is asked for.
        """
        want: list[Oid] = []
        for unit, _, kids in batch:
            if kids is None:
                want.append(unit)
                continue
            leaves = [leaf for leaf, _ in kids]
            want += [unit] if L.closed(leaves) else leaves
        return self.backend.pack_frames(want)

    def _unit_array(self, batch: Sequence[loading.Unit],
                    bodies: Mapping[Oid, tuple[int, memoryview | bytes, bool]]
                    ) -> tuple[bytes, bool]:
        """Return the items under these level-1 pages as one JSON array, and if it is exact.

        Each level-1 page from its own pack (bodies); one without (not closed yet, or
        damaged) leaf by leaf from theirs; a leaf without a sound pack (written before
        packs, or damaged) by its chunks. Exact: orjson may parse it (``objects.orjson_exact``).
        """
        found = dict(bodies)
        unread = [unit for unit, n, kids in batch
                  if kids is None and found.get(unit, (-1,))[0] != n]
        read = self.pages(unread) if unread else {}
        pieces: list[Oid] = []
        leaves: list[tuple[Oid, int]] = []
        for unit, n, kids in batch:
            if found.get(unit, (-1,))[0] == n:
                pieces.append(unit)
                continue
            kids = kids if kids is not None else L.leaves_of(read[unit])
            pieces.extend(leaf for leaf, _ in kids)
            leaves.extend(kid for kid in kids if found.get(kid[0], (-1,))[0] != kid[1])
        if leaves:
            found.update(packs.bodies(self.backend.pack_frames([leaf for leaf, _ in leaves])))
            lacking = [leaf for leaf, n in leaves if found.get(leaf, (-1,))[0] != n]
            if lacking:
                pages = self.pages(lacking)
                segments = iter(self._segments([c for leaf in lacking for c in pages[leaf]]))
                for leaf in lacking:
                    joined = b",".join(next(segments) for _ in pages[leaf])
                    found[leaf] = (len(pages[leaf]), joined, orjson_exact(joined))
        parts: list[memoryview | bytes] = [b"["]
        exact = True
        for piece in pieces:
            _, body, flag = found[piece]
            parts.append(body)
            parts.append(b",")
            exact = exact and flag
        parts[-1] = b"]"
        return b"".join(parts), exact

    def _parse(self, part: Sequence[Oid], joined: bytes) -> list[JSON]:
        """Parse the joined chunks of part; a damaged one is named (read again, one by one)."""
        try:
            return loading.parse_array(joined, orjson_exact(joined))
        except CorruptObject:
            for oid, payload in zip(part, self._segments(part), strict=True):
                stored_json(payload, oid)
            raise

    def _fetch_joined(self, part: Sequence[Oid]) -> bytes:
        """Return the chunks of part, in order, as one JSON array (damaged or missing: named)."""
        return loading.json_array(self._segments(part))

    def _segments(self, part: Sequence[Oid]) -> list[bytes]:
        """Return the payloads of the chunks of part, in order, read in one batch."""
        unique = list(dict.fromkeys(part))
        got = self.backend.chunk_payloads(unique)
        self.store.reads["chunk"] += len(unique)
        for o in unique:
            if o not in got:
                raise ObjectNotFound(f"object {o.hex()} is missing", object_id=o.hex())
        return [got[o] for o in part]

    # writing ------------------------------------------------------------------------------

    def put(self, kind: Kind, payload: bytes, oid: Oid | None = None) -> Oid:
        """Stage an object for the commit and return its id."""
        oid = oid or object_id(kind, payload)
        if oid not in self.staged:
            self.staged[oid] = ObjectWrite(oid, kind, len(payload), compress(payload))
        return oid

    def touch(self, oid: Oid, kind: Kind, size: int) -> None:
        """Stage a write-time refresh of an object known to exist."""
        if oid not in self.staged:
            self.staged[oid] = ObjectWrite(oid, kind, size, None)

    def put_page(self, height: int, children: Sequence[Oid],
                 counts: Sequence[int] | None = None) -> Oid:
        """Stage a page and return its id."""
        oid = self.put(Kind.PAGE, encode_page(height, children, counts))
        self.cache[oid] = Page(children, height, counts)
        return oid

    def put_items(self, items: Items, skip: int = 0, held: Collection[Oid] = ()) -> None:
        """Stage the chunks of items[skip:], refreshing the ones that exist already.

        Ids in ``held`` (the list of the head being replaced) are stored and reachable
        from that head, which every GC marks, so they are neither written nor refreshed:
        a save that re-sends a long session writes only what changed.
        """
        todo = [(o, p, i) for i, (o, p) in
                enumerate(zip(items.ids[skip:], items.payloads[skip:], strict=True))
                if o not in held]
        frames = items.frames[skip:] if items.frames is not None else None
        exists: set[Oid] = set()
        if len(todo) > 8 and frames is None:
            # Worth one query: a big save mostly re-sends chunks the store already has,
            # and this spares compressing them (pre-compressed frames need no check: the
            # insert refreshes the write time of any that exist).
            exists = set(o for o, _, _ in todo) - self.backend.missing(o for o, _, _ in todo)
        for oid, payload, i in todo:
            if oid in exists:
                self.touch(oid, Kind.CHUNK, len(payload))
            elif frames is not None:
                if oid not in self.staged:
                    self.staged[oid] = ObjectWrite(oid, Kind.CHUNK, len(payload), frames[i])
            else:
                self.put(Kind.CHUNK, payload, oid)
