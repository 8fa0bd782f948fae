"""A save that edits, deletes or compacts early in a long session writes O(log n) pages."""

from __future__ import annotations

import pytest
from support import msg, msgs

from cas_store import Store
from cas_store.backends import Commit
from cas_store.objects import Kind


@pytest.mark.parametrize("edit", ["first", "middle", "delete", "compact", "insert"])
def test_an_editing_save_writes_a_few_pages_and_no_old_chunk(store: Store, edit: str) -> None:
    n = 6000
    base = msgs(0, n)
    store.create("s", {"title": "t"}, base)
    new = {"first": [msg(10**6), *base[1:]],
           "middle": [*base[: n // 2], msg(10**6), *base[n // 2 + 1 :]],
           "delete": [*base[: n // 2], *base[n // 2 + 1 :]],
           "compact": [{"role": "system", "content": "summary"}, *base[n // 2 :]],
           "insert": [*base[:10], msg(10**6), *base[10:]]}[edit]
    seen: list[Commit] = []
    real = store.backend.commit

    def counting(change: Commit) -> None:
        seen.append(change)
        real(change)

    store.backend.commit = counting  # type: ignore[method-assign]
    store.save("s", new, intentional_shrink=True)
    store.backend.commit = real  # type: ignore[method-assign]
    (change,) = seen
    pages = [o for o in change.objects if o.kind == Kind.PAGE]
    chunks = [o for o in change.objects if o.kind == Kind.CHUNK]
    # ~375 leaves under 3 levels: the edited leaf, its neighbour and one page a level
    assert len(pages) <= 10, len(pages)
    assert len(chunks) <= 1  # only the new message; the re-sent ones are not rewritten
    assert store.load("s").messages == new
    assert store.version_state_id("s") == store.state_id(new, {"title": "t"})
    assert store.fsck().ok
