"""Immutable objects: canonical bytes, their BLAKE3 ids, and zstd frames at rest."""

from __future__ import annotations

import enum
import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NewType

import blake3
import orjson
import zstandard

from .errors import CorruptObject, InvalidMessage, InvalidMetadata

#: A raw 32-byte BLAKE3 digest; the engine's internal object id.
Oid = NewType("Oid", bytes)

OID_SIZE = 32
ZSTD_LEVEL = 3


class Kind(enum.IntEnum):
    """What an object holds; part of its id, so equal payloads of two kinds never collide."""

    CHUNK = 1  # one list item (a message), canonical JSON
    PAGE = 2  # height byte + concatenated child ids
    META = 3  # session metadata, canonical JSON object
    MANIFEST = 4  # canonical JSON naming the meta object and the list roots
    PACK = 5  # the messages of one leaf page, stored together (packs.py); id from the page

    @property
    def tag(self) -> bytes:
        """The bytes hashed in front of the payload."""
        return _TAGS[self]


_TAGS = {k: k.name.lower().encode() + b"\x00" for k in Kind}


def object_id(kind: Kind, payload: bytes) -> Oid:
    """Return the id of an object: BLAKE3-256 of its kind tag and payload."""
    h = blake3.blake3(_TAGS[kind])
    h.update(payload)
    return Oid(h.digest())


# --- canonical JSON -------------------------------------------------------------------------


def _reject(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


# One encoder for every call: json.dumps with options builds a new one each time, which
# costs about a fifth of encoding a typical chat message.
_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_reject,
)


def _stdlib_canonical(value: Any) -> bytes:
    text = _ENCODER.encode(value)
    # A lone surrogate survives json.dumps with ensure_ascii=False but not UTF-8 encoding.
    return text.encode("utf-8")


_PLAIN_LEAVES = (str, int, bool, type(None))


def _plain(value: Any) -> bool:
    # True when value holds only exact dicts (str keys), lists, tuples, str, int, bool and
    # None: the values on which orjson's bytes equal the standard library's. Floats are
    # left out (orjson writes 1e-05 as 0.00001 and NaN as null), and so is every subclass
    # or foreign type orjson would serialise natively (UUID, datetime, enums, dataclasses).
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                return False
            tv = type(v)
            if tv is dict or tv is list or tv is tuple:
                if not _plain(v):
                    return False
            elif tv not in _PLAIN_LEAVES:
                return False
        return True
    if t is list or t is tuple:
        for v in value:
            tv = type(v)
            if tv is dict or tv is list or tv is tuple:
                if not _plain(v):
                    return False
            elif tv not in _PLAIN_LEAVES:
                return False
        return True
    return t in _PLAIN_LEAVES


_ORJSON_OPTS = orjson.OPT_SORT_KEYS


# orjson reads an integer outside [-2**63, 2**64) as a float; every such integer has at
# least 19 digits. Mapping digits to "0" and the rest to " " finds a run in two C passes.
_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_RUN = b"0" * 19


def orjson_exact(data: bytes | memoryview) -> bool:
    """Return True if orjson parses this canonical JSON exactly as json.loads does."""
    return _RUN not in bytes(data).translate(_DIGITS)


def parse_json(data: bytes, exact: bool | None = None) -> Any:
    """Return the value of stored canonical JSON, exactly as json.loads reads it.

    By orjson (several times faster) where it reads the bytes alike (``exact``, when
    the caller knows it already: a pack records it); what it refuses (NaN, lone
    surrogates, bytes that are not JSON) is json's to decide. Raises ValueError as
    json.loads does.
    """
    if orjson_exact(data) if exact is None else exact:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def canonical_json(value: Any) -> bytes:
    """Return the canonical bytes of a JSON value: UTF-8, sorted keys, no whitespace.

    Raises TypeError or ValueError for anything that is not plain JSON (NaN and infinities,
    lone surrogates, non-string keys, custom objects), RecursionError for absurd nesting.
    The bytes are the standard library's ``json.dumps(sort_keys=True, separators=(",",
    ":"), ensure_ascii=False)`` exactly; orjson produces them (3x faster) for plain values.
    """
    return _encode(value)[0]


_ORJSON_BUFFER = 4096


