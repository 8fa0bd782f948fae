"""migrate: copy every session with its whole version history from one backend to another.

Written against the ``Backend`` interface only, so any pair of backends works (SQLite,
PostgreSQL, PostgreSQL with objects in S3). For each source session, oldest version
first, it copies the objects the version reaches that the destination lacks, then
appends the version with ``Backend.commit``: the log entry as it is (seq, op, flags,
counts, ``created_at``), and, with the session's last version, the source's head row
exactly. So the destination holds every version the source holds, pruned gaps included.

**Resumable.** Each version is one commit (objects with the pointer move), so an
interrupted run leaves every destination session at some version of its source's
history; the next run continues each session after its destination head, and a run with
nothing left to copy writes nothing. Commits are grouped in ``Backend.batch`` blocks
for speed; a crash loses at most the open block, which the next run copies again.

**Verified.** After copying, every version and head row of the destination is compared
with the source, and every object a destination version reaches is read back from the
destination and re-hashed. Source objects are re-hashed as they are copied, so a
damaged source stops the copy instead of spreading.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import manifest as M
from .backends.base import Backend, Commit, HeadRow, LogEntry, ObjectWrite, Retry
from .errors import Conflict, CorruptObject, InvalidArgument, ObjectNotFound, SessionExists
from .metadata import title_of
from .objects import Kind, Oid, decode_page, decompress, object_id

_READ_BATCH = 500
# A batch of commits becomes durable together; these bound what a crash can lose (it is
# copied again by the next run) and how long the destination's write lock is held.
_BATCH_COMMITS = 200
_BATCH_BYTES = 32 << 20
_ATTEMPTS = 5
_RESOLVING = {"recover", "restore"}  # ops that clear a pending suspect shrink
_FRESH = {"create", "fork", "import"}  # ops that can start a session's life again

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class MigrateReport:
    """What a migration run copied and checked."""

    sessions: int  # sessions in the source
    versions: int  # versions in the source
    sessions_copied: int  # sessions this run added versions to
    versions_copied: int
    objects_copied: int  # objects written to the destination (absent there before)
    bytes_copied: int  # their stored (compressed) bytes
    versions_verified: int
    objects_verified: int  # objects read back from the destination and re-hashed
    sessions_changed: int  # sessions the source changed during the run (run it again)
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if the destination holds every source version, verified."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {**asdict(self), "ok": self.ok}


@dataclass(slots=True)
class _Counts:
    versions_copied: int = 0
    objects_copied: int = 0
    bytes_copied: int = 0
    sessions_copied: int = 0



def _same_entry(a: LogEntry, b: LogEntry) -> bool:
    """Return True if two log entries record the same version (the feed cursor aside).

    A cursor is a place in one store's change feed, given by that store at commit time,
    so a copied version has the destination's cursor, not the source's.
    """
    return replace(a, cursor=0) == replace(b, cursor=0)

def migrate(src: Backend, dst: Backend, *, progress: Progress | None = None,
            verify: bool = True) -> MigrateReport:
    """Copy every session and version of src into dst, then verify dst against src.

    Safe to interrupt at any point and to run again: each run continues where the last
    stopped, and a run over a finished copy writes nothing. Raises SessionExists when a
    destination session has a history that is not a prefix of its source's (a different
    store was written there), Conflict when the destination changes under the copy.
    """
    if src.location and src.location == dst.location and src.name == dst.name:
        raise InvalidArgument("the source and the destination are the same store",
                              field="to")
    start = time.monotonic()
    total = sum(1 for _ in src.iter_heads())
    counts = _Counts()
    versions = 0
    copied: dict[str, int] = {}  # session -> the head seq this run copied it up to
    writer = _Writer(dst)
    try:
        for done, listed in enumerate(src.iter_heads(), 1):
            read = _read_session(src, listed.sid)
            if read is not None:
                head, entries = read
                versions += len(entries)
                n = _copy_session(src, dst, head, entries, writer, counts)
                counts.versions_copied += n
                counts.sessions_copied += n > 0
                copied[head.sid] = head.seq
            if progress:
                progress("copying", done, total)
    except BaseException:
        # Interrupted (Ctrl-C) or failed: every commit in the open batch is whole (a
        # commit that raised rolled back alone), so keep them; if the batch itself cannot
        # be made durable, the next run copies those versions again.
        with contextlib.suppress(Exception):
            writer.close()
        raise
    writer.close()
    if dst.supports_search:
        # Versions arrive through Backend.commit as history, without the message-list
        # changes a write path gives the search index: rebuild it from the copied log,
        # also when an earlier run was stopped after copying but before this step.
        from .search import check, reindex
        from .store import Store

        copy = Store(dst)
        if (counts.versions_copied or dst.search_state() != "ready"
                or check(copy, compare_text=False)):
            if progress:
                progress("indexing", 0, total)
            reindex(copy, (lambda n: progress("indexing", n, total)) if progress else None)
    problems: list[str] = []
    checked_versions = checked_objects = changed = 0
    if verify:
        for done, (sid, seq) in enumerate(copied.items(), 1):
            v, o, moved = _verify_session(src, dst, sid, seq, problems)
            checked_versions += v
            checked_objects += o
            changed += moved
            if progress:
                progress("verifying", done, len(copied))
    return MigrateReport(
        sessions=total, versions=versions, sessions_copied=counts.sessions_copied,
        versions_copied=counts.versions_copied, objects_copied=counts.objects_copied,
        bytes_copied=counts.bytes_copied, versions_verified=checked_versions,
        objects_verified=checked_objects, sessions_changed=changed,
        seconds=time.monotonic() - start, problems=problems,
    )


def _read_session(src: Backend, sid: str) -> tuple[HeadRow, list[LogEntry]] | None:
    """Return one session's head and its log up to that head, read consistently."""
    # A writer on a live source may commit between the two reads; one snapshot keeps
    # the head and the log in step (and versions newer than the head out).
    with src.snapshot():
        head = src.head(sid)
        entries = src.versions(sid, ascending=True) if head is not None else []
    if head is None:  # dropped (GC) since it was listed
        return None
    return head, [e for e in entries if e.seq <= head.seq]


