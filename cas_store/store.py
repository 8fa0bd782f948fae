"""The engine: sessions as pointers to immutable manifests, moved only by compare-and-swap.

Every change follows one path (``Store._mutate``): read the head, compute the new
objects and manifest in memory, then hand them to ``Backend.commit``, which writes the
objects and moves the pointer only if the head is still the one read. A change asked
for with ``expected=ANY`` is recomputed against the new head when it loses that race;
one with an explicit ``expected`` raises ``Conflict`` instead. Nothing is ever
overwritten, so no save can lose a version.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import re
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import lists as L
from . import manifest as M
from . import recovery
from .backends import LOAD_BATCH, Backend, Commit, HeadRow, LogEntry, ObjectWrite, Retry
from .errors import (
    Conflict,
    CorruptObject,
    IntegrityError,
    InvalidArgument,
    InvalidMessage,
    InvalidMetadata,
    InvalidSessionId,
    ObjectNotFound,
    SessionExists,
    SessionNotFound,
    StorageError,
    VersionNotFound,
)
from .lists import ListRef
from .model import (
    ANY,
    JSON,
    Diff,
    Expected,
    FsckReport,
    Op,
    RecoveryAction,
    RecoveryReport,
    Session,
    SessionMeta,
    SessionPage,
    SessionSummary,
    StoreStats,
    Version,
)
from .objects import (
    Kind,
    Oid,
    compress,
    decode_page,
    decompress,
    decompress_many,
    encode_item,
    encode_metadata,
    encode_page,
    object_id,
)

SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LIST_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MESSAGES = "messages"
TITLE_MAX = 300
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits and policy knobs of a store."""

    max_message_bytes: int = 16 * 1024 * 1024
    max_metadata_bytes: int = 4 * 1024 * 1024
    recovery_window: float = 7 * DAY
    verify_reads: bool = False  # zstd frame checksums still catch corruption on read
    max_attempts: int = 200


def validate_session_id(sid: Any) -> str:
    """Return sid if it is a valid session id, else raise InvalidSessionId."""
    if not isinstance(sid, str) or not SESSION_ID_RE.fullmatch(sid):
        raise InvalidSessionId(
            f"invalid session id {sid!r}: use 1-128 of A-Z a-z 0-9 . _ -, starting with a"
            " letter or digit"
        )
    return sid


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """Return target with an RFC 7396 JSON merge patch applied (inputs are not modified)."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _title(metadata: Mapping[str, Any]) -> str:
    title = metadata.get("title")
    return title[:TITLE_MAX] if isinstance(title, str) else ""


@dataclass(slots=True)
class _Items:
    """Validated list items: their canonical payloads and ids, computed once per call."""

    ids: list[Oid]
    payloads: list[bytes]
    frames: list[bytes] | None = None  # compressed already (see Encoded)

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.payloads)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A list validated, encoded and compressed by ``encode_list``, ready for the store.

    The CPU-heavy half of a write (canonical JSON, hashing, compression) can so run in
    worker processes while one process commits. Pass it wherever a list of messages or
    of named-list items is accepted. Only ``encode_list`` makes one: the store re-hashes
    each payload and checks its limits; fsck checks the frames like any stored object.
    """

    ids: tuple[Oid, ...]
    payloads: tuple[bytes, ...]
    frames: tuple[bytes, ...]
    objects: bool  # every item is a JSON object (required of messages)

    def __len__(self) -> int:
        return len(self.ids)


def encode_list(values: Iterable[JSON], *, field: str = "messages", objects: bool = True,
                limits: Limits | None = None) -> Encoded:
    """Validate, encode and compress list items (messages when objects=True) for a save.

    Raises InvalidMessage naming the index of the first bad item, like the store would.
    """
    ids, payloads = _encode_items(values, field, objects, (limits or Limits()).max_message_bytes)
    return Encoded(tuple(ids), tuple(payloads), tuple(compress(p) for p in payloads), objects)


def _encode_items(values: Iterable[JSON], field: str, objects: bool,
                  limit: int) -> tuple[list[Oid], list[bytes]]:
    """Return the chunk ids and canonical payloads of list items, or raise naming the index."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise InvalidArgument(f"{field} must be a list", field=field)
    payloads = [encode_item(v, i, field=field, require_object=objects, limit=limit)
                for i, v in enumerate(values)]
    return [object_id(Kind.CHUNK, p) for p in payloads], payloads




class _SharedCache:
    """A bounded, thread-safe LRU of decoded immutable objects, keyed by id."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[Oid, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, oid: Oid) -> Any:
        """Return the cached value or None."""
        with self._lock:
            value = self._items.get(oid)
            if value is not None:
                self._items.move_to_end(oid)
            return value

    def put(self, oid: Oid, value: Any) -> None:
        """Cache a value, evicting the least recently used past the limit."""
        with self._lock:
            self._items[oid] = value
            self._items.move_to_end(oid)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)