def _encode(value: Any) -> tuple[bytes, bool]:
    # (canonical bytes, whether orjson wrote them: then every key is a str already).
    try:
        if _plain(value):
            # orjson refuses ints beyond 64 bits, lone surrogates and nesting past 255:
            # those fall through to the standard library, which decides as it always did.
            out = orjson.dumps(value, option=_ORJSON_OPTS)
            # orjson's bytes keep the whole buffer it wrote into (4 KiB at least) however
            # short the result: a store holding 100,000 small messages' bytes at once (a
            # big save, an import) held 390 MiB instead of 30. A copy is exactly its size.
            return (bytes(memoryview(out)) if len(out) < _ORJSON_BUFFER else out), True
    except (orjson.JSONEncodeError, RecursionError):
        pass
    return _stdlib_canonical(value), False


def _has_non_str_key(value: Any, depth: int = 0) -> bool:
    # json.dumps silently turns int/float/bool/None keys into strings, which would make
    # the stored value differ from the one given; walk only while there are dicts to see.
    # Only containers are recursed into: a call per string or number leaf would cost
    # as much as encoding the message.
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return True
            if isinstance(v, dict | list | tuple) and _has_non_str_key(v, depth + 1):
                return True
    elif isinstance(value, list | tuple):
        for v in value:
            if isinstance(v, dict | list | tuple) and _has_non_str_key(v, depth + 1):
                return True
    return False


def encode_item(value: Any, index: int, *, field: str, require_object: bool, limit: int) -> bytes:
    """Return the canonical bytes of one list item or raise InvalidMessage naming its index."""
    if require_object and not isinstance(value, Mapping):
        raise InvalidMessage(
            f"{field}[{index}] must be a JSON object, not {type(value).__name__}",
            index=index,
            field=field,
        )
    try:
        data, plain = _encode(value)
    except (TypeError, ValueError, UnicodeError) as exc:
        raise InvalidMessage(
            f"{field}[{index}] is not valid JSON: {exc}", index=index, field=field
        ) from None
    except RecursionError:
        raise InvalidMessage(
            f"{field}[{index}] is nested too deeply", index=index, field=field
        ) from None
    if len(data) > limit:
        raise InvalidMessage(
            f"{field}[{index}] is {len(data)} bytes, over the limit of {limit}",
            index=index,
            field=field,
        )
    if not plain and _has_non_str_key(value):
        raise InvalidMessage(f"{field}[{index}] has a non-string key", index=index, field=field)
    return data