# --- copying ----------------------------------------------------------------------------------


class _Writer:
    """Groups the destination's commits into batches (one durable write each)."""

    def __init__(self, dst: Backend) -> None:
        self.dst = dst
        self._ctx: AbstractContextManager[None] | None = None
        self._commits = 0
        self._bytes = 0
        self._started = False

    def commit(self, change: Commit, nbytes: int) -> None:
        """Commit one version inside the open batch (opening one if needed)."""
        if not self._started:
            self._started = True
            if self.dst.supports_search and self.dst.search_state() == "ready":
                # Copied history bypasses the index: say so before the first copy lands,
                # so a run stopped before its reindex leaves a stale index, not a wrong one.
                self.dst.search_reset()
        if self._ctx is None:
            self._ctx = self.dst.batch()
            self._ctx.__enter__()
        # A commit that raises rolls back alone; the batch's earlier commits stay good.
        self.dst.commit(change)
        self._commits += 1
        self._bytes += nbytes
        if self._commits >= _BATCH_COMMITS or self._bytes >= _BATCH_BYTES:
            self.close()

    def close(self) -> None:
        """Make the open batch durable."""
        ctx, self._ctx = self._ctx, None
        self._commits = self._bytes = 0
        if ctx is not None:
            ctx.__exit__(None, None, None)


def _copy_session(src: Backend, dst: Backend, head: HeadRow, entries: list[LogEntry],
                  writer: _Writer, counts: _Counts) -> int:
    """Append to dst the versions of one source session it lacks; return how many."""
    have = dst.head(head.sid)
    have_seq = have.seq if have is not None else 0
    if have is not None:
        _check_prefix(dst, head, entries, have)
        if have == head:
            return 0
    todo = [e for e in entries if e.seq > have_seq]
    if not todo:
        return 0
    walk = _Walk(src, dst, head.sid)
    pending = have.suspect_pending if have is not None else False
    current = have_seq
    for e in todo:
        pending = e.suspect_shrink or (pending and e.op not in _RESOLVING
                                       and e.op not in _FRESH)
        for attempt in range(_ATTEMPTS):
            writes = walk.version(e)
            row = head if e.seq == head.seq else _interim_head(head, entries, e, pending,
                                                               walk.title(e.manifest))
            new = [w for w in writes if w.frame is not None]
            nbytes = sum(len(w.frame or b"") for w in new)
            try:
                writer.commit(Commit(current, writes, e, row), nbytes)
            except Retry:
                # An object the destination had was swept before the commit: copy it.
                walk.forget(writes)
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            except Conflict as exc:
                raise Conflict(
                    f"session {head.sid!r} changed on the destination during the migration"
                    f" (it is at version {exc.current}, the copy expected {current})",
                    current=exc.current, expected=current) from None
            counts.objects_copied += len(new)
            counts.bytes_copied += nbytes
            break
        current = e.seq
    return len(todo)


