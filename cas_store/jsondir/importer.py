"""Importing a directory of session files: each session whole or not at all; idempotent."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, NotFound, SessionNotFound
from ..inputs import (
    SESSION_ID_MAX,
    SESSION_ID_RE,
    Limits,
    encode_list,
    validate_session_id,
)
from ..model import JSON, Op, Version
from ..objects import Kind, canonical_json
from ..store import Store
from . import reader
from .reader import (
    TOMBSTONE_FILE,
    TOMBSTONE_VERSION,
    DocumentError,
    _Doc,
    read_document,
    session_id_of,
)

#: Fields whose present, non-empty and changed value marks a shrinking save as deliberate.
SHRINK_MARKERS = ("intentional_shrink_generation", "clear_generation", "truncation_watermark")
#: Sessions per import transaction, and the input bytes after which a batch is closed early.
BATCH_SESSIONS = 64
BATCH_BYTES = 32 * 1024 * 1024

# --- reports ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file the import left out, and why (one line for the user)."""

    path: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"path": self.path, "reason": self.reason}


@dataclass(slots=True)
class ImportReport:
    """What an import did (or, with dry_run, would do)."""

    dry_run: bool = False
    files: int = 0  # session files read (.json and .json.bak)
    sessions_created: int = 0
    sessions_updated: int = 0
    sessions_unchanged: int = 0
    sessions_deleted: int = 0  # orphaned .bak files and tombstoned sessions, as deleted
    versions: int = 0  # new versions written
    messages: int = 0  # messages in the versions written
    bytes_in: int = 0  # size of the files read
    logical_bytes: int = 0  # canonical bytes of the messages and lists of versions written
    new_payload_bytes: int = 0  # bytes of new chunks (messages, list items) written
    bytes_stored: int = 0  # growth of the store's stored (compressed) bytes
    seconds: float = 0.0
    #: Sessions whose import ends in a suspect shrink (a wiped file with its backup),
    #: with the time of that version; a plain ``recover`` brings them back.
    suspect: dict[str, float] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # _index.json, temporaries, other files

    @property
    def sessions(self) -> int:
        """Sessions this run created or changed (deleted ones included)."""
        return self.sessions_created + self.sessions_updated + self.sessions_deleted

    @property
    def dedup_ratio(self) -> float | None:
        """Bytes of messages and list items written per byte of new chunks (1.0: no sharing)."""
        if self.dry_run or not self.new_payload_bytes:
            return None
        return self.logical_bytes / self.new_payload_bytes

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        ratio = self.dedup_ratio
        return {
            "dry_run": self.dry_run,
            "files": self.files,
            "sessions": self.sessions,
            "sessions_created": self.sessions_created,
            "sessions_updated": self.sessions_updated,
            "sessions_unchanged": self.sessions_unchanged,
            "sessions_deleted": self.sessions_deleted,
            "versions": self.versions,
            "messages": self.messages,
            "bytes_in": self.bytes_in,
            "logical_bytes": self.logical_bytes,
            "new_payload_bytes": self.new_payload_bytes,
            "bytes_stored": self.bytes_stored,
            "dedup_ratio": None if ratio is None else round(ratio, 3),
            "seconds": round(self.seconds, 3),
            "suspect": sorted(self.suspect),
            "skipped": [s.to_json() for s in self.skipped],
            "ignored": self.ignored,
        }


# --- import ----------------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def marks_intentional_shrink(new: dict[str, JSON], old: dict[str, JSON] | None) -> bool:
    """Return True if new's metadata declares its shrink deliberate.

    A marker (``SHRINK_MARKERS``) counts when it is present, non-empty (not null, "",
    false, [] or {}) and differs from its value in the state being replaced: a file
    saved back with a stale marker (the metadata-only save of the incident) stays suspect.
    """
    for key in SHRINK_MARKERS:
        value = new.get(key)
        if not _empty(value) and (old is None or old.get(key) != value):
            return True
    return False


