"""Manifests: the immutable object that names a session's state, in a compact binary form.

Two forms:

* **full**: the metadata object's id and every named list (count, total bytes, frozen
  tree root, inline tail of the newest ids);
* **delta**: the metadata id, the message count and bytes, a ``base`` manifest and the
  message ids appended since it. An append or a metadata update that does not freeze a
  page writes a delta of ≈110 bytes instead of a full manifest carrying the whole tail;
  reading resolves the chain (at most ``MAX_DEPTH`` links, each a small read). A page
  freeze, any other edit, or a chain at its limit writes a full manifest again.

Encoding (all integers unsigned LEB128, ids raw 32 bytes)::

    full:  b"M" 0x01 0x00 meta  nlists  { len(name) name count bytes has_tree [tree]
                                           ntail tail* }  (lists sorted by name)
    delta: b"M" 0x01 0x01 meta  base depth count bytes nadd add*
           nextra { len(name) name count }   (the other lists' counts, for load_meta)

Forms 2 and 3 are forms 0 and 1 with a metadata section after ``meta`` (written only
when there is something in it, so a session without it keeps the old bytes and ids)::

    has_layout [layout]  nvalues { len(key) key id }   (values sorted by key)

``layout`` names a META object listing the document's top-level keys in their order;
each value is a META object holding one large top-level metadata value, so a patch of a
small key rewrites only the small ``meta`` object (see ``MetaRef``).

``references`` lists what a manifest points at, for GC and fsck, without resolving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .lists import ListRef
from .objects import OID_SIZE, Oid

MAGIC = b"M\x01"
FULL, DELTA = 0, 1
FULL_META, DELTA_META = 2, 3  # the same, with a metadata section
#: Longest chain of deltas before a full manifest is written again.
MAX_DEPTH = 32
MESSAGES = "messages"


@dataclass(frozen=True, slots=True)
class MetaRef:
    """Where a state's metadata lives: small fields, key order, large values by key."""

    meta: Oid  # META object: the metadata's small top-level fields, canonical JSON
    layout: Oid | None = None  # META object: the document's top-level keys in order
    values: tuple[tuple[str, Oid], ...] = ()  # large top-level values, sorted by key

    def ids(self) -> list[Oid]:
        """Return every object this metadata consists of."""
        return [self.meta, *([self.layout] if self.layout is not None else []),
                *(o for _, o in self.values)]


@dataclass(frozen=True, slots=True)
class Manifest:
    """A resolved manifest: metadata id and every list, as if it were full."""

    meta: Oid
    lists: dict[str, ListRef]
    depth: int = 0  # 0 for a full manifest, else links to the nearest full one
    layout: Oid | None = None
    values: tuple[tuple[str, Oid], ...] = ()

    @property
    def messages(self) -> ListRef:
        """The message list."""
        return self.lists[MESSAGES]

    @property
    def meta_ref(self) -> MetaRef:
        """The metadata's objects."""
        return MetaRef(self.meta, self.layout, self.values)


@dataclass(frozen=True, slots=True)
class Raw:
    """A manifest as stored: full (base is None) or a delta on ``base``."""

    meta: Oid
    lists: dict[str, ListRef]  # full only
    base: Oid | None = None
    depth: int = 0
    count: int = 0  # delta only
    nbytes: int = 0  # delta only
    add: tuple[Oid, ...] = ()  # delta only
    extra_counts: tuple[tuple[str, int], ...] = ()  # delta only: the other lists' counts
    layout: Oid | None = None
    values: tuple[tuple[str, Oid], ...] = ()

    @property
    def meta_ref(self) -> MetaRef:
        """The metadata's objects."""
        return MetaRef(self.meta, self.layout, self.values)

    def summary(self) -> tuple[int, int, dict[str, int]]:
        """Return (message count, message bytes, other lists' counts) without resolving."""
        if self.base is not None:
            return self.count, self.nbytes, dict(self.extra_counts)
        msgs = self.lists[MESSAGES]
        return msgs.count, msgs.nbytes, {n: r.count for n, r in self.lists.items()
                                         if n != MESSAGES}


# --- encoding --------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _meta_section(ref: MetaRef) -> list[bytes]:
    parts = [b"\x01", ref.layout] if ref.layout is not None else [b"\x00"]
    parts.append(_varint(len(ref.values)))
    for key, oid in sorted(ref.values):
        raw = key.encode()
        parts += [_varint(len(raw)), raw, oid]
    return parts


def _head(form: int, meta: Oid | MetaRef) -> list[bytes]:
    """Return the magic, form byte and metadata part (the old form when it fits)."""
    ref = meta if isinstance(meta, MetaRef) else MetaRef(meta)
    if ref.layout is None and not ref.values:
        return [MAGIC, bytes((form,)), ref.meta]
    return [MAGIC, bytes((form + 2,)), ref.meta, *_meta_section(ref)]


def encode_full(meta: Oid | MetaRef, lists: dict[str, ListRef]) -> bytes:
    """Return the payload of a full manifest (empty extra lists are left out)."""
    parts = _head(FULL, meta)
    kept = sorted((n, r) for n, r in lists.items() if n == MESSAGES or r.count)
    parts.append(_varint(len(kept)))
    for name, ref in kept:
        raw = name.encode()
        parts += [_varint(len(raw)), raw, _varint(ref.count), _varint(ref.nbytes)]
        parts += [b"\x01", ref.tree] if ref.tree is not None else [b"\x00"]
        parts += [_varint(len(ref.tail)), *ref.tail]
    return b"".join(parts)