def encode_metadata(value: Any, limit: int) -> bytes:
    """Return the canonical bytes of a metadata object or raise InvalidMetadata."""
    if not isinstance(value, Mapping):
        raise InvalidMetadata(f"metadata must be a JSON object, not {type(value).__name__}")
    try:
        data, plain = _encode(value)
    except (TypeError, ValueError, UnicodeError) as exc:
        raise InvalidMetadata(f"metadata is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidMetadata("metadata is nested too deeply") from None
    if len(data) > limit:
        raise InvalidMetadata(f"metadata is {len(data)} bytes, over the limit of {limit}")
    if not plain and _has_non_str_key(value):
        raise InvalidMetadata("metadata has a non-string key")
    return data


# --- pages ----------------------------------------------------------------------------------


#: In an internal page's height byte: each child id is preceded by how many list items
#: lie under it (content-defined pages vary in size, so positions need counts).
COUNTED = 0x80


class Page(list[Oid]):
    """A decoded page: its child ids, its height and (counted pages only) child counts."""

    __slots__ = ("counts", "height")

    def __init__(self, children: Sequence[Oid], height: int,
                 counts: Sequence[int] | None = None) -> None:
        super().__init__(children)
        self.height = height
        self.counts: list[int] | None = list(counts) if counts is not None else None


def write_uleb(n: int, out: bytearray) -> None:
    """Append n (>= 0) to out as an unsigned LEB128 (7 bits a byte, low bits first)."""
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def read_uleb(buf: bytes | memoryview, pos: int, what: str) -> tuple[int, int]:
    """Return (value, next position) of the unsigned LEB128 at pos.

    Raises ValueError("<what> is truncated") if buf ends inside it or it runs past 64 bits.
    """
    n = shift = 0
    end = len(buf)
    while True:
        if pos >= end or shift > 63:
            raise ValueError(f"{what} is truncated")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def encode_page(height: int, children: Sequence[bytes],
                counts: Sequence[int] | None = None) -> bytes:
    """Return a page payload: a height byte, then the children's raw ids.

    With counts (internal pages written since content-defined boundaries), the height
    byte carries COUNTED and each id is preceded by its count as an unsigned LEB128.
    """
    if counts is None:
        return bytes((height,)) + b"".join(children)
    out = bytearray((height | COUNTED,))
    for n, c in zip(counts, children, strict=True):
        write_uleb(n, out)
        out += c
    return bytes(out)


def decode_page_full(payload: bytes) -> Page:
    """Return the decoded page (either form); raise ValueError if it is malformed."""
    if not payload:
        raise ValueError("empty page")
    head = payload[0]
    if not head & COUNTED:
        body = memoryview(payload)[1:]
        if len(body) % OID_SIZE:
            raise ValueError("page length is not a whole number of ids")
        return Page([Oid(bytes(body[i : i + OID_SIZE])) for i in range(0, len(body), OID_SIZE)],
                    head)
    height = head & ~COUNTED
    if height == 0:
        raise ValueError("a leaf page carries no counts")
    ids: list[Oid] = []
    counts: list[int] = []
    pos, end = 1, len(payload)
    while pos < end:
        n, pos = read_uleb(payload, pos, "page count")
        if pos + OID_SIZE > end:
            raise ValueError("page id is truncated")
        ids.append(Oid(payload[pos : pos + OID_SIZE]))
        counts.append(n)
        pos += OID_SIZE
    return Page(ids, height, counts)


def decode_page(payload: bytes) -> tuple[int, list[Oid]]:
    """Return (height, children) of a page payload (either form)."""
    page = decode_page_full(payload)
    return page.height, page


# --- compression ------------------------------------------------------------------------------

_local = threading.local()


def _codecs() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    # zstd contexts are not thread-safe; one pair per thread is cheap and reused.
    pair = getattr(_local, "codecs", None)
    if pair is None:
        pair = (
            # The frame checksum (4 bytes, XXH64) lets every read catch a flipped byte at
            # almost no cost; the BLAKE3 re-hash is left to fsck and verify_reads.
            zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True),
            zstandard.ZstdDecompressor(),
        )
        _local.codecs = pair
    return pair


def compress(payload: bytes) -> bytes:
    """Return payload as one zstd frame that records its content size."""
    return _codecs()[0].compress(payload)


def decompress(oid: bytes, frame: bytes, *, verify: bool = True, kind: Kind | None = None) -> bytes:
    """Return the payload of a stored frame; with verify, check it hashes to oid."""
    try:
        payload = _codecs()[1].decompress(frame)
    except TypeError:
        # Not bytes at all: SQLite checks no column's type, and a damaged row can hold a
        # number or text where the frame was.
        raise CorruptObject(f"object {oid.hex()} is not stored as bytes (its row is"
                            " damaged)", object_id=oid.hex()) from None
    except zstandard.ZstdError as exc:
        raise CorruptObject(
            f"object {oid.hex()} does not decompress: {exc}", object_id=oid.hex()
        ) from None
    if verify and kind is not None and object_id(kind, payload) != oid:
        raise CorruptObject(
            f"object {oid.hex()} does not match its hash", object_id=oid.hex()
        )
    return payload


DECOMPRESS_THREADS = min(4, os.cpu_count() or 1)


def decompress_many(frames: Sequence[bytes], threads: int = DECOMPRESS_THREADS, *,
                    copy: bool = True) -> list[bytes]:
    """Return the payloads of many frames (in parallel when threads > 1); checksums verified.

    With copy=False, buffer views into zstd's result instead of bytes (no copy; they
    keep the whole result alive).
    """
    if not frames:
        return []  # zstandard's batch call divides by the frame count
    try:
        result = _codecs()[1].multi_decompress_to_buffer(list(frames), threads=threads)
    except (zstandard.ZstdError, ValueError, TypeError) as exc:
        # A flipped bit in a frame header can hide its content size, which this batch
        # call reports as ValueError rather than ZstdError, and a damaged row can hold
        # no bytes at all (TypeError): corrupt all the same.
        raise CorruptObject(f"a frame does not decompress: {exc}", object_id="") from None
    if not copy:
        return [result[i] for i in range(len(result))]  # type: ignore[misc]
    return [result[i].tobytes() for i in range(len(result))]