class _IO:
    """Reads objects with a per-operation cache, and stages new ones for one commit."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.backend = store.backend
        self.cache: dict[Oid, Any] = {}
        self.staged: dict[Oid, ObjectWrite] = {}

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
        frames = self.backend.get_frames(need)
        verify = self.store.limits.verify_reads
        self.store.reads[kind.name.lower()] += len(need)
        for o in need:
            got = frames.get(o)
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

    def pages(self, oids: Sequence[Oid]) -> dict[Oid, list[Oid]]:
        """Return children of each page (cached)."""
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
                    children = decode_page(payload)[1]
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

    def manifest(self, oid: Oid) -> M.Manifest:
        """Return a manifest resolved to its full form (delta chains followed, cached)."""
        got = self._cached_manifest(oid)
        if got is None:
            try:
                got = M.resolve(oid, self.raw_manifest, self._cached_manifest)
            except ValueError as exc:
                raise CorruptObject(f"manifest {oid.hex()}: {exc}",
                                    object_id=oid.hex()) from None
            self.cache[oid] = got
            self.store._decoded.put(oid, got)
        return got

    def _cached_manifest(self, oid: Oid) -> M.Manifest | None:
        got = self.cache.get(oid)
        if got is None:
            got = self.store._decoded.get(oid)
            if got is not None:
                self.cache[oid] = got
        return got if isinstance(got, M.Manifest) else None

    def metadata(self, oid: Oid) -> dict[str, JSON]:
        """Return a metadata object."""
        value = json.loads(self.payloads([oid], Kind.META)[oid])
        assert isinstance(value, dict)
        return value

    def items(self, oids: Sequence[Oid]) -> list[JSON]:
        """Return the decoded list items, in order, a thousand per query."""
        batches = [oids[i : i + LOAD_BATCH] for i in range(0, len(oids), LOAD_BATCH)]
        out: list[JSON] = []
        if self.store.limits.verify_reads or self.staged or len(oids) < 2 * LOAD_BATCH:
            for part in batches:
                got = self.payloads(part, Kind.CHUNK)
                out.extend(json.loads(_json_array([got[o] for o in part])))
            return out
        # A long list: worker threads fetch and decompress the next batches (SQLite and
        # zstd both release the GIL) while this thread parses the one before. The chunks
        # are immutable and reachable from a version the caller holds, so reading them
        # outside this thread's snapshot sees the same bytes.
        for joined in _pool().map(self._fetch_joined, batches):
            out.extend(json.loads(joined))
        return out

    def _fetch_joined(self, part: Sequence[Oid]) -> bytes:
        """Return the chunks of part, in order, as one JSON array (for a worker thread)."""
        unique = list(dict.fromkeys(part))
        frames = self.backend.get_frames(unique)
        self.store.reads["chunk"] += len(unique)
        ordered = []
        for o in unique:
            got = frames.get(o)
            if got is None:
                raise ObjectNotFound(f"object {o.hex()} is missing", object_id=o.hex())
            if got[0] != Kind.CHUNK:
                raise CorruptObject(f"object {o.hex()} is not a chunk", object_id=o.hex())
            ordered.append(got[1])
        try:
            segments = decompress_many(ordered, threads=1)
        except CorruptObject:
            for o, frame in zip(unique, ordered, strict=True):
                decompress(o, frame, verify=False)  # raises naming the bad object
            raise
        if len(unique) != len(part):
            by_id = dict(zip(unique, segments, strict=True))
            segments = [by_id[o] for o in part]
        return _json_array(segments)

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

    def put_page(self, height: int, children: Sequence[Oid]) -> Oid:
        """Stage a page and return its id."""
        oid = self.put(Kind.PAGE, encode_page(height, children))
        self.cache[oid] = list(children)
        return oid

    def put_items(self, items: _Items, skip: int = 0) -> None:
        """Stage the chunks of items[skip:], refreshing the ones that exist already."""
        todo = list(zip(items.ids[skip:], items.payloads[skip:], strict=True))
        frames = items.frames[skip:] if items.frames is not None else None
        exists: set[Oid] = set()
        if len(todo) > 8 and frames is None:
            # Worth one query: a big save mostly re-sends chunks the store already has,
            # and this spares compressing them (pre-compressed frames need no check: the
            # insert refreshes the write time of any that exist).
            exists = set(o for o, _ in todo) - self.backend.missing(o for o, _ in todo)
        for i, (oid, payload) in enumerate(todo):
            if oid in exists:
                self.touch(oid, Kind.CHUNK, len(payload))
            elif frames is not None:
                if oid not in self.staged:
                    self.staged[oid] = ObjectWrite(oid, Kind.CHUNK, len(payload), frames[i])
            else:
                self.put(Kind.CHUNK, payload, oid)


@dataclass(slots=True)
class _Change:
    """What a mutation computed: the new manifest and how to describe the pointer move."""

    op: Op
    manifest: Oid
    message_count: int
    nbytes: int
    title: str
    intentional_shrink: bool = False
    suspect_shrink: bool = False
    deleted: bool = False
    resolves: bool = False  # clears the session's pending suspect shrink
    requires: list[tuple[str, int, Oid]] = field(default_factory=list)
    noop: bool = False
    created_at: float | None = None  # a fresh session's creation time, when not the version's


class Store:
    """A content-addressed, versioned session store over one backend."""

    def __init__(self, backend: Backend, *, limits: Limits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.limits = limits or Limits()
        self.clock = clock
        #: Objects read from the backend, by kind (for tests and the stats command).
        self.reads: Counter[str] = Counter()
        # Decoded manifests and pages, shared by operations. Objects are immutable, so an
        # entry can never be stale; it spares an append re-reading (and re-resolving the
        # delta chain of) the manifest the previous append just wrote.
        self._decoded = _SharedCache(20_000)

    def close(self) -> None:
        """Release the backend's connections."""
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- validation -------------------------------------------------------------------------

    def _items(self, values: Any, field: str = MESSAGES, *, objects: bool = True) -> _Items:
        if isinstance(values, Encoded):
            return self._encoded_items(values, field, objects)
        return _Items(*_encode_items(values, field, objects, self.limits.max_message_bytes))

    def _encoded_items(self, enc: Encoded, field: str, objects: bool) -> _Items:
        # Cheap re-checks of what encode_list promised: the id is the payload's hash
        # (a wrong one would corrupt the store), the limit and the object rule hold.
        limit = self.limits.max_message_bytes
        if objects and not enc.objects:
            raise InvalidArgument(f"{field} was encoded without the object rule", field=field)
        if not len(enc.ids) == len(enc.payloads) == len(enc.frames):
            raise InvalidArgument(f"{field}: malformed encoded list", field=field)
        for i, (oid, payload) in enumerate(zip(enc.ids, enc.payloads, strict=True)):
            if len(payload) > limit:
                raise InvalidMessage(f"{field}[{i}] is {len(payload)} bytes, over the limit"
                                     f" of {limit}", index=i, field=field)
            if object_id(Kind.CHUNK, payload) != oid:
                raise InvalidArgument(f"{field}[{i}]: id does not match its payload",
                                      field=field)
        return _Items(list(enc.ids), list(enc.payloads), list(enc.frames))

    def _extra_lists(self, lists: Mapping[str, Any] | None) -> dict[str, _Items]:
        if lists is None:
            return {}
        if not isinstance(lists, Mapping):
            raise InvalidArgument("lists must be an object of named lists", field="lists")
        out = {}
        for name, values in lists.items():
            if not isinstance(name, str) or not LIST_NAME_RE.fullmatch(name) or name == MESSAGES:
                raise InvalidArgument(f"invalid list name {name!r}", field="lists")
            out[name] = self._items(values, name, objects=False)
        return out

    def _metadata(self, metadata: Any) -> bytes:
        return encode_metadata({} if metadata is None else metadata,
                               self.limits.max_metadata_bytes)

    # --- the one write path -------------------------------------------------------------------

    def _live_head(self, sid: str) -> HeadRow:
        head = self.backend.head(validate_session_id(sid))
        if head is None or head.deleted:
            raise SessionNotFound(f"no session {sid!r}", session_id=sid)
        return head

    def _mutate(self, sid: str, expected: Expected,
                build: Callable[[HeadRow | None, _IO], _Change], *,
                mode: str = "live", at: float | None = None) -> Version:
        """Compute a change from the head and commit it with compare-and-swap.

        mode: "live" (the session must exist, not deleted), "create" (must not exist
        live), "any" (must exist, deleted allowed).
        """
        validate_session_id(sid)
        if expected is not ANY and (not isinstance(expected, int) or expected < 0):
            raise InvalidArgument("expected must be a version number", field="expected")
        for attempt in range(self.limits.max_attempts):
            head = self.backend.head(sid)
            if mode == "create":
                if head is not None and not head.deleted:
                    raise SessionExists(f"session {sid!r} exists", session_id=sid)
            elif head is None or (head.deleted and mode == "live"):
                raise SessionNotFound(f"no session {sid!r}", session_id=sid)
            current = head.seq if head else 0
            if expected is not ANY and expected != current:
                raise Conflict(
                    f"session {sid!r} is at version {current}, not {expected}",
                    current=current, expected=expected,
                )
            io = _IO(self)
            # No read transaction needed: build reads only immutable objects reachable
            # from the head it was given (GC never sweeps those), and the commit below
            # re-checks that head under the write lock.
            with _reading(sid):
                change = build(head, io)
            if change.noop and head is not None:
                return self._version(self._head_entry(head))
            now = self.clock() if at is None else at
            entry = LogEntry(
                sid=sid, seq=current + 1, manifest=change.manifest, created_at=now,
                op=change.op.value, message_count=change.message_count, nbytes=change.nbytes,
                intentional_shrink=change.intentional_shrink,
                suspect_shrink=change.suspect_shrink,
            )
            # mode "create" is a create or fork, whatever op it records (an import too).
            fresh = head is None or mode == "create"
            pending = change.suspect_shrink or (
                head is not None and head.suspect_pending and not change.resolves and not fresh
            )
            row = HeadRow(
                sid=sid, seq=entry.seq, manifest=change.manifest,
                message_count=change.message_count, nbytes=change.nbytes, title=change.title,
                created_at=(now if change.created_at is None else change.created_at)
                if fresh or head is None else head.created_at,
                updated_at=now, deleted=change.deleted, suspect_pending=pending,
            )
            try:
                self.backend.commit(Commit(current, list(io.staged.values()), entry, row,
                                           change.requires))
                for oid, w in io.staged.items():
                    if w.kind in (Kind.MANIFEST, Kind.PAGE) and oid in io.cache:
                        self._decoded.put(oid, io.cache[oid])
                return self._version(entry)
            except Conflict:
                if expected is not ANY:
                    raise
            except Retry:
                pass
            # Lost a race with another writer: back off a little (jittered) and recompute.
            time.sleep(min(0.05, 0.0005 * 2 ** min(attempt, 7)) * random.random())
        raise StorageError(f"session {sid!r}: gave up after {self.limits.max_attempts} attempts")

    def _head_entry(self, head: HeadRow) -> LogEntry:
        entry = self.backend.version(head.sid, head.seq)
        if entry is None:
            raise StorageError(f"session {head.sid!r}: head version {head.seq} is missing")
        return entry

    @staticmethod
    def _version(e: LogEntry) -> Version:
        return Version(e.sid, e.seq, e.manifest.hex(), e.created_at, e.op, e.message_count,
                       e.nbytes, e.intentional_shrink, e.suspect_shrink)

    def _put_manifest(self, io: _IO, meta: Oid, lists: dict[str, ListRef],
                      head: tuple[Oid, M.Manifest] | None = None) -> Oid:
        """Stage the manifest of a state: a small delta on head when one can express it."""
        lists = {n: r for n, r in lists.items() if n == MESSAGES or r.count}
        if head is not None:
            add = M.delta_fits(head[1], lists)
            if add is not None:
                ref = lists[MESSAGES]
                payload = M.encode_delta(
                    meta, head[0], head[1].depth + 1, ref.count, ref.nbytes, add,
                    {n: r.count for n, r in lists.items() if n != MESSAGES})
                oid = io.put(Kind.MANIFEST, payload)
                io.cache[oid] = M.Manifest(meta, lists, head[1].depth + 1)
                return oid
        oid = io.put(Kind.MANIFEST, M.encode_full(meta, lists))
        io.cache[oid] = M.Manifest(meta, lists, 0)
        return oid

    @staticmethod
    def _same_state(man: M.Manifest, meta: Oid, lists: dict[str, ListRef]) -> bool:
        def live(ls: dict[str, ListRef]) -> dict[str, ListRef]:
            return {n: r for n, r in ls.items() if n == MESSAGES or r.count}

        return man.meta == meta and live(man.lists) == live(lists)

    def _dropped_bytes(self, io: _IO, ref: ListRef, keep: int) -> int:
        # The manifest keeps only a total; sizes of what a cut drops come from the object
        # index (no chunk is read), from whichever side of the cut is shorter.
        if keep == ref.count:
            return ref.nbytes
        if ref.count - keep <= keep:
            gone = L.read_ids(ref, io, keep, ref.count)
            sizes = self.backend.sizes(gone)
            return ref.nbytes - sum(sizes[o] for o in gone)
        kept = L.read_ids(ref, io, 0, keep)
        sizes = self.backend.sizes(kept)
        return sum(sizes[o] for o in kept)

    def _replace_list(self, io: _IO, ref: ListRef, items: _Items) -> tuple[ListRef, bool]:
        """Return (new list, shrank): ref replaced by items, sharing the common prefix."""
        old = L.read_ids(ref, io)
        cp = L.common_prefix(old, items.ids)
        io.put_items(items, cp)
        new = L.splice(ref, cp, items.ids[cp:], items.nbytes, io)
        return new, cp < len(old)

    # --- writes -------------------------------------------------------------------------------

    def create(self, sid: str, metadata: Mapping[str, JSON] | None = None,
               messages: Iterable[JSON] = (), *, lists: Mapping[str, Any] | None = None,
               at: float | None = None, op: Op = Op.CREATE,
               created_at: float | None = None) -> Version:
        """Create a session (or a new life of a deleted one) at version seq+1; never overwrites.

        Raises SessionExists if a live session has this id. ``created_at`` sets the
        session's creation time when it is older than this first version (an import).
        """
        validate_session_id(sid)
        meta = self._metadata(metadata)
        items = self._items(messages)
        extra = self._extra_lists(lists)
        title = _title(json.loads(meta))

        def build(head: HeadRow | None, io: _IO) -> _Change:
            io.put_items(items)
            refs = {MESSAGES: L.splice(L.EMPTY, 0, items.ids, items.nbytes, io)}
            for name, it in extra.items():
                io.put_items(it)
                refs[name] = L.splice(L.EMPTY, 0, it.ids, it.nbytes, io)
            m = self._put_manifest(io, io.put(Kind.META, meta), refs)
            return _Change(op, m, len(items.ids), items.nbytes, title, created_at=created_at)

        return self._mutate(sid, ANY, build, mode="create", at=at)

    def state_id(self, messages: Iterable[JSON], metadata: Mapping[str, JSON] | None = None,
                 *, lists: Mapping[str, Any] | None = None) -> str:
        """Return the manifest id of a session in exactly this state; reads and writes nothing.

        Equal to ``version_state_id`` of any version in that state (whatever form its
        manifest is stored in), so a caller can tell whether saving it would change the
        head (importers use it to stay idempotent). Validates like ``create`` (raises
        InvalidMessage / InvalidMetadata / InvalidArgument).
        """
        meta = self._metadata(metadata)
        items = self._items(messages)
        extra = self._extra_lists(lists)
        pages = _HashPages()
        refs = {MESSAGES: L.splice(L.EMPTY, 0, items.ids, items.nbytes, pages)}
        for name, it in extra.items():
            refs[name] = L.splice(L.EMPTY, 0, it.ids, it.nbytes, pages)
        payload = M.encode_full(object_id(Kind.META, meta), refs)
        return object_id(Kind.MANIFEST, payload).hex()

    def version_state_id(self, sid: str, *, seq: int | None = None) -> str:
        """Return the ``state_id`` of the session at seq (or its head; deleted ones too).

        Reads the manifest (and its delta chain) only: no chunk, no page.
        """
        validate_session_id(sid)
        with self.backend.snapshot(), _reading(sid):
            head = self.backend.head(sid)
            if head is None:
                raise SessionNotFound(f"no session {sid!r}", session_id=sid)
            oid = head.manifest if seq is None else self._entry(sid, seq).manifest
            man = _IO(self).manifest(oid)
            return object_id(Kind.MANIFEST, M.encode_full(man.meta, man.lists)).hex()

    def batch(self) -> AbstractContextManager[None]:
        """Return a context whose commits (this thread's) become durable together at its end.

        Each commit inside stays all-or-nothing and compare-and-swap as usual; a crash
        before the end rolls the whole batch back (never a half commit). For bulk writers
        such as imports: one durable transaction per batch instead of one per version.
        """
        return self.backend.batch()

    def append(self, sid: str, messages: Iterable[JSON], *, expected: Expected = ANY,
               at: float | None = None) -> Version:
        """Append messages atomically; with ``expected``, only if the head is still that seq.

        Writes the new chunks, the manifest and (every 16th message) a few pages: O(1)
        bytes whatever the session's length. Appending nothing returns the head unchanged.
        """
        items = self._items(messages)

        def build(head: HeadRow | None, io: _IO) -> _Change:
            assert head is not None
            man = io.manifest(head.manifest)
            if not items.ids:
                return _Change(Op.APPEND, head.manifest, head.message_count, head.nbytes,
                               head.title, noop=True)
            io.put_items(items)
            ref = man.messages
            new = L.splice(ref, ref.count, items.ids, ref.nbytes + items.nbytes, io)
            m = self._put_manifest(io, man.meta, {**man.lists, MESSAGES: new},
                                   (head.manifest, man))
            return _Change(Op.APPEND, m, new.count, new.nbytes, head.title)

        return self._mutate(sid, expected, build, at=at)

    def save(self, sid: str, messages: Iterable[JSON], metadata: Mapping[str, JSON] | None = None,
             *, expected: Expected = ANY, intentional_shrink: bool = False,
             lists: Mapping[str, Any] | None = None, at: float | None = None,
             op: Op = Op.SAVE) -> Version:
        """Replace the whole message list (and metadata, when given) as a new version.

        Only chunks and pages that differ from the head are written. A save that drops
        messages of the head is accepted and flagged ``suspect_shrink`` unless
        ``intentional_shrink`` is set; the old version stays, and ``recover`` can undo it.
        Extra named lists given in ``lists`` are replaced; the others are kept.
        Saving exactly the head's state returns the head without a new version.
        """
        items = self._items(messages)
        meta = None if metadata is None else self._metadata(metadata)
        extra = self._extra_lists(lists)

        def build(head: HeadRow | None, io: _IO) -> _Change:
            assert head is not None
            man = io.manifest(head.manifest)
            new, shrank = self._replace_list(io, man.messages, items)
            refs = {**man.lists, MESSAGES: new}
            for name, it in extra.items():
                refs[name] = self._replace_list(io, man.lists.get(name, L.EMPTY), it)[0]
            title = head.title
            meta_oid = man.meta
            if meta is not None:
                meta_oid = io.put(Kind.META, meta)
                title = _title(json.loads(meta))
            # A save always writes a full manifest: its id is the state's id (state_id).
            m = self._put_manifest(io, meta_oid, refs)
            return _Change(op, m, new.count, new.nbytes, title,
                           intentional_shrink=shrank and intentional_shrink,
                           suspect_shrink=shrank and not intentional_shrink,
                           noop=self._same_state(man, meta_oid, refs))

        return self._mutate(sid, expected, build, at=at)

    def rewind(self, sid: str, keep: int, messages: Iterable[JSON] = (), *,
               expected: Expected = ANY, at: float | None = None) -> Version:
        """Keep the first ``keep`` messages and append ``messages``, as one intentional version.

        The primitive behind retry, undo, edit-and-resend and replacing a streamed partial
        message with its final form. Near the end of a long session it writes O(1) bytes.
        """
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            raise InvalidArgument("keep must be a non-negative integer", field="keep")
        items = self._items(messages)

        def build(head: HeadRow | None, io: _IO) -> _Change:
            assert head is not None
            man = io.manifest(head.manifest)
            ref = man.messages
            if keep > ref.count:
                raise InvalidArgument(
                    f"keep={keep} but the session has {ref.count} messages", field="keep"
                )
            io.put_items(items)
            kept_bytes = self._dropped_bytes(io, ref, keep)
            new = L.splice(ref, keep, items.ids, kept_bytes + items.nbytes, io)
            refs = {**man.lists, MESSAGES: new}
            m = self._put_manifest(io, man.meta, refs, (head.manifest, man))
            shrank = keep < ref.count and L.read_ids(new, io, keep, ref.count) != L.read_ids(
                ref, io, keep, ref.count)
            return _Change(Op.REWIND, m, new.count, new.nbytes, head.title,
                           intentional_shrink=shrank,
                           noop=self._same_state(man, man.meta, refs))

        return self._mutate(sid, expected, build, at=at)

    def update_metadata(self, sid: str, patch: Mapping[str, JSON], *, expected: Expected = ANY,
                        at: float | None = None) -> Version:
        """Apply an RFC 7396 merge patch to the metadata; the message list is never touched.

        Without ``expected`` it applies to the current head even if the head moved
        meanwhile (a patch is safe to rebase); with it, a moved head raises Conflict.
        """
        if not isinstance(patch, Mapping):
            raise InvalidMetadata("a metadata patch must be a JSON object")
        self._metadata(patch)  # validates the patch itself before any read

        def build(head: HeadRow | None, io: _IO) -> _Change:
            assert head is not None
            man = io.manifest(head.manifest)
            merged = merge_patch(io.metadata(man.meta), patch)
            meta = self._metadata(merged)
            meta_oid = io.put(Kind.META, meta)
            m = self._put_manifest(io, meta_oid, man.lists, (head.manifest, man))
            return _Change(Op.UPDATE_METADATA, m, head.message_count, head.nbytes,
                           _title(merged), noop=meta_oid == man.meta)

        return self._mutate(sid, expected, build, at=at)

    def restore(self, sid: str, seq: int, *, expected: Expected = ANY,
                at: float | None = None) -> Version:
        """Make version ``seq`` the head again (a new version, op ``restore``).

        Also brings back a deleted session. Nothing is copied: the new head names the old
        manifest. Clears the session's pending suspect shrink: restoring is a choice.
        """

        def build(head: HeadRow | None, io: _IO) -> _Change:
            assert head is not None
            target = self._entry(sid, seq)
            shrank = False
            if not head.deleted and target.manifest != head.manifest:
                old = L.read_ids(io.manifest(head.manifest).messages, io)
                new = L.read_ids(io.manifest(target.manifest).messages, io)
                shrank = L.common_prefix(old, new) < len(old)
            title = _title(io.metadata(io.manifest(target.manifest).meta))
            return _Change(Op.RESTORE, target.manifest, target.message_count, target.nbytes,
                           title, intentional_shrink=shrank, resolves=True,
                           requires=[(sid, seq, target.manifest)])

        return self._mutate(sid, expected, build, mode="any", at=at)

    def fork(self, sid: str, new_sid: str | None = None, *, seq: int | None = None,
             at: float | None = None) -> Version:
        """Create ``new_sid`` (generated when None) with the state of sid at seq (or head).

        The fork shares every object with its source; it writes one log entry.
        """
        validate_session_id(sid)
        target_sid = uuid.uuid4().hex if new_sid is None else validate_session_id(new_sid)
        if seq is None:
            head = self._live_head(sid)
            source = self._head_entry(head)
        else:
            if self.backend.head(sid) is None:
                raise SessionNotFound(f"no session {sid!r}", session_id=sid)
            source = self._entry(sid, seq)

        def build(head: HeadRow | None, io: _IO) -> _Change:
            title = _title(io.metadata(io.manifest(source.manifest).meta))
            return _Change(Op.FORK, source.manifest, source.message_count, source.nbytes,
                           title, requires=[(sid, source.seq, source.manifest)])

        return self._mutate(target_sid, ANY, build, mode="create", at=at)

    def delete(self, sid: str, *, expected: Expected = ANY, at: float | None = None) -> Version:
        """Delete a session: it leaves lists and loads, its versions stay (restore undoes it)."""

        def build(head: HeadRow | None, io: _IO) -> _Change:
            assert head is not None
            return _Change(Op.DELETE, head.manifest, head.message_count, head.nbytes,
                           head.title, deleted=True)

        return self._mutate(sid, expected, build, at=at)

    # --- reads --------------------------------------------------------------------------------

    def _entry(self, sid: str, seq: int) -> LogEntry:
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise InvalidArgument("seq must be an integer", field="seq")
        entry = self.backend.version(sid, seq)
        if entry is None:
            raise VersionNotFound(f"session {sid!r} has no version {seq}", session_id=sid,
                                  seq=seq)
        return entry

    def _state(self, sid: str, seq: int | None) -> tuple[HeadRow, LogEntry | None]:
        """Return the head and, for an explicit seq, that version (deleted sessions allowed)."""
        validate_session_id(sid)
        if seq is None:
            return self._live_head(sid), None
        head = self.backend.head(sid)
        if head is None:
            raise SessionNotFound(f"no session {sid!r}", session_id=sid)
        return head, self._entry(sid, seq)

    def _meta(self, io: _IO, head: HeadRow, entry: LogEntry | None) -> tuple[SessionMeta,
                                                                             M.Manifest]:
        manifest_oid = entry.manifest if entry else head.manifest
        man = io.manifest(manifest_oid)
        return self._session_meta(io, head, entry, man.meta, man.messages.count,
                                  man.messages.nbytes,
                                  {n: r.count for n, r in man.lists.items() if n != MESSAGES}
                                  ), man

    def _session_meta(self, io: _IO, head: HeadRow, entry: LogEntry | None, meta_oid: Oid,
                      count: int, nbytes: int, list_counts: dict[str, int]) -> SessionMeta:
        return SessionMeta(
            session_id=head.sid,
            seq=entry.seq if entry else head.seq,
            manifest=(entry.manifest if entry else head.manifest).hex(),
            metadata=io.metadata(meta_oid),
            message_count=count,
            bytes=nbytes,
            created_at=head.created_at,
            updated_at=entry.created_at if entry else head.updated_at,
            list_counts=list_counts,
            deleted=head.deleted and entry is None,
        )

    def load_meta(self, sid: str, *, seq: int | None = None) -> SessionMeta:
        """Return the session (at seq, or the head) without messages; reads no chunk or page."""
        with self.backend.snapshot(), _reading(sid):
            head, entry = self._state(sid, seq)
            io = _IO(self)
            oid = entry.manifest if entry else head.manifest
            cached = io._cached_manifest(oid)
            if cached is not None:
                return self._meta(io, head, entry)[0]
            # One manifest read, even for a delta: it carries the metadata id and counts.
            raw = io.raw_manifest(oid)
            count, nbytes, list_counts = raw.summary()
            return self._session_meta(io, head, entry, raw.meta, count, nbytes, list_counts)

    def load(self, sid: str, *, seq: int | None = None) -> Session:
        """Return the session (at seq, or the head) with all its messages and named lists."""
        with self.backend.snapshot(), _reading(sid):
            head, entry = self._state(sid, seq)
            io = _IO(self)
            meta, man = self._meta(io, head, entry)
            messages = io.items(L.read_ids(man.messages, io))
            extra = {n: io.items(L.read_ids(r, io)) for n, r in man.lists.items()
                     if n != MESSAGES}
            return Session(meta, messages, extra)

    def load_version(self, sid: str, seq: int) -> Session:
        """Return the session as of version seq (also of a deleted session)."""
        return self.load(sid, seq=seq)

    def messages(self, sid: str, offset: int = 0, limit: int | None = None, *,
                 seq: int | None = None, list_name: str = MESSAGES) -> list[JSON]:
        """Return messages[offset:offset+limit] reading only the pages that hold them.

        A negative offset counts from the end (``offset=-50``: the last 50). With
        ``list_name``, the same window of that named list (empty when it has none).
        """
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise InvalidArgument("offset must be an integer", field="offset")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidArgument("limit must be a non-negative integer", field="limit")
        with self.backend.snapshot(), _reading(sid):
            head, entry = self._state(sid, seq)
            io = _IO(self)
            lists = io.manifest(entry.manifest if entry else head.manifest).lists
            ref = lists.get(list_name, L.EMPTY)
            start = max(ref.count + offset, 0) if offset < 0 else offset
            stop = ref.count if limit is None else start + limit
            return io.items(L.read_ids(ref, io, start, stop))

    def versions(self, sid: str, *, limit: int | None = None,
                 before: int | None = None) -> list[Version]:
        """Return the session's versions, newest first (deleted sessions too)."""
        validate_session_id(sid)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise InvalidArgument("limit must be a positive integer", field="limit")
        if self.backend.head(sid) is None:
            raise SessionNotFound(f"no session {sid!r}", session_id=sid)
        return [self._version(e) for e in self.backend.versions(sid, limit=limit, before=before)]

    def version(self, sid: str, seq: int) -> Version:
        """Return one version's log entry."""
        validate_session_id(sid)
        return self._version(self._entry(sid, seq))

    def diff(self, sid: str, from_seq: int, to_seq: int) -> Diff:
        """Return how version to_seq differs from from_seq (messages and metadata)."""
        with self.backend.snapshot(), _reading(sid):
            validate_session_id(sid)
            if self.backend.head(sid) is None:
                raise SessionNotFound(f"no session {sid!r}", session_id=sid)
            io = _IO(self)
            a = io.manifest(self._entry(sid, from_seq).manifest)
            b = io.manifest(self._entry(sid, to_seq).manifest)
            ids_a, ids_b = L.read_ids(a.messages, io), L.read_ids(b.messages, io)
            cp = L.common_prefix(ids_a, ids_b)
            ma, mb = io.metadata(a.meta), io.metadata(b.meta)
            changes = {
                k: {"from": ma.get(k), "to": mb.get(k)}
                for k in sorted(set(ma) | set(mb))
                if ma.get(k, _MISSING) != mb.get(k, _MISSING)
            }
            return Diff(sid, from_seq, to_seq, cp, io.items(ids_a[cp:]), io.items(ids_b[cp:]),
                        changes)

    def list_sessions(self, limit: int = 50, cursor: str | None = None,
                      query: str | None = None, *, include_deleted: bool = False) -> SessionPage:
        """Return sessions, newest update first, from beside the heads (no manifest read)."""
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidArgument("limit must be between 1 and 1000", field="limit")
        after = _decode_cursor(cursor) if cursor else None
        rows = self.backend.list_heads(limit=limit + 1, after=after, query=query or None,
                                       include_deleted=include_deleted)
        more = len(rows) > limit
        rows = rows[:limit]
        page = [
            SessionSummary(r.sid, r.title, r.seq, r.message_count, r.nbytes, r.created_at,
                           r.updated_at, r.suspect_pending, r.deleted)
            for r in rows
        ]
        nxt = _encode_cursor(rows[-1].updated_at, rows[-1].sid) if more and rows else None
        return SessionPage(page, nxt)

    # --- recovery -----------------------------------------------------------------------------

    def recover(self, sid: str | None = None, *, dry_run: bool = False,
                window: float | None = None) -> RecoveryReport:
        """Undo suspect shrinks: bring back the cut messages plus all appended since.

        Looks at sessions with an unresolved suspect shrink newer than the window
        (default ``limits.recovery_window``, 7 days). Idempotent; never undoes an
        intentional shrink; keeps the newest metadata. With dry_run nothing is written.
        """
        window = self.limits.recovery_window if window is None else window
        sids = [validate_session_id(sid)] if sid is not None else self.backend.suspect_sessions()
        actions = []
        for s in sids:
            action = self._recover_one(s, dry_run, self.clock() - window)
            if action is not None:
                actions.append(action)
        return RecoveryReport(actions, dry_run)

    def _recover_one(self, sid: str, dry_run: bool, window_start: float) -> RecoveryAction | None:
        for _attempt in range(5):
            head = self.backend.head(sid)
            if head is None:
                raise SessionNotFound(f"no session {sid!r}", session_id=sid)
            if head.deleted:
                return None
            io = _IO(self)

            def ids_of(e: LogEntry, io: _IO = io) -> list[Oid]:
                return L.read_ids(io.manifest(e.manifest).messages, io)

            with self.backend.snapshot(), _reading(sid):
                entries = self._recent_entries(sid, window_start)
                found = recovery.plan(entries, ids_of, window_start)
            if found is None:
                return None
            if found.skipped:
                return RecoveryAction(sid, "skipped", found.shrink.seq, head.message_count,
                                      head.message_count, reason=found.skipped)
            if dry_run:
                return RecoveryAction(sid, "would_recover", found.shrink.seq,
                                      head.message_count, len(found.ids))
            try:
                v = self._commit_recovery(sid, head.seq, found)
            except Conflict:
                continue  # the session moved while we planned: plan again
            return RecoveryAction(sid, "recovered", found.shrink.seq, head.message_count,
                                  v.message_count, new_seq=v.seq)
        return RecoveryAction(sid, "skipped", 0, 0, 0, reason="session kept changing")

    def _recent_entries(self, sid: str, window_start: float) -> list[LogEntry]:
        """Return ascending entries from one before the window (or the last restore) on."""
        out: list[LogEntry] = []
        before = None
        while True:
            page = self.backend.versions(sid, limit=200, before=before)
            out.extend(page)
            if len(page) < 200 or page[-1].created_at < window_start or any(
                e.op in recovery.RESOLVING_OPS for e in page
            ):
                break
            before = page[-1].seq
        out.reverse()
        # Keep the entries contiguous: a gap (pruned by GC) would make the replay wrong.
        start = len(out) - 1
        while start > 0 and out[start - 1].seq == out[start].seq - 1:
            start -= 1
        return out[start:]

    def _commit_recovery(self, sid: str, expected: int, found: recovery.Plan) -> Version:
        def build(head: HeadRow | None, io: _IO) -> _Change:
            assert head is not None
            man = io.manifest(head.manifest)
            ref = man.messages
            old = L.read_ids(ref, io)
            cp = L.common_prefix(old, found.ids)
            sizes = self.backend.sizes(found.ids)
            nbytes = sum(sizes[o] for o in found.ids)
            new = L.splice(ref, cp, found.ids[cp:], nbytes, io)
            m = self._put_manifest(io, man.meta, {**man.lists, MESSAGES: new})
            return _Change(Op.RECOVER, m, new.count, new.nbytes, head.title, resolves=True,
                           requires=[(sid, s, m) for s, m in found.read])

        return self._mutate(sid, expected, build)

    # --- checks and figures -------------------------------------------------------------------

    def fsck(self, progress: Callable[[str, int], None] | None = None) -> FsckReport:
        """Re-hash every object and check every version's objects exist; changes nothing."""
        from .fsck import run_fsck

        return run_fsck(self, progress)

    def stats(self) -> StoreStats:
        """Return counts and sizes of the store."""
        totals = self.backend.object_totals()
        heads = list(self.backend.iter_heads())
        return StoreStats(
            backend=self.backend.name,
            location=self.backend.location,
            sessions=sum(1 for h in heads if not h.deleted),
            deleted_sessions=sum(1 for h in heads if h.deleted),
            versions=self.backend.count_versions(),
            objects={k.name.lower(): totals.get(k, (0, 0, 0))[0] for k in Kind},
            payload_bytes=sum(t[1] for t in totals.values()),
            stored_bytes=sum(t[2] for t in totals.values()),
            disk_bytes=self.backend.disk_bytes(),
        )

    def io(self) -> _IO:
        """Return a reader/stager for engine modules (gc, fsck, import) — not for callers."""
        return _IO(self)


