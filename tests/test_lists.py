from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from cas_store import lists as L
from cas_store.objects import Kind, Oid, encode_page, object_id

T = L.FANOUT


class MemIO:
    """Pages in a dict; counts writes so tests can bound what an edit rewrites."""

    def __init__(self) -> None:
        self.pages_by_id: dict[Oid, list[Oid]] = {}
        self.writes = 0

    def pages(self, oids: Sequence[Oid]) -> dict[Oid, list[Oid]]:
        return {o: self.pages_by_id[o] for o in oids}

    def put_page(self, height: int, children: Sequence[Oid]) -> Oid:
        oid = object_id(Kind.PAGE, encode_page(height, children))
        self.pages_by_id[oid] = list(children)
        self.writes += 1
        return oid


def ids(n: int, salt: int = 0) -> list[Oid]:
    return [object_id(Kind.CHUNK, f"{salt}:{i}".encode()) for i in range(n)]


def canonical(items: list[Oid], io: MemIO) -> L.ListRef:
    """Build the list bottom-up from scratch: the reference the incremental edits must match."""
    full = len(items) // T * T
    level = [io.put_page(0, items[i : i + T]) for i in range(0, full, T)]
    h = 0
    while len(level) > 1:
        h += 1
        level = [io.put_page(h, level[i : i + T]) for i in range(0, len(level), T)]
    return L.ListRef(len(items), 0, level[0] if level else None, tuple(items[full:]))


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
    ref = canonical(ids(T**3 * 2), io)  # a full tree of height 4 … well past one level
    before = io.writes
    ref = L.splice(ref, ref.count, ids(T, salt=2), 0, io)  # fills one leaf exactly
    assert io.writes - before <= L.height(ref.frozen // T) + 1


def test_rewind_near_the_end_is_as_cheap_as_an_append() -> None:
    io = MemIO()
    items = ids(T**3 + 5)
    ref = canonical(items, io)
    before = io.writes
    got = L.splice(ref, ref.count - 3, ids(1, salt=3), 0, io)  # within the tail
    assert io.writes == before
    got = L.splice(ref, ref.count - 10, ids(1, salt=3), 0, io)  # cuts into the last leaf
    assert io.writes - before <= L.height(ref.frozen // T) + 1
    assert L.read_ids(got, io) == items[:-10] + ids(1, salt=3)


def test_common_prefix() -> None:
    a = ids(5)
    assert L.common_prefix(a, a) == 5
    assert L.common_prefix(a, a[:3]) == 3
    assert L.common_prefix(a, ids(5, salt=9)) == 0