def _check_prefix(dst: Backend, head: HeadRow, entries: list[LogEntry], have: HeadRow) -> None:
    """Raise SessionExists unless dst's history of the session is a prefix of the source's."""
    by_seq = {e.seq: e for e in entries}
    if have.seq > head.seq:
        raise SessionExists(
            f"session {head.sid!r} is at version {have.seq} on the destination, beyond the"
            f" source's {head.seq}: the destination has a different history",
            session_id=head.sid)
    # A version the source has pruned since an earlier run copied it (GC) may stay on
    # the destination, but the two logs must share a version, and agree on every one
    # they share: a log with nothing in common is another store's session of that name.
    shared = 0
    for e in dst.versions(head.sid, ascending=True):
        theirs = by_seq.get(e.seq)
        if theirs is not None and not _same_entry(theirs, e):
            raise SessionExists(
                f"session {head.sid!r} version {e.seq} differs on the destination: the"
                " destination has a different history", session_id=head.sid)
        shared += theirs is not None
    if not shared:
        raise SessionExists(
            f"session {head.sid!r} on the destination shares no version with the source:"
            " the destination has a different history", session_id=head.sid)


def _interim_head(head: HeadRow, entries: list[LogEntry], e: LogEntry, pending: bool,
                  title: str) -> HeadRow:
    """Return the head row after copying version e, when e is not the source's last.

    Derived from the entry as the engine would have written it; the session's last
    commit writes the source's head row exactly.
    """
    created = head.created_at if head.created_at <= e.created_at else entries[0].created_at
    return HeadRow(
        sid=e.sid, seq=e.seq, manifest=e.manifest, message_count=e.message_count,
        nbytes=e.nbytes, title=title, created_at=created, updated_at=e.created_at,
        deleted=e.op == "delete", suspect_pending=pending,
    )


class _Walk:
    """Walks one session's versions on the source, yielding what the destination needs."""

    def __init__(self, src: Backend, dst: Backend, sid: str) -> None:
        self.src, self.dst, self.sid = src, dst, sid
        # Objects of this session handled by an earlier version of this run: the
        # destination has them (committed with that version), reachable, so never swept.
        self.seen: set[Oid] = set()
        self.meta_of: dict[Oid, Oid] = {}  # manifest -> its metadata object
        self.titles: dict[Oid, str] = {}  # metadata object -> title

    def title(self, manifest: Oid) -> str:
        return self.titles.get(self.meta_of.get(manifest, Oid(b"")), "")

    def forget(self, writes: Iterable[ObjectWrite]) -> None:
        for w in writes:
            self.seen.discard(w.oid)

    def version(self, e: LogEntry) -> list[ObjectWrite]:
        """Return the writes version e needs: new frames, and refreshes of what dst has."""
        writes: list[ObjectWrite] = []
        frontier = [e.manifest]
        while frontier:
            todo = list(dict.fromkeys(o for o in frontier if o not in self.seen))
            frontier = []
            for i in range(0, len(todo), _READ_BATCH):
                part = todo[i : i + _READ_BATCH]
                frontier += self._batch(e, part, writes)
        return writes

    def _batch(self, e: LogEntry, part: list[Oid], writes: list[ObjectWrite]) -> list[Oid]:
        frames = self.src.get_frames(part)
        lost = [o for o in part if o not in frames]
        if lost:
            raise ObjectNotFound(
                f"object {lost[0].hex()} of session {self.sid!r} version {e.seq} is missing"
                " from the source store (run fsck there)", object_id=lost[0].hex())
        there = self.dst.sizes(part)
        children: list[Oid] = []
        for oid in part:
            kind, frame = frames[oid]
            payload = decompress(oid, frame, verify=False)
            if object_id(kind, payload) != oid:
                raise CorruptObject(
                    f"object {oid.hex()} of session {self.sid!r} version {e.seq} is corrupt"
                    " in the source store (run fsck there)", object_id=oid.hex())
            self.seen.add(oid)
            if oid in there:
                # Already on the destination (another session shares it, or an earlier
                # run copied it): refresh its write time so a GC there spares it.
                writes.append(ObjectWrite(oid, kind, there[oid], None))
            else:
                writes.append(ObjectWrite(oid, kind, len(payload), frame))
            children += self._children(oid, kind, payload)
        return children

    def _children(self, oid: Oid, kind: Kind, payload: bytes) -> list[Oid]:
        if kind == Kind.MANIFEST:
            raw = M.decode(payload)
            self.meta_of[oid] = raw.meta
            bases, leaves, roots = M.references(raw)
            return [*bases, *leaves, *roots]
        if kind == Kind.PAGE:
            return decode_page(payload)[1]
        if kind == Kind.META:
            try:
                meta = json.loads(payload)
            except ValueError:
                meta = {}
            self.titles[oid] = title_of(meta) if isinstance(meta, dict) else ""
        return []


