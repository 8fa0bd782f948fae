"""The list structure: a short tail of the newest ids in front of a tree of frozen pages.

A list of chunk ids is kept as

* ``tree``: a tree of pages whose boundaries are content-defined, as in prolly trees and
  content-defined chunking: a leaf page ends after an id whose last byte is a multiple of
  FANOUT (one id in 16, ids being BLAKE3 digests) or at MAX_PAGE ids; level by level,
  an internal page ends after a child page whose id ends the same way, and carries each
  child's item count so positions can be found without fixed sizes;
* ``tail``: the ids after the last leaf boundary (on average 16, at most MAX_PAGE - 1),
  stored inline in the manifest.

Where a page ends depends only on the ids in it, so an edit anywhere changes only the
pages that hold it, and the pages on their path to the root: the leaves after it end at
the same ids as before and are the same objects. An append rewrites only the manifest
until an id ends a page; then that page is frozen and the tree's right edge rewritten
(one page a level). A save that edits, inserts, deletes or compacts messages anywhere
writes O(log n) pages (``rebuild`` hashes every page but stages only those the old tree
lacks; measured in bench/append_cost.py).

The tree for a given list is canonical (it depends only on the ids, not on the history
of edits), so two sessions or two versions holding the same messages share every page.

Stores written before content-defined pages hold fixed-fanout trees (full leaves of
exactly FANOUT ids under internal pages without counts). They are read as they are; the
first write to such a list rebuilds it with content-defined pages.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from .objects import Kind, Oid, Page, encode_page, object_id

FANOUT = 16  # average page size (and the size of every page of a fixed-fanout tree)
MAX_PAGE = 4 * FANOUT  # a run of ids without a boundary is cut here


class PageIO(Protocol):
    """Reads pages (with a cache) and stages new ones for the commit."""

    def pages(self, oids: Sequence[Oid]) -> dict[Oid, Page]:
        """Return each page, decoded."""
        ...

    def put_page(self, height: int, children: Sequence[Oid],
                 counts: Sequence[int] | None = None) -> Oid:
        """Stage a page and return its id."""
        ...


@dataclass(frozen=True, slots=True)
class ListRef:
    """An immutable list of ids: count, total item bytes, frozen tree root and inline tail."""

    count: int
    nbytes: int
    tree: Oid | None
    tail: tuple[Oid, ...]

    @property
    def frozen(self) -> int:
        """How many ids live in the frozen tree."""
        return self.count - len(self.tail)


EMPTY = ListRef(0, 0, None, ())


def ends_page(oid: bytes) -> bool:
    """Return True if a page ends after this id (the content-defined boundary)."""
    return oid[-1] % FANOUT == 0


def _groups(items: Sequence[Oid], close_last: bool) -> tuple[list[list[Oid]], list[Oid]]:
    """Cut items (starting at a page start) into pages; return (pages, the open rest)."""
    out: list[list[Oid]] = []
    cur: list[Oid] = []
    for x in items:
        cur.append(x)
        if x[-1] % FANOUT == 0 or len(cur) >= MAX_PAGE:
            out.append(cur)
            cur = []
    if close_last and cur:
        out.append(cur)
        cur = []
    return out, cur


def _level_up(height: int, nodes: list[tuple[Oid, int]], io: PageIO,
              known: Collection[Oid] = ()) -> list[tuple[Oid, int]]:
    """Return the pages at height over nodes (id, count), which start at a page start."""
    groups, _ = _groups([o for o, _ in nodes], close_last=True)
    out, i = [], 0
    for g in groups:
        counts = [n for _, n in nodes[i : i + len(g)]]
        i += len(g)
        out.append((_put(height, g, counts, io, known), sum(counts)))
    return out


def _put(height: int, children: Sequence[Oid], counts: Sequence[int] | None, io: PageIO,
         known: Collection[Oid]) -> Oid:
    if known:
        oid = object_id(Kind.PAGE, encode_page(height, children, counts))
        if oid in known:
            return oid  # a page of the tree being replaced: already stored
    return io.put_page(height, children, counts)


def _root(nodes: list[tuple[Oid, int]], height: int, io: PageIO,
          known: Collection[Oid] = ()) -> Oid | None:
    """Stack levels over the nodes at height until one page is left; return its id."""
    while len(nodes) > 1:
        height += 1
        nodes = _level_up(height, nodes, io, known)
    return nodes[0][0] if nodes else None


def build(ids: Sequence[Oid], nbytes: int, io: PageIO,
          known: Collection[Oid] = ()) -> ListRef:
    """Return the canonical list of ids, built from scratch.

    Pages whose id is in ``known`` (those of a tree being replaced) are not staged again,
    so a save that changes a few items anywhere stages O(log n) pages.
    """
    groups, rest = _groups(ids, close_last=False)
    leaves = [(_put(0, g, None, io, known), len(g)) for g in groups]
    return ListRef(len(ids), nbytes, _root(leaves, 0, io, known), tuple(rest))


def _fixed(ref: ListRef, io: PageIO) -> bool:
    """Return True if ref's tree is a fixed-fanout tree (written before content-defined pages)."""
    if ref.tree is None:
        return False
    root = io.pages([ref.tree])[ref.tree]
    if root.height:
        return root.counts is None
    groups, rest = _groups(root, close_last=False)
    return bool(rest) or len(groups) != 1