@dataclass(slots=True)
class _Head:
    seq: int
    manifest: str  # state id of the head (see Store.state_id)
    deleted: bool
    imported: str | None  # state id of the newest version an import wrote, if any


def _head(store: Store, sid: str) -> _Head | None:
    try:
        page = store.versions(sid, limit=20)
    except SessionNotFound:
        return None
    head = page[0]
    imported = None
    while page:
        found = next((v for v in page if v.op == Op.IMPORT.value), None)
        if found is not None:
            imported = store.version_state_id(sid, seq=found.seq)
            break
        page = store.versions(sid, limit=200, before=page[-1].seq)
    # States, not manifest ids, are compared: a head may be stored as a delta manifest.
    return _Head(head.seq, store.version_state_id(sid, seq=head.seq),
                 head.op == Op.DELETE.value, imported)


def _loses(live: _Doc, bak: _Doc) -> bool:
    """Return True if live lacks an item of bak's messages or named lists (dry run's test).

    The store's own rule (``recovery.lost_content``) on the parsed items; a list read
    incrementally from a big file is compared by length.
    """
    pairs = [(live.messages, bak.messages),
             *((live.lists.get(n, []), items) for n, items in bak.lists.items())]
    for now, before in pairs:
        if isinstance(now, list) and isinstance(before, list):
            kept = {canonical_json(x) for x in now}
            if any(canonical_json(x) not in kept for x in before):
                return True
        elif len(list(now)) < len(list(before)):
            return True
    return False


def _state(store: Store, doc: _Doc) -> str:
    if doc.state is None:
        doc.state = store.state_id(doc.messages, doc.metadata, lists=doc.lists,
                                   key_order=doc.key_order)
    return doc.state


