"""Import and export of JSON session directories: one ``<sid>.json`` file per session.

The layout is the one chat web UIs keep: ``<sid>.json`` holds an object with a
``messages`` list and any other top-level fields (title, model, timestamps, token
counts, lineage ids, ...); ``<sid>.json.bak`` is the copy written before a shrinking
save; ``_index.json`` is the sidebar's index (ignored: the store lists sessions itself).

Mapping (see docs/import.md and the "JSON directories" section of docs/design.md):

* ``messages`` becomes the session's message list;
* any other top-level field whose value is a list, whose name is a valid list name and
  whose canonical JSON is at least ``LIST_FIELD_MIN_BYTES`` becomes a **named list**
  (content-addressed, so a metadata update never rewrites it);
* every other field (small lists included) stays in the metadata, verbatim.

Export merges the three back, so a file round-trips as an equal JSON value. A
``.bak`` is imported as the version before its live file; an orphaned ``.bak`` as a
deleted session. Each session's versions are committed in one transaction (a batch),
so a session is imported entirely or not at all; a re-run adds nothing for unchanged
files. Files larger than ``STREAM_MIN_BYTES`` are parsed incrementally, one list item
at a time, so memory stays a small multiple of the file's size.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .errors import InvalidInput, NotFound, SessionNotFound
from .model import JSON, Op, Version
from .objects import Kind, canonical_json
from .store import LIST_NAME_RE, MESSAGES, SESSION_ID_RE, Limits, Store, encode_list

#: A list-valued field at least this big (canonical JSON bytes) is stored as a named list.
LIST_FIELD_MIN_BYTES = 4096
#: Fields whose present, non-empty and changed value marks a shrinking save as deliberate.
SHRINK_MARKERS = ("intentional_shrink_generation", "clear_generation", "truncation_watermark")
#: Files at least this big are parsed incrementally instead of with one json.loads.
STREAM_MIN_BYTES = 64 * 1024 * 1024
INDEX_FILE = "_index.json"
LIVE_SUFFIX = ".json"
BAK_SUFFIX = ".json.bak"
#: Sessions per import transaction, and the input bytes after which a batch is closed early.
BATCH_SESSIONS = 64
BATCH_BYTES = 32 * 1024 * 1024


class DocumentError(ValueError):
    """A file that cannot be imported: not JSON, not an object, no messages list, ..."""


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
    sessions_deleted: int = 0  # orphaned .bak files imported as deleted sessions
    versions: int = 0  # new versions written
    messages: int = 0  # messages in the versions written
    bytes_in: int = 0  # size of the files read
    logical_bytes: int = 0  # canonical bytes of the messages and lists of versions written
    new_payload_bytes: int = 0  # bytes of new chunks (messages, list items) written
    bytes_stored: int = 0  # growth of the store's stored (compressed) bytes
    seconds: float = 0.0
    #: Sessions whose import ends in a suspect shrink (a wiped file with its backup),
    #: with the time of that version: ``recover`` needs a window reaching back to it.
    suspect: dict[str, float] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # _index.json and non-session files

    @property
    def sessions(self) -> int:
        """Sessions this run created or changed (deleted ones included)."""
        return self.sessions_created + self.sessions_updated + self.sessions_deleted

    def recover_window_days(self, now: float | None = None) -> int:
        """Return the ``recover --window-days`` that reaches every suspect shrink imported."""
        if not self.suspect:
            return 0
        oldest = min(self.suspect.values())
        return max(1, math.ceil(((time.time() if now is None else now) - oldest) / 86400) + 1)

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
            "recover_window_days": self.recover_window_days(),
            "skipped": [s.to_json() for s in self.skipped],
            "ignored": self.ignored,
        }


@dataclass(slots=True)
class ExportReport:
    """What export_dir wrote."""

    sessions: int = 0
    deleted: int = 0  # written as <sid>.json.bak
    messages: int = 0
    bytes_out: int = 0
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"sessions": self.sessions, "deleted": self.deleted, "messages": self.messages,
                "bytes_out": self.bytes_out, "files": self.files}


# --- incremental parsing of big files -----------------------------------------------------------

_WS = " \t\n\r"


class _Reader:
    """Reads one JSON text incrementally: top-level structure by hand, values with the C scanner.

    Only a window of the file is held; ``value()`` returns one complete JSON value.
    """

    CHUNK = 1 << 20
    MAX_WINDOW = 256 * 1024 * 1024  # a single value larger than this is refused

    def __init__(self, f: IO[str]) -> None:
        self.f = f
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.offset = 0  # characters dropped before buf[0], for error positions
        self.decoder = json.JSONDecoder()

    def _fill(self, want: int = CHUNK) -> bool:
        if self.eof:
            return False
        if self.pos:
            self.offset += self.pos
            self.buf = self.buf[self.pos :]
            self.pos = 0
        data = self.f.read(max(want, self.CHUNK))
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _error(self, what: str) -> DocumentError:
        return DocumentError(f"not valid JSON: {what} at character {self.offset + self.pos}")

    def peek(self) -> str:
        """Return the next non-whitespace character ('' at the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def expect(self, chars: str) -> str:
        """Consume and return the next non-whitespace character, which must be one of chars."""
        c = self.peek()
        if not c or c not in chars:
            raise self._error(f"expected {' or '.join(repr(x) for x in chars)}")
        self.pos += 1
        return c

    def value(self) -> Any:
        """Consume and return the next JSON value."""
        if not self.peek():
            raise self._error("expected a value")
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # Either the value runs past the window or it is malformed: widen the
                # window (doubling, so re-scanning stays linear) until the end of the file.
                if self.eof or len(self.buf) - self.pos > self.MAX_WINDOW:
                    self.pos = max(self.pos, exc.pos)
                    raise self._error(exc.msg) from None
                self._fill(len(self.buf) - self.pos)
                continue
            if end == len(self.buf) and not self.eof and self._fill(len(self.buf) - self.pos):
                continue  # a number at the window's edge may go on: read more and decode again
            self.pos = end
            return value

    def finish(self) -> None:
        """Require that nothing but whitespace follows."""
        if self.peek():
            raise self._error("extra data after the object")


def _iter_top(f: IO[str]) -> Iterator[tuple[str, _Reader, bool]]:
    """Yield (key, reader, is_array) for each top-level field; the caller consumes the value.

    For an array the reader stands after '['; consume it with ``_iter_array``.
    """
    r = _Reader(f)
    first = r.peek()
    if first != "{":
        if first and first in '["-0123456789tfn':
            raise DocumentError("not a JSON object")
        raise r._error("expected a JSON object")
    r.expect("{")
    if r.peek() == "}":
        r.pos += 1
        r.finish()
        return
    while True:
        if r.peek() != '"':
            raise r._error("expected a field name")
        key = r.value()
        r.expect(":")
        if r.peek() == "[":
            r.pos += 1
            yield key, r, True
        else:
            yield key, r, False
        if r.expect(",}") == "}":
            break
    r.finish()


def _iter_array(r: _Reader) -> Iterator[Any]:
    """Yield the items of the array the reader stands in, leaving it after the ']'."""
    if r.peek() == "]":
        r.pos += 1
        return
    while True:
        yield r.value()
        if r.expect(",]") == "]":
            return


class _StreamedList:
    """One top-level list field of a big file, re-read from disk on each iteration."""

    def __init__(self, path: Path, name: str, occurrence: int = 0) -> None:
        self.path = path
        self.name = name
        self.occurrence = occurrence  # which of duplicate fields: the last one wins, as in json

    def __iter__(self) -> Iterator[Any]:
        seen = 0
        with open(self.path, encoding="utf-8") as f:
            for key, r, is_array in _iter_top(f):
                if key == self.name and is_array:
                    seen += 1
                    if seen > self.occurrence:
                        yield from _iter_array(r)
                        return
                if is_array:
                    for _ in _iter_array(r):
                        pass
                else:
                    r.value()
        # Not reached for a file that _scan accepted (the field is there).
        raise DocumentError(f"{self.path.name} changed while it was being imported")


# --- documents ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Doc:
    """One parsed session file, split into metadata, messages and named lists."""

    path: Path
    size: int
    mtime: float
    metadata: dict[str, JSON]
    messages: Any  # a list, or a _StreamedList
    lists: dict[str, Any]  # name -> list or _StreamedList
    message_count: int
    list_bytes: int  # canonical bytes of the named lists' items
    streamed: bool = False
    state: str | None = None  # manifest id, computed on demand

    @property
    def version_time(self) -> float:
        """When this state was saved: updated_at, else created_at, else the file's mtime."""
        for key in ("updated_at", "created_at"):
            t = epoch_seconds(self.metadata.get(key))
            if t is not None:
                return t
        return self.mtime

    @property
    def created_time(self) -> float:
        """When the session began: created_at, else this state's time."""
        t = epoch_seconds(self.metadata.get("created_at"))
        return self.version_time if t is None else t


def epoch_seconds(value: Any) -> float | None:
    """Return a file timestamp as epoch seconds: seconds, milliseconds or ISO 8601; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        t = float(value)
        if not math.isfinite(t) or t <= 0:
            return None
        return t / 1000.0 if t > 1e11 else t  # after 5138 AD in seconds: it is milliseconds
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    return None


def _list_field_size(value: list[Any]) -> int:
    """Return the canonical JSON size of a list (raises for values that are not JSON)."""
    return len(canonical_json(value))


def split_document(doc: dict[str, Any]) -> tuple[dict[str, JSON], Any, dict[str, list[JSON]]]:
    """Return (metadata, messages, named lists) of a session document, by the import rule.

    Raises DocumentError when ``messages`` is missing or not a list.
    """
    if MESSAGES not in doc:
        raise DocumentError("no 'messages' field")
    messages = doc[MESSAGES]
    if not isinstance(messages, list):
        raise DocumentError(f"'messages' is a {type(messages).__name__}, not a list")
    metadata: dict[str, JSON] = {}
    lists: dict[str, list[JSON]] = {}
    for key, value in doc.items():
        if key == MESSAGES:
            continue
        if (isinstance(value, list) and LIST_NAME_RE.fullmatch(key)
                and _json_size(value) >= LIST_FIELD_MIN_BYTES):
            lists[key] = value
        else:
            metadata[key] = value
    return metadata, messages, lists


def _json_size(value: list[Any]) -> int:
    try:
        return _list_field_size(value)
    except (TypeError, ValueError, UnicodeError, RecursionError):
        raise DocumentError("a list field holds a value that is not plain JSON") from None


def read_document(path: Path, *, stream: bool | None = None) -> _Doc:
    """Parse one session file; stream=None streams files of at least STREAM_MIN_BYTES.

    Raises DocumentError (with a one-line reason) or OSError.
    """
    st = path.stat()
    if stream is None:
        stream = st.st_size >= STREAM_MIN_BYTES
    if stream:
        return _scan(path, st.st_size, st.st_mtime)
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DocumentError(f"not valid JSON: {exc.msg} at character {exc.pos}") from None
    except RecursionError:
        raise DocumentError("not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise DocumentError(f"not a JSON object (a {type(doc).__name__})")
    metadata, messages, lists = split_document(doc)
    list_bytes = sum(_list_field_size(v) - len(v) - 1 for v in lists.values())
    return _Doc(path, st.st_size, st.st_mtime, metadata, messages, lists, len(messages),
                list_bytes)


def _scan(path: Path, size: int, mtime: float) -> _Doc:
    """Parse a big file once, keeping the metadata and only the names of its big lists."""
    metadata: dict[str, JSON] = {}
    lists: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    count: int | None = None
    seen: dict[str, int] = {}  # array occurrences per key (a duplicate key: the last wins)
    try:
        with open(path, encoding="utf-8") as f:
            for key, r, is_array in _iter_top(f):
                metadata.pop(key, None)
                lists.pop(key, None)
                if not is_array:
                    metadata[key] = r.value()
                    if key == MESSAGES:
                        count = None
                    continue
                occurrence = seen.get(key, 0)
                seen[key] = occurrence + 1
                if key == MESSAGES:
                    count = sum(1 for _ in _iter_array(r))
                    continue
                # Same rule as split_document: the list's canonical size decides. Items
                # are kept only while the list may still end up in the metadata.
                named = LIST_NAME_RE.fullmatch(key) is not None
                kept: list[Any] | None = []
                total, item_bytes = 2, 0  # canonical size of '[' items, commas ']'
                for n, item in enumerate(_iter_array(r)):
                    size = _json_size([item]) - 2
                    total += size + (1 if n else 0)
                    item_bytes += size
                    if kept is not None:
                        kept.append(item)
                        if named and total >= LIST_FIELD_MIN_BYTES:
                            kept = None  # a named list: re-read from the file when stored
                if kept is not None:
                    metadata[key] = kept
                else:
                    lists[key] = _StreamedList(path, key, occurrence)
                    sizes[key] = item_bytes
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 text ({exc.reason})") from None
    except RecursionError:
        raise DocumentError("not valid JSON: nested too deeply") from None
    if count is None:
        if MESSAGES in metadata:
            kind = type(metadata[MESSAGES]).__name__
            raise DocumentError(f"'messages' is a {kind}, not a list")
        raise DocumentError("no 'messages' field")
    list_bytes = sum(sizes[k] for k in lists)
    messages = _StreamedList(path, MESSAGES, seen[MESSAGES] - 1)
    return _Doc(path, size, mtime, metadata, messages, lists, count, list_bytes, streamed=True)


def session_id_of(name: str) -> tuple[str, bool] | None:
    """Return (session id, is_backup) for a session file name, or None for other files."""
    if name == INDEX_FILE:
        return None
    if name.endswith(BAK_SUFFIX):
        return name[: -len(BAK_SUFFIX)], True
    if name.endswith(LIVE_SUFFIX):
        return name[: -len(LIVE_SUFFIX)], False
    return None


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


def _state(store: Store, doc: _Doc) -> str:
    if doc.state is None:
        doc.state = store.state_id(doc.messages, doc.metadata, lists=doc.lists)
    return doc.state


class _Importer:
    def __init__(self, store: Store, report: ImportReport,
                 on_skip: Callable[[SkippedFile], None] | None) -> None:
        self.store = store
        self.report = report
        self.on_skip = on_skip
        self.prefetch: _Prefetch | None = None

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

    def session(self, sid: str, live_path: Path | None, bak_path: Path | None) -> None:
        """Import one session (live file and/or backup) entirely, or skip it entirely."""
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
            self._apply(sid, live, bak)
        except (InvalidInput, DocumentError) as exc:
            # Raised while validating (or re-reading a streamed file) inside create or
            # save, before anything of this session was committed.
            self.skip(doc.path, str(exc))
            return
        for d in (live, bak):
            if d is not None:
                self.report.files += 1
                self.report.bytes_in += d.size

    def _apply(self, sid: str, live: _Doc | None, bak: _Doc | None) -> None:
        store, report, dry = self.store, self.report, self.report.dry_run
        head = _head(store, sid)
        target = live if live is not None else bak
        assert target is not None
        orphan = live is None
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
                    live.message_count < bak.message_count
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
                                 created_at=(live or doc).created_time)
                fresh = False
            else:
                # Lists the file no longer has as named lists are emptied (so dropped).
                lists: dict[str, Any] = {k: [] for k in store.load_meta(sid).list_counts}
                lists.update(doc.lists)
                v = store.save(sid, doc.messages, doc.metadata, lists=lists,
                               at=doc.version_time, op=Op.IMPORT,
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
            bak = steps[-1] if steps else None
            when = max(bak.version_time, bak.mtime) if bak else None
            self._count(store.delete(sid, at=when), None)

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
    """Return (sessions by id, [(path, reason)] of unsafe names, [ignored names])."""
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
            unsafe.append((Path(entry.path), f"unsafe session id {sid!r}: use 1-128 of"
                           " A-Z a-z 0-9 . _ -, starting with a letter or digit"))
            continue
        e = sessions.setdefault(sid, DirEntry(sid))
        if is_bak:
            e.bak = Path(entry.path)
        else:
            e.live = Path(entry.path)
        e.size += entry.stat().st_size
    return ([sessions[k] for k in sorted(sessions)], sorted(unsafe),
            sorted(ignored))


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
    before = None if dry_run else store.backend.object_totals()
    workers = os.cpu_count() or 1
    if not dry_run and workers > 1 and len(entries) >= PREFETCH_MIN_SESSIONS:
        # Reading, parsing, encoding and compressing run in worker processes ahead of
        # this one, which only commits: measured ~2x on 2 cores (docs/design.md).
        paths = [p for e in entries for p in (e.live, e.bak)
                 if p is not None and e.size < STREAM_MIN_BYTES]
        imp.prefetch = _Prefetch(paths, workers, store.limits)
    try:
        _import_batches(store, imp, entries, dry_run, progress)
    finally:
        if imp.prefetch is not None:
            imp.prefetch.close()
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
                imp.session(e.sid, e.live, e.bak)
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


# --- export ---------------------------------------------------------------------------------------

_PAGE = 1000


def export_session(store: Store, sid: str, *, seq: int | None = None) -> dict[str, JSON]:
    """Return the session (at seq, or the head) as the object it was imported from.

    Metadata fields, then every named list as a field, then ``messages``: equal as JSON
    to the imported file. Also works for a deleted session's versions (give seq).
    """
    s = store.load(sid, seq=seq)
    doc: dict[str, JSON] = dict(s.metadata)
    doc.update(s.lists)
    doc[MESSAGES] = s.messages
    return doc


def write_session(store: Store, sid: str, out: IO[str], *, seq: int | None = None) -> int:
    """Write the session (at seq, or the head) as one JSON object; return its message count.

    Streams the lists a page at a time from one pinned version, so memory does not grow
    with the session's length. The text parses to ``export_session(store, sid, seq=seq)``.
    """
    meta = store.load_meta(sid, seq=seq)
    pinned = meta.seq
    fields = {k: v for k, v in meta.metadata.items()
              if k != MESSAGES and k not in meta.list_counts}
    out.write("{")
    sep = "\n"
    for key, value in fields.items():
        out.write(f"{sep}{json.dumps(key, ensure_ascii=False)}: "
                  f"{json.dumps(value, ensure_ascii=False)}")
        sep = ",\n"
    names = [*sorted(meta.list_counts), MESSAGES]
    counts = {**meta.list_counts, MESSAGES: meta.message_count}
    for name in names:
        out.write(f"{sep}{json.dumps(name, ensure_ascii=False)}: [")
        for start in range(0, counts[name], _PAGE):
            items = store.messages(sid, start, _PAGE, seq=pinned, list_name=name)
            for i, item in enumerate(items):
                out.write(("\n" if start + i == 0 else ",\n")
                          + json.dumps(item, ensure_ascii=False))
        out.write("\n]" if counts[name] else "]")
        sep = ",\n"
    out.write("\n}\n")
    return meta.message_count


def write_atomic(path: Path, write: Callable[[IO[str]], Any]) -> int:
    """Write a file via a temporary sibling, fsync and rename; return the bytes written.

    A crash leaves either the old file or the new one, never a part of it.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return size


def fsync_dir(directory: Path) -> None:
    """Make renames in a directory durable (where the platform allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def export_dir(store: Store, directory: str | os.PathLike[str], *,
               include_deleted: bool = False,
               progress: Callable[[int, int | None], None] | None = None) -> ExportReport:
    """Write every session as <sid>.json (atomically) into directory; re-importable.

    With include_deleted, deleted sessions are written as <sid>.json.bak (their last
    state), which an import turns back into deleted sessions.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    sids: list[tuple[str, bool, int]] = []
    cursor = None
    while True:
        page = store.list_sessions(limit=1000, cursor=cursor, include_deleted=include_deleted)
        sids.extend((s.session_id, s.deleted, s.seq) for s in page.sessions)
        cursor = page.next_cursor
        if cursor is None:
            break
    for i, (sid, deleted, seq) in enumerate(sorted(sids)):
        name = sid + (BAK_SUFFIX if deleted else LIVE_SUFFIX)
        counted: list[int] = []

        def write(f: IO[str], sid: str = sid, seq: int = seq, deleted: bool = deleted,
                  counted: list[int] = counted) -> None:
            counted.append(write_session(store, sid, f, seq=seq if deleted else None))

        report.bytes_out += write_atomic(directory / name, write)
        report.sessions += 1
        report.deleted += deleted
        report.messages += counted[0]
        report.files.append(name)
        if progress is not None:
            progress(i + 1, len(sids))
    fsync_dir(directory)
    return report