_MISSING = object()


@contextmanager
def _reading(sid: str) -> Iterator[None]:
    """Name sid in any integrity error raised inside (an object id alone says little)."""
    try:
        yield
    except IntegrityError as exc:
        exc.about(sid)
        raise
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                                   thread_name_prefix="cas-load")
    return _POOL


def _json_array(payloads: Sequence[bytes]) -> bytes:
    # One json.loads over the joined payloads is several times faster than one call per
    # message, and each payload is a canonical JSON value already.
    return b"[" + b",".join(payloads) + b"]"


class _HashPages:
    """A PageIO that only computes page ids (for ``Store.state_id``): nothing is staged."""

    def pages(self, oids: Sequence[Oid]) -> dict[Oid, list[Oid]]:
        raise AssertionError("a list built from empty never reads pages")  # pragma: no cover

    def put_page(self, height: int, children: Sequence[Oid]) -> Oid:
        return object_id(Kind.PAGE, encode_page(height, children))


def _encode_cursor(updated_at: float, sid: str) -> str:
    raw = json.dumps([updated_at, sid], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated_at, sid = json.loads(raw)
        if not isinstance(updated_at, int | float) or not isinstance(sid, str):
            raise ValueError
        sid.encode("utf-8")  # a lone surrogate from "\ud800" cannot be a stored id
        return float(updated_at), sid
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeError):
        raise InvalidArgument("invalid cursor", field="cursor") from None