class _Importer:
    def __init__(self, store: Store, report: ImportReport,
                 on_skip: Callable[[SkippedFile], None] | None) -> None:
        self.store = store
        self.report = report
        self.on_skip = on_skip
        self.prefetch: _Prefetch | None = None
        self.tombstoned: frozenset[str] = frozenset()  # sessions the directory lists as deleted

    def skip(self, path: Path, reason: str) -> None:
        s = SkippedFile(str(path), reason)
        self.report.skipped.append(s)
        if self.on_skip is not None:
            self.on_skip(s)

    def read(self, path: Path | None) -> _Doc | None:
        if path is None:
            return None
        try:
            got = self.prefetch.take(path) if self.prefetch is not None else None
            if isinstance(got, BaseException):
                raise got
            return got if got is not None else read_document(path)
        except DocumentError as exc:
            self.skip(path, str(exc))
        except OSError as exc:
            self.skip(path, f"cannot read: {exc.strerror or exc}")
        return None

    def validate(self, doc: _Doc | None) -> _Doc | None:
        """Return doc if the store accepts it (computing its state id), else skip it."""
        if doc is None:
            return None
        try:
            _state(self.store, doc)
        except (InvalidInput, DocumentError) as exc:
            self.skip(doc.path, str(exc))
            return None
        return doc

    def session(self, sid: str, live_path: Path | None, bak_path: Path | None,
                tombstoned: bool = False) -> None:
        """Import one session (live file and/or backup) entirely, or skip it entirely.

        A tombstoned session (listed in the directory's deleted-sessions file) ends deleted.
        """
        live = self.read(live_path)
        bak = self.read(bak_path)
        if live is not None and bak is not None:
            # Both are checked before the first write, so nothing is half-imported.
            live, bak = self.validate(live), self.validate(bak)
        if live_path is not None and live is None:
            if bak is not None:
                self.skip(bak.path, f"not imported: its live file {live_path.name} was skipped")
            return
        doc = live if live is not None else bak
        if doc is None:
            return
        try:
            self._apply(sid, live, bak, tombstoned)
        except (InvalidInput, DocumentError) as exc:
            # Raised while validating (or re-reading a streamed file) inside create or
            # save, before anything of this session was committed.
            self.skip(doc.path, str(exc))
            return
        for d in (live, bak):
            if d is not None:
                self.report.files += 1
                self.report.bytes_in += d.size

    def _apply(self, sid: str, live: _Doc | None, bak: _Doc | None,
               tombstoned: bool = False) -> None:
        store, report, dry = self.store, self.report, self.report.dry_run
        head = _head(store, sid)
        target = live if live is not None else bak
        assert target is not None
        orphan = live is None or tombstoned  # the session ends deleted
        steps: list[_Doc] = [d for d in (bak, live) if d is not None]
        if head is not None:
            # Unchanged: the file is what the last import wrote (even if the session has
            # moved on in the store since), or what the session is now.
            if _state(store, target) == head.imported or (
                    head.manifest == _state(store, target) and head.deleted == orphan):
                report.sessions_unchanged += 1
                return
            # A backup equal to the head or to the last import was imported already.
            known = {head.manifest, head.imported}
            steps = [d for d in steps if d is target or _state(store, d) not in known]
        created = head is None or head.deleted
        if dry:
            # Validate as the writes would, and count only the states that differ.
            states = [head.manifest if head else None] + [_state(store, d) for d in steps]
            steps = [d for d, prev, cur in zip(steps, states, states[1:], strict=False)
                     if cur != prev or (head is not None and head.deleted)]
            report.versions += len(steps) + (1 if orphan else 0)
            report.messages += sum(d.message_count for d in steps)
            if len(steps) == 2 and live is not None and bak is not None and (
                    _loses(live, bak)
                    and not marks_intentional_shrink(live.metadata, bak.metadata)):
                report.suspect[sid] = live.version_time
        else:
            self._write(sid, head, steps, orphan, live)
        if orphan:
            report.sessions_deleted += 1
        elif created:
            report.sessions_created += 1
        else:
            report.sessions_updated += 1

    def _write(self, sid: str, head: _Head | None, steps: list[_Doc], orphan: bool,
               live: _Doc | None) -> None:
        store = self.store
        fresh = head is None or head.deleted
        seq = 0 if head is None else head.seq
        previous: dict[str, JSON] | None = None
        if not fresh and live is not None and any(
                not _empty(live.metadata.get(k)) for k in SHRINK_MARKERS):
            previous = store.load_meta(sid).metadata
        for doc in steps:
            if fresh:
                v = store.create(sid, doc.metadata, doc.messages, lists=doc.lists,
                                 at=doc.version_time, op=Op.IMPORT,
                                 created_at=(live or doc).created_time,
                                 key_order=doc.key_order)
                fresh = False
            else:
                # Lists the file no longer has as named lists are emptied (so dropped).
                lists: dict[str, Any] = {k: [] for k in store.load_meta(sid).list_counts}
                lists.update(doc.lists)
                v = store.save(sid, doc.messages, doc.metadata, lists=lists,
                               at=doc.version_time, op=Op.IMPORT, key_order=doc.key_order,
                               intentional_shrink=marks_intentional_shrink(doc.metadata,
                                                                           previous))
            if v.seq > seq:  # save() of the head's exact state writes no version
                seq = v.seq
                self._count(v, doc)
                if v.suspect_shrink:
                    self.report.suspect[sid] = v.created_at
                else:
                    self.report.suspect.pop(sid, None)
            previous = doc.metadata
        if orphan:
            last = steps[-1] if steps else None
            when = max(last.version_time, last.mtime) if last else None
            self._count(store.delete(sid, at=when), None)

    def forget(self, sid: str) -> None:
        """Delete a session the directory's tombstone lists and has no file of (if live)."""
        try:
            head = self.store.backend.head(validate_session_id(sid))
        except InvalidInput:
            return
        if head is None or head.deleted:
            return  # never resurrected, nothing to do
        self.report.sessions_deleted += 1
        self.report.versions += 1
        if not self.report.dry_run:
            self.store.delete(sid)

    def _count(self, v: Version, doc: _Doc | None) -> None:
        self.report.versions += 1
        if doc is not None:
            self.report.messages += v.message_count
            self.report.logical_bytes += v.bytes + doc.list_bytes


