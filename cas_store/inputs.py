"""What a store accepts: session ids, list names, its limits, and lists encoded ahead.

The rules every way in (the engine, the HTTP API, an import) checks input against, and
``encode_list``, which does the CPU-heavy half of a save (canonical JSON, hashing,
compression) where it is called, so that worker processes can do it for one committer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument, InvalidSessionId
from .metadata import DEFAULT_SUMMARY_KEYS
from .model import JSON
from .objects import Kind, Oid, compress, encode_item, object_id

#: Longest session id: what a chat UI naming files ``<sid>.json`` accepts (255-byte names).
SESSION_ID_MAX = 255
# Letters, digits, "_" and "-" anywhere (chat UIs issue ids such as "-a1" or "_tmp"), "."
# after the first character only: no id can be "." or "..", or hide as a dot file.
SESSION_ID_RE = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{SESSION_ID_MAX - 1}}}")
#: A named list's name (besides ``messages``).
LIST_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MESSAGES = "messages"
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits and policy knobs of a store."""

    max_message_bytes: int = 16 * 1024 * 1024
    max_metadata_bytes: int = 4 * 1024 * 1024
    recovery_window: float = 7 * DAY
    verify_reads: bool = False  # zstd frame checksums still catch corruption on read
    #: Bytes of decoded messages a store keeps for repeat full loads (caches.ByteCache;
    #: 0: none). A session of more than half of it is not kept (it would push out all).
    load_cache_bytes: int = 32 * 1024 * 1024
    max_attempts: int = 200
    #: Metadata keys whose scalar values every head keeps for session lists and filters.
    summary_keys: tuple[str, ...] = DEFAULT_SUMMARY_KEYS


def validate_session_id(sid: Any) -> str:
    """Return sid if it is a valid session id, else raise InvalidSessionId."""
    if not isinstance(sid, str) or not SESSION_ID_RE.fullmatch(sid):
        raise InvalidSessionId(
            f"invalid session id {sid!r}: use 1-{SESSION_ID_MAX} of A-Z a-z 0-9 . _ -, not"
            " starting with ."
        )
    return sid


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
    ids, payloads = encode_items(values, field, objects, (limits or Limits()).max_message_bytes)
    return Encoded(tuple(ids), tuple(payloads), tuple(compress(p) for p in payloads), objects)


def encode_items(values: Iterable[JSON], field: str, objects: bool,
                 limit: int) -> tuple[list[Oid], list[bytes]]:
    """Return the chunk ids and canonical payloads of list items, or raise naming the index."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise InvalidArgument(f"{field} must be a list", field=field)
    payloads = [encode_item(v, i, field=field, require_object=objects, limit=limit)
                for i, v in enumerate(values)]
    return [object_id(Kind.CHUNK, p) for p in payloads], payloads
