"""Immutable objects: canonical bytes, their BLAKE3 ids, and zstd frames at rest."""

from __future__ import annotations

import enum
import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NewType

import blake3
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


def canonical_json(value: Any) -> bytes:
    """Return the canonical bytes of a JSON value: UTF-8, sorted keys, no whitespace.

    Raises TypeError or ValueError for anything that is not plain JSON (NaN and infinities,
    lone surrogates, non-string keys, custom objects), RecursionError for absurd nesting.
    """
    text = _ENCODER.encode(value)
    # A lone surrogate survives json.dumps with ensure_ascii=False but not UTF-8 encoding.
    return text.encode("utf-8")


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
        data = canonical_json(value)
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
    if _has_non_str_key(value):
        raise InvalidMessage(f"{field}[{index}] has a non-string key", index=index, field=field)
    return data


def encode_metadata(value: Any, limit: int) -> bytes:
    """Return the canonical bytes of a metadata object or raise InvalidMetadata."""
    if not isinstance(value, Mapping):
        raise InvalidMetadata(f"metadata must be a JSON object, not {type(value).__name__}")
    try:
        data = canonical_json(value)
    except (TypeError, ValueError, UnicodeError) as exc:
        raise InvalidMetadata(f"metadata is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidMetadata("metadata is nested too deeply") from None
    if len(data) > limit:
        raise InvalidMetadata(f"metadata is {len(data)} bytes, over the limit of {limit}")
    if _has_non_str_key(value):
        raise InvalidMetadata("metadata has a non-string key")
    return data


# --- pages ----------------------------------------------------------------------------------


def encode_page(height: int, children: Sequence[bytes]) -> bytes:
    """Return a page payload: one height byte, then the children's raw ids."""
    return bytes((height,)) + b"".join(children)


def decode_page(payload: bytes) -> tuple[int, list[Oid]]:
    """Return (height, children) of a page payload."""
    body = memoryview(payload)[1:]
    if len(body) % OID_SIZE:
        raise ValueError("page length is not a whole number of ids")
    return payload[0], [Oid(bytes(body[i : i + OID_SIZE])) for i in range(0, len(body), OID_SIZE)]


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
    except zstandard.ZstdError as exc:
        raise CorruptObject(
            f"object {oid.hex()} does not decompress: {exc}", object_id=oid.hex()
        ) from None
    if verify and kind is not None and object_id(kind, payload) != oid:
        raise CorruptObject(
            f"object {oid.hex()} does not match its hash", object_id=oid.hex()
        )
    return payload


_THREADS = min(4, os.cpu_count() or 1)


def decompress_many(frames: Sequence[bytes], threads: int = _THREADS) -> list[bytes]:
    """Return the payloads of many frames (in parallel when threads > 1); checksums verified."""
    try:
        result = _codecs()[1].multi_decompress_to_buffer(list(frames), threads=threads)
    except (zstandard.ZstdError, ValueError) as exc:
        # A flipped bit in a frame header can hide its content size, which this batch
        # call reports as ValueError rather than ZstdError: corrupt all the same.
        raise CorruptObject(f"a frame does not decompress: {exc}", object_id="") from None
    return [result[i].tobytes() for i in range(len(result))]
