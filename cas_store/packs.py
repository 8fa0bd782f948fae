"""Packs: the messages under one frozen page, stored together as one compressed object.

A page never changes once written (lists.py), so the messages under it can be kept
physically together, as git keeps objects in packs: one zstd frame of the members'
canonical JSON joined by commas, in list order. The page is a closed level-1 page
(≈ 256 messages: appends never rewrite it), else a leaf (≈ 16). A full load then reads
one row and runs one decompression per page, and joins the packs' bodies straight into
the JSON array it parses; compressing similar messages together also takes fewer bytes
than compressing each alone (docs/design.md, "Packs").

A pack is addressed by the page it packs: its id is ``object_id(PACK, page id)``, so a
reader finds it from the tree alone, and its content is checked against the page (every
member hashes to the id at its position among the page's items). Each member stays
addressable by its own chunk id: a backend that keeps packs stores a chunk packed as a
reference to its pack and position (see ``backends/sqlite_packs.py``), and returns it
from ``get_frames`` like any other object, so dedup, GC, fsck and windowed reads work
per chunk as before.

Payload layout: a format byte (1), a flags byte (EXACT: no digit run long enough for an
integer orjson would read as a float, so a reader may parse the body with orjson), the
page id (32 bytes), the header's length (4 bytes,
little-endian: a reader after the body alone skips the rest), the member count and each
member's length (unsigned LEB128), then the members joined by ``,``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import CasError
from .objects import (
    OID_SIZE,
    Kind,
    Oid,
    decompress,
    decompress_many,
    object_id,
    orjson_exact,
    read_uleb,
    write_uleb,
)

FORMAT = 1
FIXED = 2 + OID_SIZE + 4  # format and flags bytes, page id, header length
EXACT = 1

def pack_id(page: Oid) -> Oid:
    """Return the id of the pack of a page (derived from the page's id alone)."""
    return object_id(Kind.PACK, page)


def encode(page: Oid, members: Sequence[bytes]) -> bytes:
    """Return the payload of the pack of page, whose members are given in page order."""
    head = bytearray()
    write_uleb(len(members), head)
    for m in members:
        write_uleb(len(m), head)
    size = FIXED + len(head)
    joined = b",".join(members)
    flags = EXACT if orjson_exact(joined) else 0
    return b"".join((bytes((FORMAT, flags)), page, size.to_bytes(4, "little"), head, joined))


def body(payload: bytes | memoryview, page: Oid) -> memoryview | None:
    """Return the members joined by commas if payload is a pack of page, else None.

    Reads only the fixed header: the fast path of a full load (``Pack`` checks the rest).
    """
    view = memoryview(payload)
    if len(view) < FIXED or view[0] != FORMAT or bytes(view[2 : 2 + OID_SIZE]) != page:
        return None
    start = int.from_bytes(view[2 + OID_SIZE : FIXED], "little")
    return view[start:] if FIXED < start <= len(view) else None


def bodies(frames: Sequence[tuple[Oid, bytes]]) -> dict[Oid, tuple[int, memoryview, bool]]:
    """Return (member count, members joined by commas, exact) per page with a sound pack.

    frames are (page, stored frame of its pack). One batched decompression (outside the
    GIL) and the fixed header only: the caller compares the count with the page's, a
    pack that does not decompress or names another page is left out.
    """
    return read_bodies(frames, payloads(frames))


def payloads(frames: Sequence[tuple[Oid, bytes]]) -> Sequence[bytes | memoryview]:
    """Return each pack's payload (empty where its frame is damaged), in one batch call.

    On one thread: zstd starts its threads on every call, which cost more than they
    saved on a load (docs/design.md, "Packs").
    """
    try:
        return decompress_many([f for _, f in frames], 1, copy=False)
    except CasError:
        # A damaged pack in the batch: take the sound ones one by one.
        return [_payload_or_empty(f) for _, f in frames]


def read_bodies(frames: Sequence[tuple[Oid, bytes]], got: Sequence[bytes | memoryview]
                ) -> dict[Oid, tuple[int, memoryview, bool]]:
    """Return ``bodies``' answer from payloads already decompressed (see ``payloads``)."""
    out: dict[Oid, tuple[int, memoryview, bool]] = {}
    for (page, _), payload in zip(frames, got, strict=True):
        view = memoryview(payload)
        members = body(view, page) if len(view) else None
        if members is not None:
            try:
                count = read_uleb(view, FIXED, "pack header")[0]
            except ValueError:
                continue
            out[page] = (count, members, bool(view[1] & EXACT))
    return out


def _payload_or_empty(frame: bytes) -> bytes:
    try:
        return decompress(b"", frame, verify=False)
    except CasError:
        return b""


class Pack:
    """A decoded pack: its page, its members' offsets and the joined body."""

    __slots__ = ("body", "exact", "offsets", "page")

    def __init__(self, payload: bytes) -> None:
        """Parse a pack payload; raise ValueError if it is malformed."""
        if len(payload) < FIXED + 1 or payload[0] != FORMAT:
            raise ValueError("not a pack (bad format byte or too short)")
        self.page = Oid(bytes(payload[2 : 2 + OID_SIZE]))
        self.exact = bool(payload[1] & EXACT)
        start = int.from_bytes(payload[2 + OID_SIZE : FIXED], "little")
        count, pos = read_uleb(payload, FIXED, "pack header")
        if count == 0 or count > len(payload):
            raise ValueError("pack member count is out of range")
        offsets = [0]
        for _ in range(count):
            n, pos = read_uleb(payload, pos, "pack header")
            offsets.append(offsets[-1] + n + 1)  # the comma after each member
        if pos != start or offsets[-1] - 1 != len(payload) - pos:
            raise ValueError("pack body length does not match its header")
        self.offsets = offsets
        self.body = memoryview(payload)[pos:]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def member(self, i: int) -> bytes:
        """Return member i's canonical bytes."""
        return bytes(self.body[self.offsets[i] : self.offsets[i + 1] - 1])


def check(oid: Oid, payload: bytes, page: Sequence[Oid] | None = None) -> str:
    """Return why a stored pack is unsound ("" if it is): header, id, and with page, members.

    Every member must hash to the page's chunk id at its position when the page is given
    (a pack outlives its page while a member is still referenced elsewhere).
    """
    try:
        pack = Pack(payload)
    except ValueError as exc:
        return str(exc)
    if pack_id(pack.page) != oid:
        return "pack does not belong to the page it names"
    if pack.exact and not orjson_exact(pack.body):
        return "pack is flagged exact for orjson but holds a long digit run"
    if page is not None:
        if len(page) != len(pack):
            return f"pack holds {len(pack)} messages, its page {len(page)}"
        for i, cid in enumerate(page):
            if object_id(Kind.CHUNK, pack.member(i)) != cid:
                return f"pack member {i} does not hash to its chunk id"
    return ""


def ref(pack: Oid, index: int) -> bytes:
    """Return the stored reference of a packed chunk: its pack's id and position."""
    out = bytearray(pack)
    write_uleb(index, out)
    return bytes(out)


def parse_ref(data: bytes) -> tuple[Oid, int]:
    """Return (pack id, position) of a packed chunk's reference; ValueError if malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError("packed chunk reference is not bytes")
    if len(data) <= OID_SIZE:
        raise ValueError("packed chunk reference is truncated")
    index, end = read_uleb(data, OID_SIZE, "pack header")
    if end != len(data):
        raise ValueError("packed chunk reference has trailing bytes")
    return Oid(bytes(data[:OID_SIZE])), index
