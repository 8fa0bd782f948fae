"""The list structure: a short tail of the newest ids in front of a tree of frozen pages.

A list of N chunk ids is kept as

* ``tail``: the newest ``N mod FANOUT`` ids, stored inline in the manifest;
* ``tree``: the older ids, in full leaf pages of exactly FANOUT ids, under internal
  pages of up to FANOUT children, built bottom-up and left-packed.

An append rewrites only the manifest (it grows by one id) until the tail is full; then
the tail becomes one frozen leaf page and the tree's right edge is rewritten (one page a
level, a few hundred bytes). With FANOUT = 16 that is, amortised, the manifest plus
well under 100 bytes of pages per append at any N (see docs/design.md for measurements).

The tree for a given list is canonical (it depends only on the ids, not on the history
of edits), so two sessions or two versions holding the same messages share every page.
``splice`` is the only write operation: keep a prefix, append new ids. It touches only
the pages on the path to the cut and on the new right edge, so rewinding a few messages
near the end of a long list is as cheap as an append.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .objects import Oid

FANOUT = 16


class PageIO(Protocol):
    """Reads pages (with a cache) and stages new ones for the commit."""

    def pages(self, oids: Sequence[Oid]) -> dict[Oid, list[Oid]]:
        """Return the children of each page id."""
        ...

    def put_page(self, height: int, children: Sequence[Oid]) -> Oid:
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


def height(leaves: int) -> int:
    """Return the height of the canonical tree over this many leaf pages (a leaf is 0)."""
    h, span = 0, 1
    while span < leaves:
        span *= FANOUT
        h += 1
    return h


def _node_at(root: Oid, old_height: int, level: int, index: int, io: PageIO) -> Oid:
    # Descend from the root to the node at (level, index) of the old tree.
    node = root
    for lvl in range(old_height, level, -1):
        children = io.pages([node])[node]
        node = children[(index // FANOUT ** (lvl - 1 - level)) % FANOUT]
    return node


def _splice_tree(root: Oid | None, old_leaves: int, keep_leaves: int,
                 new_leaves: Sequence[Oid], io: PageIO) -> Oid | None:
    """Return the root of the tree over old_leaves[:keep_leaves] + new_leaves.

    At each level, the nodes left of the cut are unchanged (and full); the node the cut
    falls in keeps its first ``r`` children and is rebuilt together with the new nodes
    from the level below. Nothing left of the cut is read or written.
    """
    total = keep_leaves + len(new_leaves)
    if total == 0:
        return None
    if not new_leaves and keep_leaves == old_leaves:
        return root
    old_height = height(old_leaves)
    unchanged, changed = keep_leaves, list(new_leaves)
    level = 0
    while unchanged + len(changed) > 1:
        r = unchanged % FANOUT
        carried: list[Oid] = []
        if r:
            assert root is not None  # r > 0 implies an old tree exists
            if level + 1 > old_height:
                carried = [root]  # the old root becomes the first child of a taller root
            else:
                parent = _node_at(root, old_height, level + 1, unchanged // FANOUT, io)
                carried = io.pages([parent])[parent][:r]
        group = carried + changed
        changed = [
            io.put_page(level + 1, group[i : i + FANOUT]) for i in range(0, len(group), FANOUT)
        ]
        unchanged //= FANOUT
        level += 1
    if changed:
        return changed[0]
    assert root is not None
    return _node_at(root, old_height, level, 0, io)


def splice(ref: ListRef, keep: int, new_ids: Sequence[Oid], nbytes: int, io: PageIO) -> ListRef:
    """Return the list ``ref[:keep] + new_ids`` (with total item bytes ``nbytes``)."""
    if not 0 <= keep <= ref.count:
        raise ValueError(f"keep={keep} outside 0..{ref.count}")
    frozen = ref.frozen
    old_leaves = frozen // FANOUT
    if keep >= frozen:
        carry = list(ref.tail[: keep - frozen])
        keep_leaves = old_leaves
    else:
        keep_leaves, partial = divmod(keep, FANOUT)
        carry = []
        if partial:
            assert ref.tree is not None
            leaf = _node_at(ref.tree, height(old_leaves), 0, keep_leaves, io)
            carry = io.pages([leaf])[leaf][:partial]
    items = carry + list(new_ids)
    full = len(items) // FANOUT * FANOUT
    leaves = [io.put_page(0, items[i : i + FANOUT]) for i in range(0, full, FANOUT)]
    tree = _splice_tree(ref.tree, old_leaves, keep_leaves, leaves, io)
    return ListRef(keep + len(new_ids), nbytes, tree, tuple(items[full:]))


def read_ids(ref: ListRef, io: PageIO, start: int = 0, stop: int | None = None) -> list[Oid]:
    """Return the ids at positions [start, stop), reading only the pages that hold them."""
    stop = ref.count if stop is None else min(stop, ref.count)
    start = max(0, start)
    if start >= stop:
        return []
    frozen = ref.frozen
    out: list[Oid] = []
    if start < frozen and ref.tree is not None:
        leaves = frozen // FANOUT
        first, last = start // FANOUT, (min(stop, frozen) - 1) // FANOUT
        level = height(leaves)
        nodes: list[tuple[Oid, int]] = [(ref.tree, 0)]
        # Level by level, so each level is one batched read however wide the range.
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
        for n, _ in nodes:
            out.extend(pages[n])
        out = out[start - first * FANOUT : min(stop, frozen) - first * FANOUT]
    if stop > frozen:
        out.extend(ref.tail[max(start - frozen, 0) : stop - frozen])
    return out


def common_prefix(a: Sequence[Oid], b: Sequence[Oid]) -> int:
    """Return the length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