def _collapse(root: Oid | None, io: PageIO, staged: dict[Oid, Page]) -> Oid | None:
    # A root with one child is not canonical (a fresh build stops a level lower).
    while root is not None:
        page = staged.get(root) or io.pages([root])[root]
        if page.height == 0 or len(page) != 1:
            return root
        root = page[0]
    return root


class _Recorder:
    """A PageIO wrapper that remembers what it staged (for collapsing the root)."""

    def __init__(self, io: PageIO) -> None:
        self.io = io
        self.staged: dict[Oid, Page] = {}

    def pages(self, oids: Sequence[Oid]) -> dict[Oid, Page]:
        return self.io.pages(oids)

    def put_page(self, height: int, children: Sequence[Oid],
                 counts: Sequence[int] | None = None) -> Oid:
        oid = self.io.put_page(height, children, counts)
        self.staged[oid] = Page(children, height, counts)
        return oid


def splice(ref: ListRef, keep: int, new_ids: Sequence[Oid], nbytes: int, io: PageIO) -> ListRef:
    """Return the list ``ref[:keep] + new_ids`` (with total item bytes ``nbytes``).

    Reads and writes only the pages on the path to the cut and on the new right edge.
    """
    if not 0 <= keep <= ref.count:
        raise ValueError(f"keep={keep} outside 0..{ref.count}")
    if _fixed(ref, io):
        return build([*read_ids(ref, io, 0, keep), *new_ids], nbytes, io)
    frozen = ref.frozen
    if keep >= frozen:
        items = [*ref.tail[: keep - frozen], *new_ids]
        if not any(x[-1] % FANOUT == 0 for x in items) and len(items) < MAX_PAGE:
            # Nothing ends a page: the tree stays as it is (the common append).
            return ListRef(keep + len(new_ids), nbytes, ref.tree, tuple(items))
    # The path from the root to the cut, as (page, i): its children [0, i) are kept,
    # the rest replaced by what is rebuilt below. Every kept page is closed by a
    # boundary, so rebuilding from the start of the page the cut falls in is canonical.
    path: list[tuple[Page, int]] = []
    whole: list[tuple[Oid, int]] = []  # a root leaf kept whole (the cut is after it)
    if ref.tree is None:
        carry = list(ref.tail[:keep])
    elif keep >= frozen:
        carry = list(ref.tail[: keep - frozen])
        node = ref.tree
        while True:
            page = io.pages([node])[node]
            if page.height == 0:
                whole = [(node, len(page))]
                break
            if page.height == 1:
                path.append((page, len(page)))
                break
            path.append((page, len(page) - 1))
            node = page[-1]
    else:
        node, pos = ref.tree, keep
        while True:
            page = io.pages([node])[node]
            if page.height == 0:
                carry = list(page[:pos])
                break
            assert page.counts is not None
            i = 0
            while pos >= page.counts[i]:
                pos -= page.counts[i]
                i += 1
            path.append((page, i))
            node = page[i]
    rec = _Recorder(io)
    groups, rest = _groups([*carry, *new_ids], close_last=False)
    changed = whole + [(rec.put_page(0, g), len(g)) for g in groups]
    height = 0
    for page, i in reversed(path):
        height = page.height
        assert page.counts is not None
        left = list(zip(page[:i], page.counts[:i], strict=True))
        changed = _level_up(height, left + changed, rec)
    root = _collapse(_root(changed, height, rec), io, rec.staged)
    return ListRef(keep + len(new_ids), nbytes, root, tuple(rest))


def read_ids(ref: ListRef, io: PageIO, start: int = 0, stop: int | None = None) -> list[Oid]:
    """Return the ids at positions [start, stop), reading only the pages that hold them."""
    stop = ref.count if stop is None else min(stop, ref.count)
    start = max(0, start)
    if start >= stop:
        return []
    frozen = ref.frozen
    out: list[Oid] = []
    if start < frozen and ref.tree is not None:
        root = io.pages([ref.tree])[ref.tree]
        if root.height and root.counts is None:
            out = _read_fixed(ref, io, start, min(stop, frozen))
        else:
            out = _read_counted(ref.tree, io, start, min(stop, frozen))
    if stop > frozen:
        out.extend(ref.tail[max(start - frozen, 0) : stop - frozen])
    return out


