"""The two small interfaces every storage backend implements: objects and the version log.

The engine (``store.py``) holds all of the model's logic; a backend only stores bytes
and moves pointers. ``Backend.commit`` is the one write path for a session: it stores
the new objects, then moves the pointer with compare-and-swap. A backend that can do
both in one transaction (SQLite, PostgreSQL) does; one that cannot must write the
objects durably before the pointer moves, so a crash never leaves a pointer to nothing.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptObject, StorageError
from ..objects import Kind, Oid, decompress, decompress_many

#: Ids per ``get_frames`` call on a full load (the store's batches) and per query inside
#: a backend: few round trips, bounded memory.
LOAD_BATCH = 1000


KINDS = {int(k): k for k in Kind}


def stored_kind(value: Any, oid: bytes) -> Kind:
    """Return the Kind a stored row names; raise CorruptObject naming the object if none.

    A row's kind is not covered by its frame's checksum: a damaged one must fail the
    read of that object (and fsck names it), never escape as a ValueError.
    """
    kind = KINDS.get(value) if isinstance(value, int) else None
    if kind is None:
        name = bytes(oid).hex() if isinstance(oid, bytes | bytearray | memoryview) else repr(oid)
        raise CorruptObject(f"object {name} is stored with kind {value!r}, which is no kind:"
                            " its row is damaged", object_id=name)
    return kind


@dataclass(frozen=True, slots=True)
class ObjectWrite:
    """One object a commit needs present: new bytes, or a write-time refresh of old ones."""

    oid: Oid
    kind: Kind
    size: int  # payload bytes, before compression
    frame: bytes | None  # the zstd frame; None when the object is known to exist already


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the store knows of one stored object without reading it."""

    oid: Oid
    kind: Kind | None  # None: the stored kind is damaged (reading the object says so)
    size: int
    stored_size: int
    wtime: float


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One row of a session's version log: the pointer moved to ``manifest`` at ``seq``."""

    sid: str
    seq: int
    manifest: Oid
    created_at: float
    op: str
    message_count: int
    nbytes: int
    intentional_shrink: bool = False
    suspect_shrink: bool = False
    # The move's place in the store-wide change feed: strictly increasing in commit order
    # across all sessions (0 where a backend keeps no feed, or before the commit).
    cursor: int = 0


@dataclass(frozen=True, slots=True)
class HeadRow:
    """The session's pointer plus what a session list shows, kept beside the head."""

    sid: str
    seq: int
    manifest: Oid
    message_count: int
    nbytes: int
    title: str
    created_at: float
    updated_at: float
    deleted: bool = False
    suspect_pending: bool = False
    #: The head's values of the store's summary metadata keys (``Limits.summary_keys``):
    #: JSON scalars by key, so a session list can show and filter them without a manifest.
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IndexUpdate:
    """How a commit changes the head's message list: it becomes old[:keep] + add.

    The search index follows it in the commit's own transaction; ``keep=0, add=()``
    empties it (a delete). A commit without one leaves the message list as it was.
    """

    keep: int
    add: Sequence[Oid] = ()