def encode_delta(meta: Oid | MetaRef, base: Oid, depth: int, count: int, nbytes: int,
                 add: Iterable[Oid], extra_counts: dict[str, int] | None = None) -> bytes:
    """Return the payload of a delta manifest."""
    ids = list(add)
    extra = sorted((n, c) for n, c in (extra_counts or {}).items() if c)
    parts = [*_head(DELTA, meta), base, _varint(depth), _varint(count),
             _varint(nbytes), _varint(len(ids)), *ids, _varint(len(extra))]
    for name, n in extra:
        raw = name.encode()
        parts += [_varint(len(raw)), raw, _varint(n)]
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ValueError("manifest is truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def varint(self) -> int:
        # Indexed in place, not through take(): a manifest read holds a dozen varints.
        data, pos = self.data, self.pos
        shift = n = 0
        while True:
            if pos >= len(data):
                raise ValueError("manifest is truncated")
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                self.pos = pos
                return n
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def oid(self) -> Oid:
        return Oid(self.take(OID_SIZE))


def decode(payload: bytes) -> Raw:
    """Parse a manifest payload; raise ValueError if it is malformed."""
    r = _Reader(payload)
    if r.take(2) != MAGIC:
        raise ValueError("not a manifest")
    form = r.take(1)[0]
    meta = r.oid()
    layout: Oid | None = None
    values: tuple[tuple[str, Oid], ...] = ()
    if form in (FULL_META, DELTA_META):
        if r.take(1) == b"\x01":
            layout = r.oid()
        values = tuple((r.take(r.varint()).decode(), r.oid()) for _ in range(r.varint()))
        form -= 2
    if form == DELTA:
        base, depth, count, nbytes = r.oid(), r.varint(), r.varint(), r.varint()
        add = tuple(r.oid() for _ in range(r.varint()))
        extra = tuple((r.take(r.varint()).decode(), r.varint()) for _ in range(r.varint()))
        out = Raw(meta, {}, base, depth, count, nbytes, add, extra, layout, values)
    elif form == FULL:
        lists = {}
        for _ in range(r.varint()):
            name = r.take(r.varint()).decode()
            count, nbytes = r.varint(), r.varint()
            tree = r.oid() if r.take(1) == b"\x01" else None
            tail = tuple(r.oid() for _ in range(r.varint()))
            lists[name] = ListRef(count, nbytes, tree, tail)
        if MESSAGES not in lists:
            raise ValueError("manifest has no message list")
        out = Raw(meta, lists, layout=layout, values=values)
    else:
        raise ValueError(f"unknown manifest form {form}")
    if r.pos != len(payload):
        raise ValueError("trailing bytes after manifest")
    return out


def references(raw: Raw) -> tuple[list[Oid], list[Oid], list[Oid]]:
    """Return what a stored manifest points at: (manifests, chunks and meta, page roots)."""
    if raw.base is not None:
        return [raw.base], [*raw.meta_ref.ids(), *raw.add], []
    leaves: list[Oid] = raw.meta_ref.ids()
    roots: list[Oid] = []
    for ref in raw.lists.values():
        leaves.extend(ref.tail)
        if ref.tree is not None:
            roots.append(ref.tree)
    return [], leaves, roots


def resolve(oid: Oid, load: Callable[[Oid], Raw],
            cached: Callable[[Oid], Manifest | None]) -> Manifest:
    """Return the resolved manifest oid, walking delta bases (iteratively) to a full one."""
    chain: list[Raw] = []
    cur: Oid | None = oid
    base: Manifest | None = None
    while cur is not None:
        hit = cached(cur) if chain else None
        if hit is not None:
            base = hit
            break
        raw = load(cur)
        if raw.base is None:
            base = Manifest(raw.meta, raw.lists, 0, raw.layout, raw.values)
            break
        chain.append(raw)
        if len(chain) > MAX_DEPTH + 1:
            raise ValueError("manifest delta chain is too long")
        cur = raw.base
    assert base is not None
    for raw in reversed(chain):
        ref = base.messages
        tail = ref.tail + raw.add
        msgs = ListRef(raw.count, raw.nbytes, ref.tree, tail)
        base = Manifest(raw.meta, {**base.lists, MESSAGES: msgs}, raw.depth, raw.layout,
                        raw.values)
    return base


def delta_fits(head: Manifest, lists: dict[str, ListRef]) -> tuple[Oid, ...] | None:
    """Return the ids a delta on head would add to reach lists, or None if it cannot.

    A delta can express: the same extra lists, the same frozen tree, and a message tail
    that extends head's tail (without ending a page, which freezes it).
    """
    if head.depth >= MAX_DEPTH:
        return None
    new, old = lists[MESSAGES], head.messages
    others_new = {n: r for n, r in lists.items() if n != MESSAGES and r.count}
    others_old = {n: r for n, r in head.lists.items() if n != MESSAGES and r.count}
    if others_new != others_old or new.tree != old.tree:
        return None
    if new.tail[: len(old.tail)] != old.tail:
        return None
    return new.tail[len(old.tail) :]