def closed(children: Sequence[Oid]) -> bool:
    """Return True if an internal page of these children ends at a boundary.

    Appends never rewrite such a page (only the open page at a level's right edge).
    """
    return len(children) >= MAX_PAGE or (len(children) > 0 and ends_page(children[-1]))


def units(ref: ListRef, io: PageIO, *, lazy: bool = False
          ) -> list[tuple[Oid, int, list[tuple[Oid, int]] | None]]:
    """Return the frozen tree's level-1 pages, each with its item count and its leaves.

    A tree whose root is a leaf is one unit of that leaf. Reads only internal pages (one
    batched read a level), like ``leaves``: a reader that finds a unit's items in a pack
    of its own reads nothing else for it. With lazy, a level-1 page whose count its
    parent gives is not read (its leaves are None) unless it is the last one, the only
    one appends leave open.
    """
    if ref.tree is None:
        return []
    out: list[tuple[Oid, int, list[tuple[Oid, int]] | None]] = []
    nodes = [ref.tree]
    while nodes:
        pages = io.pages(nodes)
        nxt: list[Oid] = []
        for n in nodes:
            page = pages[n]
            if page.height == 0:  # a root that is a leaf
                out.append((n, len(page), [(n, len(page))]))
            elif page.height == 1:
                kids = leaves_of(page)
                out.append((n, sum(c for _, c in kids), kids))
            elif page.height == 2 and lazy and page.counts is not None:
                out.extend((kid, count, None) for kid, count in zip(page, page.counts,
                                                                      strict=True))
            else:
                nxt.extend(page)
        nodes = nxt
    if out and out[-1][2] is None:
        last = out[-1][0]
        out[-1] = (last, out[-1][1], leaves_of(io.pages([last])[last]))
    return out


def leaves_of(page: Page) -> list[tuple[Oid, int]]:
    """Return a level-1 page's leaves with their item counts."""
    counts = page.counts or [FANOUT] * len(page)  # fixed-fanout leaves are full
    return list(zip(page, counts, strict=True))


def _read_counted(root: Oid, io: PageIO, start: int, stop: int) -> list[Oid]:
    # Level by level, so each level is one batched read however wide the range.
    nodes: list[tuple[Oid, int]] = [(root, 0)]
    out: list[Oid] = []
    while nodes:
        pages = io.pages([n for n, _ in nodes])
        nxt: list[tuple[Oid, int]] = []
        for n, base in nodes:
            page = pages[n]
            if page.height == 0:
                lo, hi = max(start - base, 0), min(stop - base, len(page))
                out.extend(page[lo:hi])
                continue
            assert page.counts is not None
            b = base
            for child, count in zip(page, page.counts, strict=True):
                if b + count > start and b < stop:
                    nxt.append((child, b))
                b += count
        nodes = nxt
    return out


def _height(leaves: int) -> int:
    # The height of a fixed-fanout tree over this many full leaves (a leaf is 0).
    h, span = 0, 1
    while span < leaves:
        span *= FANOUT
        h += 1
    return h


def _read_fixed(ref: ListRef, io: PageIO, start: int, stop: int) -> list[Oid]:
    """Read [start, stop) of a fixed-fanout tree (full leaves of FANOUT, no counts)."""
    assert ref.tree is not None
    first, last = start // FANOUT, (stop - 1) // FANOUT
    level = _height(ref.frozen // FANOUT)
    nodes: list[tuple[Oid, int]] = [(ref.tree, 0)]
    while level > 0:
        pages = io.pages([n for n, _ in nodes])
        span = FANOUT ** (level - 1)
        nodes = [
            (child, base + i * span)
            for n, base in nodes
            for i, child in enumerate(pages[n])
            if base + (i + 1) * span > first and base + i * span <= last
        ]
        level -= 1
    pages = io.pages([n for n, _ in nodes])
    out: list[Oid] = []
    for n, _ in nodes:
        out.extend(pages[n])
    return out[start - first * FANOUT : stop - first * FANOUT]


def tree_pages(ref: ListRef, io: PageIO) -> set[Oid]:
    """Return the ids of every page of ref's tree (read through the cache)."""
    if ref.tree is None:
        return set()
    out = {ref.tree}
    level = [ref.tree]
    while level:
        pages = io.pages(level)
        level = [c for p in level if pages[p].height for c in pages[p]]
        out.update(level)
    return out


def common_prefix(a: Sequence[Oid], b: Sequence[Oid]) -> int:
    """Return the length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def common_suffix(a: Sequence[Oid], b: Sequence[Oid], limit: int) -> int:
    """Return the length of the longest common suffix of two id lists, at most limit."""
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[-1 - i] == b[-1 - i]:
        i += 1
    return i
