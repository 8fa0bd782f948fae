"""Store.splice: per-list keep-and-append from a base version, one intentional version."""

from __future__ import annotations

import pytest

from cas_store import InvalidArgument, Store


def test_splice_appends_and_replaces_metadata_in_one_version(store: Store) -> None:
    store.create("s", {"title": "a"}, [{"i": 0}], lists={"log": [1, 2]})
    v = store.splice("s", {"messages": (1, [{"i": 1}]), "log": (2, [3])}, metadata={"k": 1})
    got = store.load("s")
    assert got.messages == [{"i": 0}, {"i": 1}] and got.lists == {"log": [1, 2, 3]}
    assert got.metadata == {"k": 1} and v.seq == 2
    assert not v.intentional_shrink and not v.suspect_shrink


def test_splice_from_an_older_base_is_an_intentional_shrink(store: Store) -> None:
    store.create("s", {}, [{"i": 0}])
    store.append("s", [{"i": 1}, {"i": 2}])
    v = store.splice("s", {"messages": (1, [{"i": 9}])}, base=1)
    assert store.load("s").messages == [{"i": 0}, {"i": 9}]
    assert v.intentional_shrink and not v.suspect_shrink
    # The branch left behind is still a version.
    assert store.load("s", seq=2).messages == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_splice_keeps_lists_not_named_and_empties_to_nothing(store: Store) -> None:
    store.create("s", {}, [{"i": 0}], lists={"log": [1]})
    store.splice("s", {"messages": (0, [])})
    got = store.load("s")
    assert got.messages == [] and got.lists == {"log": [1]}


def test_splice_rejects_bad_edits(store: Store) -> None:
    store.create("s", {}, [{"i": 0}])
    with pytest.raises(InvalidArgument):
        store.splice("s", {})
    with pytest.raises(InvalidArgument):
        store.splice("s", {"messages": (5, [])})
    with pytest.raises(InvalidArgument):
        store.splice("s", {"bad name!": (0, [])})
    assert store.load("s").seq == 1