@dataclass(frozen=True, slots=True)
class SearchTerm:
    """One term of a search: a phrase of one or more words, the last one maybe a prefix."""

    words: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One message that matched: where it is, its role, and a marked-up snippet.

    ``snippet`` is the message text around the match with each matched token between
    ``HIT_START`` and ``HIT_END`` (private-use characters, never in stored text's way).
    """

    sid: str
    index: int
    seq: int
    role: str
    snippet: str
    rank: float


HIT_START = "\ue000"
HIT_END = "\ue001"


@dataclass(frozen=True, slots=True)
class Commit:
    """Everything one pointer move writes, applied all-or-nothing by ``Backend.commit``."""

    expected_seq: int  # the head seq the change was computed from; 0 = no session yet
    objects: Sequence[ObjectWrite]
    # entry.seq > expected_seq: expected_seq + 1 for every new change; a history copied
    # from another store (migrate) keeps the gaps its pruned versions left.
    entry: LogEntry
    head: HeadRow
    # Versions (sid, seq, manifest) that must still exist, naming that manifest, when the
    # pointer moves: a restore, fork or recovery references objects reachable only from
    # them, and GC may have pruned them (or dropped and re-created the session) meanwhile.
    requires: Sequence[tuple[str, int, Oid]] = ()
    # The head's message list change, for a backend that keeps a search index.
    index: IndexUpdate | None = None


class CommitWatch(abc.ABC):
    """A process-wide handle that waits until another commit may have landed."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block up to timeout seconds; True if a commit may have landed since the last call."""

    def close(self) -> None:  # noqa: B027 - most watches hold nothing to release
        """Release what the watch holds (a connection)."""


class PollingWatch(CommitWatch):
    """The default watch: compares the backend's newest cursor every ``interval`` seconds."""

    def __init__(self, backend: Backend, interval: float = 0.1) -> None:
        self.backend = backend
        self.interval = interval
        self.last = backend.last_cursor()

    def wait(self, timeout: float) -> bool:
        """Poll the newest cursor until it moves or the timeout passes."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.backend.last_cursor()
            if now != self.last:
                self.last = now
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.interval, left))


def summary_matches(summary: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Return True if a head's summary matches every filter item (the rule backends follow).

    ``True`` matches a truthy value, ``False`` a falsy or absent one (``archived=false``
    keeps sessions never archived), ``None`` an absent or null one, any other scalar an
    equal value (a number equals the same number, int or float).
    """
    for key, want in where.items():
        got = summary.get(key)
        if isinstance(want, bool):
            if bool(got) is not want:
                return False
        elif want is None:
            if got is not None:
                return False
        elif isinstance(got, bool) or got != want:
            return False
    return True


class Retry(Exception):
    """A commit lost a race it can win by recomputing (an object it reused was just swept)."""


class Backend(abc.ABC):
    """Object store + version log. Thread-safe; each process opens its own."""

    name: str = "abstract"
    location: str = ""

    def now(self) -> float:
        """Return the clock write times are stamped with (seconds since the epoch).

        GC reads its start time from it, so a backend shared by several machines
        returns one clock for all (PostgreSQL: the database server's).
        """
        return time.time()

    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """Return a context in which this thread's reads see one consistent state."""
        return contextlib.nullcontext()

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Return a context whose commits (this thread's) become durable together at its end.

        Each commit inside stays all-or-nothing; a crash before the end loses the whole
        batch, never part of a commit. The default makes every commit durable on its own.
        """
        return contextlib.nullcontext()

    # --- objects -------------------------------------------------------------------------

    @abc.abstractmethod
    def get_frames(self, oids: Sequence[Oid]) -> dict[Oid, tuple[Kind, bytes]]:
        """Return the stored (kind, frame) of each id that exists; missing ids are left out."""

    @abc.abstractmethod
    def log_manifest_frames(self, sid: str, before: int, limit: int
                            ) -> dict[Oid, tuple[Kind, bytes]]:
        """Return (kind, frame) of the manifests of the session's last limit versions before seq.

        A delta chain's read-ahead (ObjectIO.manifest): a chain's links are, as a rule,
        the manifests of the versions just before its head. Missing ones are left out.
        """

    def chunk_payloads(self, oids: Sequence[Oid]) -> dict[Oid, bytes]:
        """Return the payload of each stored chunk (checksums checked, ids not hashed).

        Missing ids are left out; a stored object that is not a chunk or does not
        decompress raises CorruptObject naming it.
        """
        return chunk_payloads(self.get_frames(oids))

    #: Whether this backend keeps pages' messages in packs (cas_store/packs.py).
    packs = False

    def pack_frames(self, pages: Sequence[Oid]) -> list[tuple[Oid, bytes]]:
        """Return (page, stored frame of its pack) per page kept as a pack (packs.bodies).

        None here: a backend without packs has the reader take every page by its chunks.
        """
        return []

    def packed_in(self, oids: Sequence[Oid]) -> dict[Oid, Oid]:
        """Return the pack holding each of these chunks that is stored packed (none here)."""
        return {}

    @abc.abstractmethod
    def missing(self, oids: Iterable[Oid]) -> set[Oid]:
        """Return the ids of those given that are not stored."""

    @abc.abstractmethod
    def sizes(self, oids: Sequence[Oid]) -> dict[Oid, int]:
        """Return the payload size of each stored id (without reading its bytes)."""

    @abc.abstractmethod
    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Yield every stored object's info, in a stable order, without its bytes."""

    @abc.abstractmethod
    def delete_objects(self, oids: Sequence[Oid], written_before: float) -> tuple[int, int]:
        """Delete those ids whose write time is still before the cutoff; return (count, bytes).

        The write time is re-checked in the same step that deletes, so an object a writer
        refreshed after the caller looked at it survives.
        """

    @abc.abstractmethod
    def ordinals(self, oids: Sequence[Oid]) -> dict[Oid, int]:
        """Return each stored id's ordinal; missing ids are left out.

        An ordinal is a small non-negative integer, unique among stored objects and fixed
        for as long as the object exists (a deleted object's ordinal may be reused). GC
        keeps its mark set as a bitmap over ordinals, so they should be dense. A backend
        must not renumber objects (e.g. SQLite VACUUM on a table without an INTEGER
        PRIMARY KEY) while a GC runs.
        """

    @abc.abstractmethod
    def iter_ordinals(self, written_before: float) -> Iterator[tuple[int, Oid, int]]:
        """Yield (ordinal, id, stored bytes) of each object written before the cutoff.

        In ordinal order, a page at a time (no long read lock): GC's sweep candidates.
        """

    def sweep_orphans(self, written_before: float, dry_run: bool) -> tuple[int, int]:
        """Delete (or, dry, count) stored bytes no object entry names; return (count, bytes).

        Only a backend that writes bytes outside the transaction moving the pointer (a
        blob store) can have them: a writer killed between the two leaves them. The
        default has none.
        """
        return 0, 0

    @abc.abstractmethod
    def lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the named lease for owner until now + ttl; False if another holds it.

        A holder that stops renewing (killed) blocks others for at most ttl seconds.
        """

    @abc.abstractmethod
    def release(self, name: str, owner: str) -> None:
        """Give up the named lease if owner holds it."""

    # --- version log ----------------------------------------------------------------------

    @abc.abstractmethod
    def head(self, sid: str) -> HeadRow | None:
        """Return the session's head row (also for deleted sessions), or None."""

    @abc.abstractmethod
    def commit(self, change: Commit) -> None:
        """Store the objects, then move the pointer if the head is still expected_seq.

        Raises Conflict (nothing written to the log) when the head moved, and retries
        internally never: the caller decides whether to recompute.
        """

    @abc.abstractmethod
    def version(self, sid: str, seq: int) -> LogEntry | None:
        """Return one log entry, or None."""

    @abc.abstractmethod
    def versions(self, sid: str, *, limit: int | None = None, before: int | None = None,
                 ascending: bool = False) -> list[LogEntry]:
        """Return log entries newest first (or oldest first), seq < before when given."""

    @abc.abstractmethod
    def list_heads(self, *, limit: int, after: tuple[float, str] | None = None,
                   query: str | None = None, include_deleted: bool = False,
                   where: Mapping[str, Any] | None = None) -> list[HeadRow]:
        """Return head rows by updated_at descending then sid, strictly after the cursor.

        ``where`` keeps rows whose summary matches every item (``summary_matches``).
        """

    @abc.abstractmethod
    def iter_heads(self) -> Iterator[HeadRow]:
        """Yield every session's head row (deleted ones too)."""

    @abc.abstractmethod
    def suspect_sessions(self) -> list[str]:
        """Return the ids of sessions with a suspect shrink that no recovery has resolved."""

    @abc.abstractmethod
    def prune_versions(self, sid: str, seqs: Sequence[int]) -> int:
        """Delete these log entries (never the head); return how many went."""

    @abc.abstractmethod
    def drop_session(self, sid: str, expected_seq: int) -> bool:
        """Remove a session's head and whole log if its head is still expected_seq."""

    # --- figures (defaults are correct but slow; backends override with an aggregate) -------

    def object_totals(self) -> dict[Kind, tuple[int, int, int]]:
        """Return, per kind, (objects, payload bytes, stored bytes)."""
        out: dict[Kind, tuple[int, int, int]] = {}
        for info in self.iter_objects():
            if info.kind is None:
                continue  # a damaged row: fsck names it
            n, size, stored = out.get(info.kind, (0, 0, 0))
            out[info.kind] = (n + 1, size + info.size, stored + info.stored_size)
        return out

    def count_versions(self) -> int:
        """Return the number of log entries of all sessions."""
        return sum(len(self.versions(h.sid)) for h in self.iter_heads())

    def disk_bytes(self) -> int:
        """Return the bytes the store occupies on disk, where the backend can tell."""
        return 0

    # --- change feed (defaults are correct but slow; backends override) ---------------------

    def changes(self, after: int, *, sid: str | None = None,
                limit: int = 1000) -> list[LogEntry]:
        """Return log entries with cursor > after, oldest first, at most limit of them.

        Pruned and dropped entries are gone from the feed as from the log.
        """
        heads = [self.head(sid)] if sid is not None else list(self.iter_heads())
        found = [e for h in heads if h is not None for e in self.versions(h.sid)
                 if e.cursor > after]
        return sorted(found, key=lambda e: e.cursor)[:limit]

    def last_cursor(self) -> int:
        """Return the newest cursor of the feed (0 for an empty store)."""
        return max((e.cursor for h in self.iter_heads() for e in self.versions(h.sid)),
                   default=0)

    def watch(self) -> CommitWatch:
        """Return a new watch on the store's commits (one per process is enough)."""
        return PollingWatch(self)

    # --- search index (a backend without one says so) ---------------------------------------

    supports_search: bool = False

    def search(self, terms: Sequence[SearchTerm], *, limit: int, offset: int = 0,
               all_versions: bool = False) -> list[SearchHit]:
        """Return hits, best first: messages of heads (or of any kept version) matching all terms.

        With all_versions, a hit names the newest kept version holding the message there.
        """
        raise StorageError(f"the {self.name} backend keeps no search index")

    def search_state(self) -> str:
        """Return the index's state: "ready", "building" (a reindex runs) or "stale"."""
        return "stale"

    def search_reset(self) -> None:
        """Empty the index and mark it "building" (the start of a reindex)."""
        raise StorageError(f"the {self.name} backend keeps no search index")

    def search_load(self, sid: str, head_seq: int,
                    spans: Sequence[tuple[int, Oid, int, int | None]]) -> bool:
        """Replace a session's index rows by spans (index, chunk, from_seq, to_seq or None).

        Only if its head is still head_seq (False otherwise: recompute and retry); in one
        transaction, so a commit running beside a reindex is never half applied.
        """
        raise StorageError(f"the {self.name} backend keeps no search index")

    def search_ready(self) -> None:
        """Mark the index "ready" (the end of a reindex)."""
        raise StorageError(f"the {self.name} backend keeps no search index")

    def search_spans(self, sid: str) -> list[tuple[int, Oid]]:
        """Return the (index, chunk) rows the index holds for a session's head, by index."""
        return []

    def search_check(self, *, compare_text: bool = True) -> list[str]:
        """Return what is wrong with the index's own structure (empty when sound).

        With compare_text, also whether it holds exactly each indexed message's words.
        """
        return []

    def search_bytes(self) -> int:
        """Return the bytes the search index occupies, where the backend can tell."""
        return 0

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections held by this process."""


#: Up to this many chunk frames are decompressed one call each, not in one batch call.
FEW_FRAMES = 64


def chunk_payloads(frames: Mapping[Oid, tuple[Kind, bytes]]) -> dict[Oid, bytes]:
    """Return the payload of each chunk frame, decompressed on this thread.

    Raises CorruptObject naming an object that is not a chunk or does not decompress.
    """
    for o, (kind, _) in frames.items():
        if kind != Kind.CHUNK:
            raise CorruptObject(f"object {o.hex()} is not a chunk", object_id=o.hex())
    if len(frames) <= FEW_FRAMES:
        # zstd's batch call costs ≈ 18 µs more than one call per frame, whatever the
        # count, and saves ≈ 0.1 µs a frame: a reload after an append reads one chunk.
        return {o: decompress(o, frame, verify=False) for o, (_, frame) in frames.items()}
    ids = list(frames)
    try:
        got = decompress_many([frames[o][1] for o in ids], threads=1)
    except CorruptObject:
        for o in ids:
            decompress(o, frames[o][1], verify=False)  # raises naming the bad object
        raise
    return dict(zip(ids, got, strict=True))


def chunked(seq: Sequence[Any], n: int) -> Iterator[list[Any]]:
    """Yield seq's items in order, in lists of at most n."""
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])


def index_problems(orphans: int, gone: int) -> list[str]:
    """Return a search check's findings: spans naming no indexed doc, docs naming no chunk."""
    out = []
    if orphans:
        out.append(f"{orphans} index rows name a message that is not indexed")
    if gone:
        out.append(f"{gone} indexed messages are not stored chunks")
    return out
