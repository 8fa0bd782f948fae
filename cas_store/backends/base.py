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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..objects import Kind, Oid

#: Ids per ``get_frames`` call on a full load (the store's batches) and per query inside
#: a backend: few round trips, bounded memory.
LOAD_BATCH = 1000


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
    kind: Kind
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


@dataclass(frozen=True, slots=True)
class Commit:
    """Everything one pointer move writes, applied all-or-nothing by ``Backend.commit``."""

    expected_seq: int  # the head seq the change was computed from; 0 = no session yet
    objects: Sequence[ObjectWrite]
    entry: LogEntry  # entry.seq == expected_seq + 1
    head: HeadRow
    # Versions (sid, seq, manifest) that must still exist, naming that manifest, when the
    # pointer moves: a restore, fork or recovery references objects reachable only from
    # them, and GC may have pruned them (or dropped and re-created the session) meanwhile.
    requires: Sequence[tuple[str, int, Oid]] = ()


class Retry(Exception):
    """A commit lost a race it can win by recomputing (an object it reused was just swept)."""


class Backend(abc.ABC):
    """Object store + version log. Thread-safe; each process opens its own."""

    name: str = "abstract"
    location: str = ""

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
                   query: str | None = None, include_deleted: bool = False) -> list[HeadRow]:
        """Return head rows by updated_at descending then sid, strictly after the cursor."""

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
            n, size, stored = out.get(info.kind, (0, 0, 0))
            out[info.kind] = (n + 1, size + info.size, stored + info.stored_size)
        return out

    def count_versions(self) -> int:
        """Return the number of log entries of all sessions."""
        return sum(len(self.versions(h.sid)) for h in self.iter_heads())

    def disk_bytes(self) -> int:
        """Return the bytes the store occupies on disk, where the backend can tell."""
        return 0

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections held by this process."""
