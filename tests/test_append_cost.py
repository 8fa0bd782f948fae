"""What an append writes is O(1): the message's chunk plus well under 1 KiB, at any length."""

from __future__ import annotations

import pytest
from support import msg, msgs

from cas_store import Store
from cas_store.backends import Commit
from cas_store.objects import Kind


def _written_per_append(store: Store, n: int, appends: int) -> tuple[float, int]:
    store.create("s", {"title": "t", "big": "x" * 5000}, msgs(0, n))
    sizes: list[int] = []
    real = store.backend.commit

    def counting(change: Commit) -> None:
        sizes.append(sum(len(o.frame) for o in change.objects
                         if o.frame is not None and o.kind != Kind.CHUNK))
        assert all(o.kind != Kind.META for o in change.objects), "append rewrote metadata"
        real(change)

    store.backend.commit = counting  # type: ignore[method-assign]
    for i in range(appends):
        store.append("s", [msg(n + i)])
    store.backend.commit = real  # type: ignore[method-assign]
    return sum(sizes) / len(sizes), max(sizes)


@pytest.mark.parametrize("n", [100, 3000, 20000])
def test_append_writes_a_bounded_number_of_bytes(store: Store, n: int) -> None:
    mean, worst = _written_per_append(store, n, 64)
    # Objects only; the log entry and head row add ~150 bytes (see bench/append_cost.py).
    assert mean < 700
    # The append that ends a page writes it and one page a level on the right edge:
    # content-defined pages hold up to 64 ids (2 KiB each), so a few KiB at worst.
    assert worst < 8192
