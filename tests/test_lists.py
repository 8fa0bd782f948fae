from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas_store import lists as L
from cas_store.objects import Kind, Oid, Page, decode_page_full, encode_page, object_id

T = L.FANOUT


class MemIO:
    """Pages in a dict; counts writes so tests can bound what an edit rewrites."""

    def __init__(self) -> None:
        self.pages_by_id: dict[Oid, Page] = {}
        self.writes = 0

    def pages(self, oids: Sequence[Oid]) -> dict[Oid, Page]:
        return {o: self.pages_by_id[o] for o in oids}

    def put_page(self, height: int, children: Sequence[Oid],
                 counts: Sequence[int] | None = None) -> Oid:
        payload = encode_page(height, children, counts)
        oid = object_id(Kind.PAGE, payload)
        assert decode_page_full(payload) == list(children)
        self.pages_by_id[oid] = Page(children, height, counts)
        self.writes += 1
        return oid


def ids(n: int, salt: int = 0) -> list[Oid]:
    return [object_id(Kind.CHUNK, f"{salt}:{i}".encode()) for i in range(n)]


def _cut(items: list[Oid]) -> list[list[Oid]]:
    # The boundary rule, restated: a page ends after an id whose last byte is a multiple
    # of 16, or at 64 ids.
    pages: list[list[Oid]] = [[]]
    for x in items:
        pages[-1].append(x)
        if x[-1] % 16 == 0 or len(pages[-1]) == 64:
            pages.append([])
    return pages


def canonical(items: list[Oid], io: MemIO) -> L.ListRef:
    """Build the list bottom-up from scratch: the reference the incremental edits must match."""
    *leaves, tail = _cut(items)
    level = [(io.put_page(0, p), len(p)) for p in leaves]
    h = 0
    while len(level) > 1:
        h += 1
        groups = [g for g in _cut([o for o, _ in level]) if g]
        nxt, i = [], 0
        for g in groups:
            counts = [n for _, n in level[i : i + len(g)]]
            i += len(g)
            nxt.append((io.put_page(h, g, counts), sum(counts)))
        level = nxt
    return L.ListRef(len(items), 0, level[0][0] if level else None, tuple(tail))


def fixed(items: list[Oid], io: MemIO) -> L.ListRef:
    """Build the list as stores before content-defined pages did (fixed fan-out of 16)."""
    full = len(items) // T * T
    level = [io.put_page(0, items[i : i + T]) for i in range(0, full, T)]
    h = 0
    while len(level) > 1:
        h += 1
        level = [io.put_page(h, level[i : i + T]) for i in range(0, len(level), T)]
    return L.ListRef(len(items), 0, level[0] if level else None, tuple(items[full:]))


def depth(ref: L.ListRef, io: MemIO) -> int:
    return io.pages([ref.tree])[ref.tree].height + 1 if ref.tree else 0


def test_append_one_at_a_time_matches_a_fresh_build() -> None:
    io = MemIO()
    ref = L.EMPTY
    items = ids(T**2 * 2 + 37)
    for i, oid in enumerate(items):
        ref = L.splice(ref, ref.count, [oid], 0, io)
        if i % 97 == 0 or i == len(items) - 1:
            assert ref == canonical(items[: i + 1], io)
            assert L.read_ids(ref, io) == items[: i + 1]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 700),
    keep_frac=st.floats(0, 1),
    add=st.integers(0, 300),
)
def test_splice_matches_a_fresh_build(n: int, keep_frac: float, add: int) -> None:
    io = MemIO()
    old = ids(n)
    keep = int(n * keep_frac)
    new = ids(add, salt=1)
    ref = canonical(old, io)
    got = L.splice(ref, keep, new, 0, io)
    assert got == canonical(old[:keep] + new, io)
    assert L.read_ids(got, io) == old[:keep] + new


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 1200), start=st.integers(-50, 1300), length=st.integers(0, 1300))
def test_read_ids_returns_exactly_the_range(n: int, start: int, length: int) -> None:
    io = MemIO()
    items = ids(n)
    ref = canonical(items, io)
    lo = max(start, 0)
    assert L.read_ids(ref, io, start, start + length) == items[lo : max(start + length, 0)]


