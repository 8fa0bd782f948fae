"""Reading session files: whole or incrementally, split into metadata, messages and lists."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ..inputs import LIST_NAME_RE, MESSAGES
from ..model import JSON
from ..objects import canonical_json

#: A list-valued field at least this big (canonical JSON bytes) is stored as a named list.
LIST_FIELD_MIN_BYTES = 4096
#: Files at least this big are parsed incrementally instead of with one json.loads.
STREAM_MIN_BYTES = 64 * 1024 * 1024
INDEX_FILE = "_index.json"
#: The chat UI's record of deleted sessions: ``{"version": 1, "ids": [...]}``.
TOMBSTONE_FILE = "_deleted_webui_sessions.json"
TOMBSTONE_VERSION = 1
#: Files of the chat UI's own that are not sessions (skipped without a word).
KNOWN_FILES = frozenset({INDEX_FILE, "_pruned_webui_orphans.json", TOMBSTONE_FILE})
LIVE_SUFFIX = ".json"
BAK_SUFFIX = ".json.bak"


class DocumentError(ValueError):
    """A file that cannot be imported: not JSON, not an object, no messages list, ..."""


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
    key_order: list[str] = field(default_factory=list)  # the file's top-level keys, in order

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

    Named lists: ``messages``' siblings holding a list of at least LIST_FIELD_MIN_BYTES
    of canonical JSON (and named as a list may be); every other field is metadata. A
    wipe that empties a big list so moves the field to the metadata, and the named list
    is emptied: a shrink that recovery undoes per list.

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
    list_bytes = sum(_list_field_size(v) - len(v) - 1 for v in lists.values() if v)
    return _Doc(path, st.st_size, st.st_mtime, metadata, messages, lists, len(messages),
                list_bytes, key_order=list(doc))


def _scan(path: Path, size: int, mtime: float) -> _Doc:
    """Parse a big file once, keeping the metadata and only the names of its big lists."""
    metadata: dict[str, JSON] = {}
    lists: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    count: int | None = None
    seen: dict[str, int] = {}  # array occurrences per key (a duplicate key: the last wins)
    order: dict[str, None] = {}  # keys at their first position, as json.loads keeps them
    try:
        with open(path, encoding="utf-8") as f:
            for key, r, is_array in _iter_top(f):
                order.setdefault(key)
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
    # Metadata in file order (the pops above moved re-set keys to the end).
    metadata = {k: metadata[k] for k in order if k in metadata}
    return _Doc(path, size, mtime, metadata, messages, lists, count, list_bytes, streamed=True,
                key_order=list(order))


def session_id_of(name: str) -> tuple[str, bool] | None:
    """Return (session id, is_backup) for a session file name, or None for other files."""
    if name in KNOWN_FILES or ".tmp." in name:
        return None  # the UI's own records, or an atomic write's temporary
    if name.endswith(BAK_SUFFIX):
        return name[: -len(BAK_SUFFIX)], True
    if name.endswith(LIVE_SUFFIX):
        return name[: -len(LIVE_SUFFIX)], False
    return None


