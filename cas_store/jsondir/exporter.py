"""Exporting sessions as the JSON files they were imported from."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..inputs import MESSAGES
from ..model import JSON, SessionMeta
from ..store import Store
from .reader import (
    BAK_SUFFIX,
    LIVE_SUFFIX,
)


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


# --- export ---------------------------------------------------------------------------------------

_PAGE = 1000


def document_layout(meta: SessionMeta) -> list[tuple[str, bool]]:
    """Return the exported document's top-level fields in order, as (name, is a list).

    The order recorded at import or save (``SessionMeta.key_order``) when there is one:
    a name that is neither metadata nor a stored list there is a named list emptied
    since, written as ``[]``. Otherwise metadata fields, named lists by name, then
    ``messages``. A named list wins over a metadata field of the same name.
    """
    lists = {*meta.list_counts, MESSAGES}
    out: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for name in meta.key_order:
        if name not in seen:
            seen.add(name)
            out.append((name, name in lists or name not in meta.metadata))
    rest = [k for k in meta.metadata if k not in seen and k not in lists]
    first_list = next((i for i, (_, is_list) in enumerate(out) if is_list), len(out))
    out[first_list:first_list] = [(k, False) for k in rest]
    out += [(n, True) for n in sorted(lists - seen - {MESSAGES})]
    if MESSAGES not in seen:
        out.append((MESSAGES, True))
    return out


def export_session(store: Store, sid: str, *, seq: int | None = None) -> dict[str, JSON]:
    """Return the session (at seq, or the head) as the object it was imported from.

    Equal as JSON to the imported file, with its top-level keys in the file's order
    (``document_layout``). Also works for a deleted session's versions (give seq).
    """
    s = store.load(sid, seq=seq)
    lists = {**s.lists, MESSAGES: s.messages}
    return {name: lists.get(name, []) if is_list else s.metadata[name]
            for name, is_list in document_layout(s.meta)}


def write_session(store: Store, sid: str, out: IO[str], *, seq: int | None = None) -> int:
    """Write the session (at seq, or the head) as one JSON object; return its message count.

    Streams the lists a page at a time from one pinned version, so memory does not grow
    with the session's length. The text parses to ``export_session(store, sid, seq=seq)``,
    keys in the same order.
    """
    meta = store.load_meta(sid, seq=seq)
    pinned = meta.seq
    counts = {**meta.list_counts, MESSAGES: meta.message_count}
    out.write("{")
    sep = "\n"
    for name, is_list in document_layout(meta):
        key = json.dumps(name, ensure_ascii=False)
        if not is_list:
            out.write(f"{sep}{key}: {json.dumps(meta.metadata[name], ensure_ascii=False)}")
            sep = ",\n"
            continue
        out.write(f"{sep}{key}: [")
        count = counts.get(name, 0)
        for start in range(0, count, _PAGE):
            items = store.messages(sid, start, _PAGE, seq=pinned, list_name=name)
            for i, item in enumerate(items):
                out.write(("\n" if start + i == 0 else ",\n")
                          + json.dumps(item, ensure_ascii=False))
        out.write("\n]" if count else "]")
        sep = ",\n"
    out.write("\n}\n")
    return meta.message_count


def write_atomic(path: Path, write: Callable[[IO[str]], Any]) -> int:
    """Write a file via a temporary sibling, fsync and rename; return the bytes written.

    A crash leaves either the old file or the new one, never a part of it.
    """
    # A short prefix: a 250-byte session file name leaves no room for a suffix.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
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