def test_append_rewrites_only_the_right_edge() -> None:
    io = MemIO()
    ref = canonical(ids(T**3 * 2), io)
    before = io.writes
    ref = L.splice(ref, ref.count, ids(3 * T, salt=2), 0, io)
    # a few new leaves, then one page per level on the right edge
    assert io.writes - before <= 3 * T // 4 + 2 * depth(ref, io) + 4


def test_rewind_near_the_end_is_as_cheap_as_an_append() -> None:
    io = MemIO()
    items = ids(T**3 + 5)
    ref = canonical(items, io)
    before = io.writes
    got = L.splice(ref, ref.count - len(ref.tail), ids(1, salt=3), 0, io)  # within the tail
    assert got.tree == ref.tree or io.writes - before <= 2 * depth(got, io) + 2
    before = io.writes
    got = L.splice(ref, ref.count - len(ref.tail) - 3, ids(1, salt=3), 0, io)  # the last leaf
    assert io.writes - before <= 2 * depth(got, io) + 2
    assert L.read_ids(got, io) == items[: ref.count - len(ref.tail) - 3] + ids(1, salt=3)


@pytest.mark.parametrize("edit", ["first", "middle", "last", "delete", "insert", "compact"])
def test_an_edit_anywhere_stages_only_pages_on_its_path(edit: str) -> None:
    io = MemIO()
    items = ids(20_000)
    ref = canonical(items, io)
    n = len(items)
    new = {"first": ids(1, 7) + items[1:],
           "middle": items[: n // 2] + ids(1, 7) + items[n // 2 + 1:],
           "last": items[:-1] + ids(1, 7), "delete": items[: n // 3] + items[n // 3 + 1:],
           "insert": items[:100] + ids(2, 7) + items[100:],
           "compact": ids(1, 7) + items[n // 2:]}[edit]
    before = io.writes
    got = L.build(new, 0, io, L.tree_pages(ref, io))
    staged = io.writes - before
    assert got == canonical(new, io)
    assert L.read_ids(got, io) == new
    # the page holding the edit and its ancestors, and the neighbours whose boundary
    # the edit moved: a handful, against the ~1,300 pages of the tree
    assert staged <= 4 * depth(got, io) + 4, staged


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 900), keep_frac=st.floats(0, 1), add=st.integers(0, 200))
def test_a_fixed_fanout_tree_reads_and_is_rebuilt_on_its_first_write(
        n: int, keep_frac: float, add: int) -> None:
    io = MemIO()
    old = ids(n)
    ref = fixed(old, io)
    assert L.read_ids(ref, io) == old
    assert L.read_ids(ref, io, n // 3, n // 2 + 5) == old[n // 3 : n // 2 + 5]
    keep = int(n * keep_frac)
    got = L.splice(ref, keep, ids(add, salt=1), 0, io)
    assert got == canonical(old[:keep] + ids(add, salt=1), io)


def test_pages_of_both_forms_round_trip() -> None:
    kids = ids(5)
    counts = [1, 200, 3, 2**40, 16]
    page = decode_page_full(encode_page(3, kids, counts))
    assert (page.height, list(page), page.counts) == (3, kids, counts)
    leaf = decode_page_full(encode_page(0, kids))
    assert (leaf.height, list(leaf), leaf.counts) == (0, kids, None)
    for bad in (b"", encode_page(3, kids, counts)[:-1], bytes((0x80,)) + kids[0],
                encode_page(0, kids)[:-1]):
        with pytest.raises(ValueError):
            decode_page_full(bad)


def test_common_prefix() -> None:
    a = ids(5)
    assert L.common_prefix(a, a) == 5
    assert L.common_prefix(a, a[:3]) == 3
    assert L.common_prefix(a, ids(5, salt=9)) == 0
