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
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import lists as L
from . import manifest as M
from . import metadata as MD
from . import recovery
from .backends import (
    Backend,
    Commit,
    HeadRow,
    IndexUpdate,
    LogEntry,
    Retry,
)
from .caches import ByteCache, SharedCache
from .errors import (
    Conflict,
    IntegrityError,
    InvalidArgument,
    InvalidMessage,
    InvalidMetadata,
    SessionExists,
    SessionNotFound,
    StorageError,
    VersionNotFound,
)
from .feed import Change, Feed, read_changes
from .inputs import (
    LIST_NAME_RE,
    MESSAGES,
    Encoded,
    Limits,
    encode_items,
    validate_session_id,
)
from .lists import ListRef
from .metadata import merge_patch, summary_of, title_of
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
from .objectio import Items, ObjectIO, stored_json
from .objects import (
    Kind,
    Oid,
    Page,
    encode_metadata,
    encode_page,
    object_id,
)

if TYPE_CHECKING:
    from .search import ReindexReport, SearchPage


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
    metadata: Mapping[str, JSON] | None = None  # the new metadata, when it changed (summary)
    # How the message list changed, for the search index (None: it did not).
    index: IndexUpdate | None = None


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
        self._decoded = SharedCache(20_000)
        # Decoded message bytes for repeat full loads: a chat UI reopens the conversation
        # it just appended to, whose frozen pages have not changed (docs/design.md,
        # "Repeat loads").
        self._loaded = ByteCache(self.limits.load_cache_bytes)
        self._feed: Feed | None = None
        self._feed_lock = threading.Lock()

    def close(self) -> None:
        """Stop the change feed (if one runs) and release the backend's connections."""
        if self._feed is not None:
            self._feed.close()
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- validation -------------------------------------------------------------------------

    def _items(self, values: Any, field: str = MESSAGES, *, objects: bool = True) -> Items:
        if isinstance(values, Encoded):
            return self._encoded_items(values, field, objects)
        return Items(*encode_items(values, field, objects, self.limits.max_message_bytes))

    def _encoded_items(self, enc: Encoded, field: str, objects: bool) -> Items:
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
        return Items(list(enc.ids), list(enc.payloads), list(enc.frames))

    def _extra_lists(self, lists: Mapping[str, Any] | None) -> dict[str, Items]:
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
                build: Callable[[HeadRow | None, ObjectIO], _Change], *,
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
            io = ObjectIO(self)
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
                summary=self._summary(change.metadata) if change.metadata is not None
                else head.summary if head is not None else {},
            )
            try:
                self.backend.commit(Commit(current, list(io.staged.values()), entry, row,
                                           change.requires, change.index))
                if self._feed is not None:
                    self._feed.poke()  # this process's subscribers hear of it at once
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

    def _summary(self, metadata: Mapping[str, JSON]) -> dict[str, JSON]:
        return summary_of(metadata, self.limits.summary_keys)

    def _head_entry(self, head: HeadRow) -> LogEntry:
        entry = self.backend.version(head.sid, head.seq)
        if entry is None:
            raise StorageError(f"session {head.sid!r}: head version {head.seq} is missing")
        return entry

    @staticmethod
    def _version(e: LogEntry) -> Version:
        return Version(e.sid, e.seq, e.manifest.hex(), e.created_at, e.op, e.message_count,
                       e.nbytes, e.intentional_shrink, e.suspect_shrink)

    def _put_manifest(self, io: ObjectIO, meta: M.MetaRef, lists: dict[str, ListRef],
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
                io.cache[oid] = M.Manifest(meta.meta, lists, head[1].depth + 1, meta.layout,
                                           meta.values)
                return oid
        oid = io.put(Kind.MANIFEST, M.encode_full(meta, lists))
        io.cache[oid] = M.Manifest(meta.meta, lists, 0, meta.layout, meta.values)
        return oid

    @staticmethod
    def _same_state(man: M.Manifest, meta: M.MetaRef, lists: dict[str, ListRef]) -> bool:
        def live(ls: dict[str, ListRef]) -> dict[str, ListRef]:
            return {n: r for n, r in ls.items() if n == MESSAGES or r.count}

        return man.meta_ref == meta and live(man.lists) == live(lists)

    def _dropped_bytes(self, io: ObjectIO, ref: ListRef, keep: int) -> int:
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

    def _replace_list(self, io: ObjectIO, ref: ListRef,
                      items: Items) -> tuple[ListRef, bool, bool, int]:
        """Return (new list, cut, lost, common prefix): ref replaced by items, sharing the prefix.

        cut: some of the old list's items were replaced; lost: some item of the old list
        is nowhere in the new one (``recovery.lost_content``), which makes a save suspect.
        """
        old = L.read_ids(ref, io)
        cp = L.common_prefix(old, items.ids)
        io.put_items(items, cp, set(old[cp:]))
        cs = L.common_suffix(old[cp:], items.ids[cp:], L.MAX_PAGE + 1)
        if cs > L.MAX_PAGE:
            # An edit before a long unchanged run (an edit, insert or deletion early on,
            # a compacted prefix): the pages after it end at the same ids as before, so
            # rebuild and stage only the pages the old tree does not have.
            new = L.build(items.ids, items.nbytes, io, L.tree_pages(ref, io))
        else:
            new = L.splice(ref, cp, items.ids[cp:], items.nbytes, io)
        return new, cp < len(old), recovery.lost_content(old, items.ids), cp

    # --- writes -------------------------------------------------------------------------------

    def create(self, sid: str, metadata: Mapping[str, JSON] | None = None,
               messages: Iterable[JSON] = (), *, lists: Mapping[str, Any] | None = None,
               at: float | None = None, op: Op = Op.CREATE,
               created_at: float | None = None,
               key_order: Sequence[str] | None = None) -> Version:
        """Create a session (or a new life of a deleted one) at version seq+1; never overwrites.

        Raises SessionExists if a live session has this id. ``created_at`` sets the
        session's creation time when it is older than this first version (an import).
        ``key_order`` records the document's top-level names in order (metadata keys,
        list names, ``messages``) so an export writes them back in that order.
        """
        validate_session_id(sid)
        meta = self._metadata(metadata)
        fields: dict[str, JSON] = dict(metadata or {})
        order = MD.key_order_arg(key_order, fields)
        items = self._items(messages)
        extra = self._extra_lists(lists)
        title = title_of(json.loads(meta))

        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            io.put_items(items)
            refs = {MESSAGES: L.splice(L.EMPTY, 0, items.ids, items.nbytes, io)}
            for name, it in extra.items():
                io.put_items(it)
                refs[name] = L.splice(L.EMPTY, 0, it.ids, it.nbytes, io)
            m = self._put_manifest(io, MD.put(io, fields, order), refs)
            return _Change(op, m, len(items.ids), items.nbytes, title, created_at=created_at,
                           metadata=fields, index=IndexUpdate(0, items.ids))

        return self._mutate(sid, ANY, build, mode="create", at=at)

    def state_id(self, messages: Iterable[JSON], metadata: Mapping[str, JSON] | None = None,
                 *, lists: Mapping[str, Any] | None = None,
                 key_order: Sequence[str] | None = None) -> str:
        """Return the manifest id of a session in exactly this state; reads and writes nothing.

        Equal to ``version_state_id`` of any version in that state (whatever form its
        manifest is stored in), so a caller can tell whether saving it would change the
        head (importers use it to stay idempotent). Validates like ``create`` (raises
        InvalidMessage / InvalidMetadata / InvalidArgument).
        """
        self._metadata(metadata)
        fields: dict[str, JSON] = dict(metadata or {})
        order = MD.key_order_arg(key_order, fields)
        items = self._items(messages)
        extra = self._extra_lists(lists)
        pages = _HashPages()
        refs = {MESSAGES: L.splice(L.EMPTY, 0, items.ids, items.nbytes, pages)}
        for name, it in extra.items():
            refs[name] = L.splice(L.EMPTY, 0, it.ids, it.nbytes, pages)
        payload = M.encode_full(MD.put(None, fields, order), refs)
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
            man = ObjectIO(self).manifest(oid)
            return object_id(Kind.MANIFEST, M.encode_full(man.meta_ref, man.lists)).hex()

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

        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            assert head is not None
            man = io.manifest_of(head)
            if not items.ids:
                return _Change(Op.APPEND, head.manifest, head.message_count, head.nbytes,
                               head.title, noop=True)
            io.put_items(items)
            ref = man.messages
            new = L.splice(ref, ref.count, items.ids, ref.nbytes + items.nbytes, io)
            m = self._put_manifest(io, man.meta_ref, {**man.lists, MESSAGES: new},
                                   (head.manifest, man))
            return _Change(Op.APPEND, m, new.count, new.nbytes, head.title,
                           index=IndexUpdate(ref.count, items.ids))

        return self._mutate(sid, expected, build, at=at)

    def save(self, sid: str, messages: Iterable[JSON], metadata: Mapping[str, JSON] | None = None,
             *, expected: Expected = ANY, intentional_shrink: bool = False,
             lists: Mapping[str, Any] | None = None, at: float | None = None,
             op: Op = Op.SAVE, key_order: Sequence[str] | None = None) -> Version:
        """Replace the whole message list (and metadata, when given) as a new version.

        Only chunks and pages that differ from the head are written. A save that loses
        items of the head's messages or of a named list it replaces (an item dropped and
        nowhere in the new list) is accepted and flagged ``suspect_shrink`` unless
        ``intentional_shrink`` is set; the old version stays, and ``recover`` can undo it.
        Extra named lists given in ``lists`` are replaced; the others are kept.
        ``key_order`` records the document's top-level order (see ``create``); without
        it a recorded order is kept, new keys going before the first list.
        Saving exactly the head's state returns the head without a new version.
        """
        items = self._items(messages)
        if metadata is not None:
            self._metadata(metadata)
        fields = None if metadata is None else dict(metadata)
        order = None if fields is None else MD.key_order_arg(key_order, fields)
        extra = self._extra_lists(lists)

        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            assert head is not None
            man = io.manifest_of(head)
            new, cut, lost, cp = self._replace_list(io, man.messages, items)
            refs = {**man.lists, MESSAGES: new}
            for name, it in extra.items():
                refs[name], c, gone, _ = self._replace_list(io, man.lists.get(name, L.EMPTY), it)
                cut, lost = cut or c, lost or gone
            title = head.title
            meta = man.meta_ref
            if fields is not None:
                keys = order if order is not None else MD.relayout(
                    io, man.meta_ref, fields, [*refs, *extra])
                meta = MD.put(io, fields, keys, man.meta_ref)
                title = title_of(fields)
            # A save always writes a full manifest: its id is the state's id (state_id).
            m = self._put_manifest(io, meta, refs)
            return _Change(op, m, new.count, new.nbytes, title,
                           index=IndexUpdate(cp, items.ids[cp:]),
                           intentional_shrink=cut and intentional_shrink,
                           suspect_shrink=lost and not intentional_shrink,
                           noop=self._same_state(man, meta, refs), metadata=fields)

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

        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            assert head is not None
            man = io.manifest_of(head)
            ref = man.messages
            if keep > ref.count:
                raise InvalidArgument(
                    f"keep={keep} but the session has {ref.count} messages", field="keep"
                )
            io.put_items(items)
            kept_bytes = self._dropped_bytes(io, ref, keep)
            new = L.splice(ref, keep, items.ids, kept_bytes + items.nbytes, io)
            refs = {**man.lists, MESSAGES: new}
            m = self._put_manifest(io, man.meta_ref, refs, (head.manifest, man))
            shrank = keep < ref.count and L.read_ids(new, io, keep, ref.count) != L.read_ids(
                ref, io, keep, ref.count)
            return _Change(Op.REWIND, m, new.count, new.nbytes, head.title,
                           intentional_shrink=shrank, index=IndexUpdate(keep, items.ids),
                           noop=self._same_state(man, man.meta_ref, refs))

        return self._mutate(sid, expected, build, at=at)

    def splice(self, sid: str, edits: Mapping[str, tuple[int, Iterable[JSON]]], *,
               metadata: Mapping[str, JSON] | None = None, base: int | None = None,
               expected: Expected = ANY, at: float | None = None) -> Version:
        """Per list, keep the first k items of version ``base`` (default: the head) and append.

        ``edits`` maps list names (``messages`` or named lists) to ``(keep, items)``; lists
        not named are the head's. ``metadata`` replaces the metadata when given. One
        intentional version: the primitive behind framework checkpointers, whose every
        step appends a little to one or more lists and replaces a small record, and whose
        forks continue from an older version. Writes O(1) bytes per list near the end.
        """
        if not isinstance(edits, Mapping) or not edits:
            raise InvalidArgument("edits must name at least one list", field="edits")
        staged: dict[str, tuple[int, Items]] = {}
        for name, edit in edits.items():
            if name != MESSAGES and (not isinstance(name, str)
                                     or not LIST_NAME_RE.fullmatch(name)):
                raise InvalidArgument(f"invalid list name {name!r}", field="edits")
            keep, values = edit
            if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
                raise InvalidArgument("keep must be a non-negative integer", field="keep")
            staged[name] = (keep, self._items(values, name, objects=name == MESSAGES))
        if metadata is not None:
            self._metadata(metadata)  # validated before any read
        if base is not None and (not isinstance(base, int) or isinstance(base, bool)):
            raise InvalidArgument("base must be a version number", field="base")

        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            assert head is not None
            man = io.manifest_of(head)
            src, requires = man, []
            if base is not None and base != head.seq:
                entry = self._entry(sid, base)
                src = io.manifest_of(entry)
                requires = [(sid, base, entry.manifest)]
            refs = dict(man.lists)
            for name, (keep, items) in staged.items():
                ref = src.lists.get(name, L.EMPTY)
                if keep > ref.count:
                    raise InvalidArgument(f"keep={keep} but list {name!r} has {ref.count} items",
                                          field="keep")
                io.put_items(items)
                kept_bytes = self._dropped_bytes(io, ref, keep)
                refs[name] = L.splice(ref, keep, items.ids, kept_bytes + items.nbytes, io)
            title, meta_ref = head.title, man.meta_ref
            fields = None if metadata is None else dict(metadata)
            if fields is not None:
                meta_ref = MD.put(
                    io, fields, MD.relayout(io, man.meta_ref, fields, refs), man.meta_ref)
                title = title_of(fields)
            new, old = refs[MESSAGES], man.messages
            keep = staged[MESSAGES][0] if MESSAGES in staged else old.count
            index = None
            if src is man and keep >= old.count:
                shrank = False  # the head's messages are all kept: an append at most
            elif src is man:
                shrank = L.read_ids(new, io, keep, old.count) != L.read_ids(old, io, keep,
                                                                           old.count)
            else:
                ids_old, ids_new = L.read_ids(old, io), L.read_ids(new, io)
                cp = L.common_prefix(ids_old, ids_new)
                shrank = cp < len(ids_old)
                index = IndexUpdate(cp, ids_new[cp:])
            if index is None and MESSAGES in staged:
                index = IndexUpdate(keep, staged[MESSAGES][1].ids)
            m = self._put_manifest(io, meta_ref, refs, (head.manifest, man))
            return _Change(Op.REWIND, m, new.count, new.nbytes, title,
                           intentional_shrink=shrank, requires=requires, index=index,
                           noop=self._same_state(man, meta_ref, refs), metadata=fields)

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

        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            assert head is not None
            man = io.manifest_of(head)
            ref = man.meta_ref
            # Large values the patch does not name are carried over by id, neither read
            # nor re-encoded: a one-key patch costs the small fields, whatever the rest.
            kept = {k: o for k, o in ref.values if k not in patch}
            current = io.metadata(ref.meta)
            touched = [(k, o) for k, o in ref.values if k in patch]
            if touched:
                got = io.payloads([o for _, o in touched], Kind.META)
                current.update((k, stored_json(got[o], o)) for k, o in touched)
            merged = merge_patch(current, patch)
            assert isinstance(merged, dict)
            size = len(self._metadata(merged))
            if kept:
                size += sum(self.backend.sizes(list(kept.values())).values())
            if size > self.limits.max_metadata_bytes:
                raise InvalidMetadata(f"metadata is {size} bytes, over the limit of"
                                      f" {self.limits.max_metadata_bytes}")
            keys = MD.relayout(io, ref, {**merged, **dict.fromkeys(kept)}, man.lists)
            meta = MD.put(io, merged, keys, ref, kept)
            m = self._put_manifest(io, meta, man.lists, (head.manifest, man))
            return _Change(Op.UPDATE_METADATA, m, head.message_count, head.nbytes,
                           title_of(merged) if "title" in merged else head.title,
                           noop=meta == man.meta_ref, metadata=merged)

        return self._mutate(sid, expected, build, at=at)

    def restore(self, sid: str, seq: int, *, expected: Expected = ANY,
                at: float | None = None) -> Version:
        """Make version ``seq`` the head again (a new version, op ``restore``).

        Also brings back a deleted session. Nothing is copied: the new head names the old
        manifest. Clears the session's pending suspect shrink: restoring is a choice.
        """

        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            assert head is not None
            target = self._entry(sid, seq)
            shrank = False
            index = None
            if head.deleted:
                index = IndexUpdate(0, L.read_ids(io.manifest_of(target).messages, io))
            elif target.manifest != head.manifest:
                old = L.read_ids(io.manifest_of(head).messages, io)
                new = L.read_ids(io.manifest_of(target).messages, io)
                cp = L.common_prefix(old, new)
                shrank = cp < len(old)
                index = IndexUpdate(cp, new[cp:])
            metadata = MD.read(io, io.manifest_of(target))
            return _Change(Op.RESTORE, target.manifest, target.message_count, target.nbytes,
                           title_of(metadata), intentional_shrink=shrank, resolves=True,
                           requires=[(sid, seq, target.manifest)], metadata=metadata,
                           index=index)

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

        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            man = io.manifest_of(source)
            metadata = MD.read(io, man)
            return _Change(Op.FORK, source.manifest, source.message_count, source.nbytes,
                           title_of(metadata), requires=[(sid, source.seq, source.manifest)],
                           metadata=metadata, index=IndexUpdate(0, L.read_ids(man.messages, io)))

        return self._mutate(target_sid, ANY, build, mode="create", at=at)

    def delete(self, sid: str, *, expected: Expected = ANY, at: float | None = None) -> Version:
        """Delete a session: it leaves lists and loads, its versions stay (restore undoes it)."""

        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            assert head is not None
            return _Change(Op.DELETE, head.manifest, head.message_count, head.nbytes,
                           head.title, deleted=True, index=IndexUpdate(0))

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

    def _meta(self, io: ObjectIO, head: HeadRow, entry: LogEntry | None) -> tuple[SessionMeta,
                                                                             M.Manifest]:
        man = io.manifest_of(entry or head)
        return self._session_meta(io, head, entry, man, man.messages.count,
                                  man.messages.nbytes,
                                  {n: r.count for n, r in man.lists.items() if n != MESSAGES}
                                  ), man

    def _session_meta(self, io: ObjectIO, head: HeadRow, entry: LogEntry | None,
                      man: M.Manifest | M.Raw,
                      count: int, nbytes: int, list_counts: dict[str, int]) -> SessionMeta:
        return SessionMeta(
            session_id=head.sid,
            seq=entry.seq if entry else head.seq,
            manifest=(entry.manifest if entry else head.manifest).hex(),
            metadata=MD.read(io, man),
            message_count=count,
            bytes=nbytes,
            created_at=head.created_at,
            updated_at=entry.created_at if entry else head.updated_at,
            list_counts=list_counts,
            deleted=head.deleted and entry is None,
            key_order=tuple(MD.key_order(io, man.meta_ref)),
        )

    def load_meta(self, sid: str, *, seq: int | None = None) -> SessionMeta:
        """Return the session (at seq, or the head) without messages; reads no chunk or page."""
        with self.backend.snapshot(), _reading(sid):
            head, entry = self._state(sid, seq)
            io = ObjectIO(self)
            oid = entry.manifest if entry else head.manifest
            cached = io._cached_manifest(oid)
            if cached is not None:
                return self._meta(io, head, entry)[0]
            # One manifest read, even for a delta: it carries the metadata id and counts.
            raw = io.raw_manifest(oid)
            count, nbytes, list_counts = raw.summary()
            return self._session_meta(io, head, entry, raw, count, nbytes, list_counts)

    def load(self, sid: str, *, seq: int | None = None) -> Session:
        """Return the session (at seq, or the head) with all its messages and named lists."""
        with self.backend.snapshot(), _reading(sid):
            head, entry = self._state(sid, seq)
            io = ObjectIO(self)
            man = io.manifest_of(entry or head)
            # The metadata is read while a worker decompresses the first messages.
            meta: list[SessionMeta] = []
            messages = io.list_items(
                man.messages, meanwhile=lambda: meta.append(self._meta(io, head, entry)[0]))
            extra = {n: io.list_items(r) for n, r in man.lists.items() if n != MESSAGES}
            return Session(meta[0], messages, extra)

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
            io = ObjectIO(self)
            lists = io.manifest_of(entry or head).lists
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
            io = ObjectIO(self)
            a = io.manifest_of(self._entry(sid, from_seq))
            b = io.manifest_of(self._entry(sid, to_seq))
            ids_a, ids_b = L.read_ids(a.messages, io), L.read_ids(b.messages, io)
            cp = L.common_prefix(ids_a, ids_b)
            ma, mb = MD.read(io, a), MD.read(io, b)
            changes = {
                k: {"from": ma.get(k), "to": mb.get(k)}
                for k in sorted(set(ma) | set(mb))
                if ma.get(k, _MISSING) != mb.get(k, _MISSING)
            }
            return Diff(sid, from_seq, to_seq, cp, io.items(ids_a[cp:]), io.items(ids_b[cp:]),
                        changes)

    def list_sessions(self, limit: int = 50, cursor: str | None = None,
                      query: str | None = None, *, include_deleted: bool = False,
                      where: Mapping[str, JSON] | None = None,
                      pinned_first: bool = False) -> SessionPage:
        """Return sessions, newest update first, from beside the heads (no manifest read).

        Each summary carries the head's summary metadata values (``Limits.summary_keys``).
        ``where`` keeps sessions whose values match (``archived=False`` also keeps those
        never archived; see ``backends.summary_matches``); ``pinned_first`` lists the
        sessions whose ``pinned`` is true before the others, each part newest first.
        """
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidArgument("limit must be between 1 and 1000", field="limit")
        filters = self._filters(where)
        after, phase = _decode_cursor(cursor) if cursor else (None, 0)
        # One part, or two (pinned, then the rest), each read newest first; the cursor
        # names the part and the last row shown of it (or the part's top).
        parts: list[dict[str, JSON] | None] = [filters]
        if pinned_first:
            parts = [None if filters.get("pinned", True) is not True else
                     {**filters, "pinned": True},
                     None if filters.get("pinned", False) is not False else
                     {**filters, "pinned": False}]
        if phase >= len(parts):
            raise InvalidArgument("invalid cursor", field="cursor")

        def heads(part: dict[str, JSON] | None, n: int,
                  after: tuple[float, str] | None) -> list[HeadRow]:
            if part is None:
                return []  # the filters exclude this part
            return self.backend.list_heads(limit=n, after=after, query=query or None,
                                           include_deleted=include_deleted, where=part)

        rows: list[HeadRow] = []
        nxt = None
        while phase < len(parts):
            need = limit - len(rows)
            got = heads(parts[phase], need + 1, after)
            if len(got) > need:
                rows += got[:need]
                nxt = _encode_cursor((rows[-1].updated_at, rows[-1].sid), phase)
                break
            rows += got
            phase, after = phase + 1, None
            if len(rows) == limit:
                if phase < len(parts) and heads(parts[phase], 1, None):
                    nxt = _encode_cursor(None, phase)
                break
        page = [
            SessionSummary(r.sid, r.title, r.seq, r.message_count, r.nbytes, r.created_at,
                           r.updated_at, r.suspect_pending, r.deleted, dict(r.summary))
            for r in rows
        ]
        return SessionPage(page, nxt)

    def _filters(self, where: Mapping[str, JSON] | None) -> dict[str, JSON]:
        """Validate list filters: summary keys only, scalar values."""
        if where is None:
            return {}
        if not isinstance(where, Mapping):
            raise InvalidArgument("where must be an object of summary keys", field="where")
        out: dict[str, JSON] = {}
        for key, value in where.items():
            if key not in self.limits.summary_keys:
                raise InvalidArgument(f"{key!r} is not a summary key; filterable:"
                                      f" {', '.join(self.limits.summary_keys)}", field="where")
            if value is not None and not isinstance(value, bool | int | float | str):
                raise InvalidArgument(f"filter {key!r} must be a scalar", field="where")
            out[key] = value
        return out

    # --- recovery -----------------------------------------------------------------------------

    def recover(self, sid: str | None = None, *, dry_run: bool = False,
                window: float | None = None) -> RecoveryReport:
        """Undo suspect shrinks: bring back the cut items of every list plus all added since.

        Looks at every session with an unresolved suspect shrink, however old (an import
        keeps the files' old times); ``window`` (default ``limits.recovery_window``) only
        bounds how far back, past the newest such shrink, earlier ones are looked for.
        Restores messages and every named list by one rule, sets derived counts
        (``message_count``) in the metadata, and keeps the newest metadata otherwise.
        Idempotent; never undoes an intentional shrink. With dry_run nothing is written.
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
            if head.deleted or not head.suspect_pending:
                return None  # pending is set by every unresolved suspect shrink
            io = ObjectIO(self)

            def lists_of(e: LogEntry, io: ObjectIO = io) -> dict[str, list[Oid]]:
                return {n: L.read_ids(r, io) for n, r in io.manifest_of(e).lists.items()}

            with self.backend.snapshot(), _reading(sid):
                entries = self._recent_entries(sid, window_start)
                found = recovery.plan(entries, lists_of)
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
        """Return ascending, contiguous entries back to the last restore or recovery.

        Past ``window_start`` the reading stops once a suspect shrink and the version
        before it are in hand: an unresolved shrink always counts, however old.
        """
        out: list[LogEntry] = []
        before = None
        while True:
            page = self.backend.versions(sid, limit=200, before=before)
            out.extend(page)
            if len(page) < 200 or any(e.op in recovery.RESOLVING_OPS for e in page):
                break
            if page[-1].created_at < window_start and any(e.suspect_shrink for e in out[:-1]):
                break
            before = page[-1].seq
        out.reverse()
        # Keep the entries contiguous: a gap (pruned by GC) would make the replay wrong.
        start = len(out) - 1
        while start > 0 and out[start - 1].seq == out[start].seq - 1:
            start -= 1
        return out[start:]

    def _commit_recovery(self, sid: str, expected: int, found: recovery.Plan) -> Version:
        def build(head: HeadRow | None, io: ObjectIO) -> _Change:
            assert head is not None
            man = io.manifest_of(head)
            refs = dict(man.lists)
            index = None
            for name, ids in found.lists.items():
                ref = man.lists.get(name, L.EMPTY)
                old = L.read_ids(ref, io)
                cp = L.common_prefix(old, ids)
                sizes = self.backend.sizes(ids)
                refs[name] = L.splice(ref, cp, ids[cp:], sum(sizes[o] for o in ids), io)
                if name == MESSAGES:
                    index = IndexUpdate(cp, list(ids[cp:]))
            metadata = MD.read(io, man)
            fixed = dict(metadata)
            for name in found.lists:
                if name != MESSAGES:
                    # The file's emptied field landed in the metadata; the list is back.
                    fixed.pop(name, None)
            for key, name in recovery.DERIVED_COUNTS.items():
                if isinstance(fixed.get(key), int) and not isinstance(fixed[key], bool):
                    fixed[key] = refs.get(name, L.EMPTY).count
            meta = man.meta_ref if fixed == metadata else MD.put(
                io, fixed, MD.relayout(io, man.meta_ref, fixed, refs), man.meta_ref)
            m = self._put_manifest(io, meta, refs)
            msgs = refs[MESSAGES]
            return _Change(Op.RECOVER, m, msgs.count, msgs.nbytes, title_of(fixed),
                           resolves=True, requires=[(sid, s, m) for s, m in found.read],
                           metadata=fixed, index=index)

        return self._mutate(sid, expected, build)

    # --- change feed and search ---------------------------------------------------------------

    @property
    def feed(self) -> Feed:
        """Return this store's change feed (one watcher thread, started by the first subscriber)."""
        with self._feed_lock:
            if self._feed is None:
                self._feed = Feed(self.backend)
            return self._feed

    def changes(self, after: int = 0, *, session_id: str | None = None,
                limit: int = 1000) -> list[Change]:
        """Return the pointer moves after cursor ``after``, oldest first, from the log.

        Cursors increase in commit order across all sessions; pass the last one seen to
        get exactly what came after it (GC-pruned versions are gone from the feed too).
        """
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise InvalidArgument("after must be a non-negative cursor", field="after")
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidArgument("limit must be between 1 and 10000", field="limit")
        if session_id is not None:
            validate_session_id(session_id)
        return read_changes(self.backend, after, session_id, limit)

    def follow(self, after: int | None = None, *, session_id: str | None = None,
               timeout: float | None = None) -> Iterator[Change]:
        """Yield the moves after ``after`` (None: from now), then each new one as it lands.

        Blocks between changes; with ``timeout``, stops after that long without one.
        Moves made by other processes on the same store arrive too.
        """
        return self.feed.follow(after, session_id=session_id, timeout=timeout)

    def follow_async(self, after: int | None = None, *,
                     session_id: str | None = None) -> AsyncIterator[Change]:
        """Like ``follow``, as an async iterator that never blocks the event loop."""
        return self.feed.follow_async(after, session_id=session_id)

    def search(self, query: str, *, limit: int = 20, cursor: str | None = None,
               versions: str = "head") -> SearchPage:
        """Return messages matching query, best first (bm25), a page at a time.

        Searches every session's head (``versions="all"``: every kept version). Words
        match whole words in any script; ``"a phrase"``; ``prefix*``. Raises
        InvalidArgument for a query with no words, never for its syntax.
        """
        from .search import search

        return search(self, query, limit=limit, cursor=cursor, versions=versions)

    def reindex(self, progress: Callable[[int], None] | None = None) -> ReindexReport:
        """Rebuild the search index from the version log (writers may run meanwhile)."""
        from .search import reindex

        return reindex(self, progress)

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

    def io(self) -> ObjectIO:
        """Return a reader/stager for engine modules (gc, fsck, import) — not for callers."""
        return ObjectIO(self)


_MISSING = object()


@contextmanager
def _reading(sid: str) -> Iterator[None]:
    """Name sid in any integrity error raised inside (an object id alone says little)."""
    try:
        yield
    except IntegrityError as exc:
        exc.about(sid)
        raise

class _HashPages:
    """A PageIO that only computes page ids (for ``Store.state_id``): nothing is staged."""

    def __init__(self) -> None:
        self.made: dict[Oid, Page] = {}

    def pages(self, oids: Sequence[Oid]) -> dict[Oid, Page]:
        return {o: self.made[o] for o in oids}

    def put_page(self, height: int, children: Sequence[Oid],
                 counts: Sequence[int] | None = None) -> Oid:
        oid = object_id(Kind.PAGE, encode_page(height, children, counts))
        self.made[oid] = Page(children, height, counts)
        return oid


def _encode_cursor(after: tuple[float, str] | None, phase: int = 0) -> str:
    """Return a list cursor: the last row shown (or None: a part's top) and the part."""
    value: list[Any] = [after[0], after[1]] if after is not None else [None, None]
    if phase:
        value.append(phase)
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[tuple[float, str] | None, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        if not isinstance(value, list) or len(value) not in (2, 3):
            raise ValueError
        updated_at, sid, *rest = value
        phase = rest[0] if rest else 0
        if not isinstance(phase, int) or isinstance(phase, bool) or not 0 <= phase <= 1:
            raise ValueError
        if updated_at is None and sid is None:
            return None, phase
        if (not isinstance(updated_at, int | float) or isinstance(updated_at, bool)
                or not isinstance(sid, str)):
            raise ValueError
        sid.encode("utf-8")  # a lone surrogate from "\ud800" cannot be a stored id
        return (float(updated_at), sid), phase
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeError):
        raise InvalidArgument("invalid cursor", field="cursor") from None