@dataclass(slots=True)
class DirEntry:
    """One session's files in an import directory."""

    sid: str
    live: Path | None = None
    bak: Path | None = None
    size: int = 0  # bytes of both files


def scan_dir(directory: Path) -> tuple[list[DirEntry], list[tuple[Path, str]], list[str]]:
    """Return (sessions by id, [(path, reason)] of unsafe names, [ignored names]).

    A chat UI's own files (its index, orphan and tombstone records) and atomic-write
    temporaries (``<name>.tmp.<pid>.<tid>``) are ignored, never reported as broken.
    """
    sessions: dict[str, DirEntry] = {}
    unsafe: list[tuple[Path, str]] = []
    ignored: list[str] = []
    for entry in os.scandir(directory):
        parsed = session_id_of(entry.name)
        if parsed is None or not entry.is_file():
            ignored.append(entry.name)
            continue
        sid, is_bak = parsed
        if not SESSION_ID_RE.fullmatch(sid):
            unsafe.append((Path(entry.path), f"unsafe session id {sid!r}: use 1-"
                           f"{SESSION_ID_MAX} of A-Z a-z 0-9 . _ -, not starting with ."))
            continue
        e = sessions.setdefault(sid, DirEntry(sid))
        if is_bak:
            e.bak = Path(entry.path)
        else:
            e.live = Path(entry.path)
        e.size += entry.stat().st_size
    return ([sessions[k] for k in sorted(sessions)], sorted(unsafe),
            sorted(ignored))


def read_tombstone(directory: Path) -> tuple[frozenset[str], str | None]:
    """Return the session ids the directory's deleted-sessions file lists, and any problem.

    The file is ``{"version": 1, "ids": [...]}``; a missing file lists nothing. A file of
    another shape lists nothing too, and the second value says why (for the report).
    """
    path = directory / TOMBSTONE_FILE
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return frozenset(), None
    except (OSError, ValueError) as exc:
        return frozenset(), f"unreadable deleted-sessions file: {exc}"
    if (not isinstance(raw, dict) or raw.get("version") != TOMBSTONE_VERSION
            or not isinstance(raw.get("ids"), list)):
        return frozenset(), 'not a deleted-sessions file {"version": 1, "ids": [...]}'
    return frozenset(i.strip() for i in raw["ids"] if isinstance(i, str) and i.strip()), None