# --- verifying --------------------------------------------------------------------------------


def _verify_session(src: Backend, dst: Backend, sid: str, seq: int,
                    problems: list[str]) -> tuple[int, int, bool]:
    """Check dst holds the source's session as copied (up to seq); re-hash what it reaches.

    Returns (versions checked, objects checked, whether the source moved on since).
    """
    read = _read_session(src, sid)
    head, mine = read if read is not None else (None, [])
    moved = head is None or head.seq != seq
    # A source that moved on (or pruned) during the run is checked up to what was copied;
    # the next run copies the rest.
    mine = [e for e in mine if e.seq <= seq]
    theirs = {e.seq: e for e in dst.versions(sid, ascending=True)}
    for e in mine:
        got = theirs.get(e.seq)
        if got is None:
            problems.append(f"session {sid!r}: version {e.seq} is missing on the destination")
        elif not _same_entry(got, e):
            problems.append(f"session {sid!r}: version {e.seq} differs on the destination")
    have = dst.head(sid)
    if have is None:
        problems.append(f"session {sid!r} is missing on the destination")
    elif not moved and have != head:
        problems.append(f"session {sid!r}: the head row differs on the destination")
    elif moved and have.seq != seq:
        problems.append(f"session {sid!r}: the destination head is at version {have.seq},"
                        f" not {seq}")
    seen: set[Oid] = set()
    for e in mine:
        if e.seq not in theirs:
            continue
        for oid, why in _rehash_tree(dst, e.manifest, seen):
            problems.append(f"session {sid!r} version {e.seq}: object {oid.hex()} {why}"
                            " on the destination")
    return sum(1 for e in mine if e.seq in theirs), len(seen), moved


def _rehash_tree(dst: Backend, root: Oid, seen: set[Oid]) -> Iterator[tuple[Oid, str]]:
    """Read every object under root from dst (skipping seen), re-hash; yield the bad ones."""
    frontier = [root]
    while frontier:
        todo = list(dict.fromkeys(o for o in frontier if o not in seen))
        frontier = []
        for i in range(0, len(todo), _READ_BATCH):
            part = todo[i : i + _READ_BATCH]
            seen.update(part)
            frames = dst.get_frames(part)
            for oid in part:
                if oid not in frames:
                    yield oid, "is missing"
                    continue
                kind, frame = frames[oid]
                try:
                    payload = decompress(oid, frame, verify=False)
                except CorruptObject:
                    yield oid, "does not decompress"
                    continue
                if object_id(kind, payload) != oid:
                    yield oid, "does not hash to its id"
                    continue
                if kind == Kind.MANIFEST:
                    bases, leaves, roots = M.references(M.decode(payload))
                    frontier += [*bases, *leaves, *roots]
                elif kind == Kind.PAGE:
                    frontier += decode_page(payload)[1]