def _batches(entries: list[DirEntry]) -> Iterator[list[DirEntry]]:
    # Few sessions per transaction keep the write lock short for other writers; a big
    # file closes the batch before it and gets one of its own.
    batch: list[DirEntry] = []
    size = 0
    for e in entries:
        if batch and (len(batch) >= BATCH_SESSIONS or size + e.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(e)
        size += e.size
    if batch:
        yield batch


def import_json_dir(store: Store, directory: str | os.PathLike[str], *, dry_run: bool = False,
                    on_skip: Callable[[SkippedFile], None] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Import every <sid>.json (and <sid>.json.bak) of a directory; idempotent.

    Each session is committed whole or not at all; unchanged files add no version;
    files that cannot be imported are skipped (reported through on_skip and in the
    report) without stopping the import. With dry_run nothing is written.
    progress(done, total) is called after each session.
    """
    started = time.perf_counter()
    directory = Path(directory)
    if not directory.is_dir():
        raise NotFound(f"{directory} is not a directory")
    report = ImportReport(dry_run=dry_run)
    imp = _Importer(store, report, on_skip)
    entries, unsafe, report.ignored = scan_dir(directory)
    for path, reason in unsafe:
        imp.skip(path, reason)
    imp.tombstoned, problem = read_tombstone(directory)
    if problem is not None:
        imp.skip(directory / TOMBSTONE_FILE, problem)
    before = None if dry_run else store.backend.object_totals()
    workers = os.cpu_count() or 1
    if not dry_run and workers > 1 and len(entries) >= PREFETCH_MIN_SESSIONS:
        # Reading, parsing, encoding and compressing run in worker processes ahead of
        # this one, which only commits: measured ~2x on 2 cores (docs/design.md).
        paths = [p for e in entries for p in (e.live, e.bak)
                 if p is not None and e.size < reader.STREAM_MIN_BYTES]
        imp.prefetch = _Prefetch(paths, workers, store.limits)
    try:
        _import_batches(store, imp, entries, dry_run, progress)
    finally:
        if imp.prefetch is not None:
            imp.prefetch.close()
    present = {e.sid for e in entries}
    for sid in sorted(imp.tombstoned - present):
        imp.forget(sid)
    if before is not None:
        after = store.backend.object_totals()
        zero = (0, 0, 0)
        chunk = Kind.CHUNK
        report.new_payload_bytes = after.get(chunk, zero)[1] - before.get(chunk, zero)[1]
        report.bytes_stored = sum(after.get(k, zero)[2] - before.get(k, zero)[2] for k in Kind)
    report.seconds = time.perf_counter() - started
    return report


def _import_batches(store: Store, imp: _Importer, entries: list[DirEntry], dry_run: bool,
                    progress: Callable[[int, int], None] | None) -> None:
    done = 0
    for batch in _batches(entries):
        # One transaction per batch: one durable commit for many sessions (the measured
        # reason is in docs/design.md); each session's versions land together or not at all.
        # A big file alone is not batched: the engine encodes it before taking the write
        # lock, and a batch would hold the lock (and other writers) for all that time.
        alone = len(batch) == 1 and batch[0].size >= BATCH_BYTES
        with contextlib.nullcontext() if dry_run or alone else store.batch():
            for e in batch:
                imp.session(e.sid, e.live, e.bak, e.sid in imp.tombstoned)
                done += 1
                if progress is not None:
                    progress(done, len(entries))


#: Sessions from which worker processes prepare files ahead of the committing process.
PREFETCH_MIN_SESSIONS = 64
_PREFETCH_AHEAD = 256  # files in flight: bounds memory to a few hundred parsed files


def _prepare(path: Path, limits: Limits) -> _Doc | BaseException:
    """Read, parse, encode and compress one file (in a worker process)."""
    try:
        doc = read_document(path, stream=False)
    except (DocumentError, OSError) as exc:
        return exc
    try:
        doc.messages = encode_list(doc.messages, limits=limits)
        doc.lists = {name: encode_list(items, field=name, objects=False, limits=limits)
                     for name, items in doc.lists.items()}
    except InvalidInput:
        pass  # left as parsed: the committing process reports it exactly as without workers
    return doc


class _Prefetch:
    """Prepares files in worker processes, in the order the importer will ask for them."""

    def __init__(self, paths: list[Path], workers: int, limits: Limits) -> None:
        # fork, not spawn: spawn re-imports the caller's main module, which breaks any
        # script without a __main__ guard. The workers run only pure encoding code and
        # never touch the parent's database connections.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx)
        self.broken = False
        self.paths = paths
        self.limits = limits
        self.next = 0
        self.pending: dict[Path, Future[_Doc | BaseException]] = {}
        self._fill()

    def _fill(self) -> None:
        while self.next < len(self.paths) and len(self.pending) < _PREFETCH_AHEAD:
            path = self.paths[self.next]
            self.next += 1
            self.pending[path] = self.pool.submit(_prepare, path, self.limits)

    def take(self, path: Path) -> _Doc | BaseException | None:
        """Return the prepared file (or the error reading it), None if not prefetched."""
        fut = self.pending.pop(path, None)
        if fut is None or self.broken:
            return None
        try:
            return fut.result()
        except BrokenProcessPool:
            self.broken = True  # a worker died: read the rest in this process
            return None
        finally:
            if not self.broken:
                self._fill()

    def close(self) -> None:
        """Stop the workers, dropping what was not used."""
        self.pool.shutdown(wait=True, cancel_futures=True)


