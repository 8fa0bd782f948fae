"""Engine pieces the JSON-directory import relies on: state ids, batches, creation times."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support import msgs

from cas_store import Op, Store, errors, open_store


def test_state_id_matches_the_stored_state(store: Store) -> None:
    meta = {"title": "t", "tags": ["a"]}
    lists = {"context_messages": [{"role": "system", "content": "x"}, 3, "s"], "empty": []}
    sid = store.state_id(msgs(0, 40), meta, lists=lists)
    v = store.create("a", meta, msgs(0, 40), lists=lists)
    assert store.version_state_id("a") == sid == store.version_state_id("a", seq=v.seq)
    # Any difference in messages, metadata or lists gives another id.
    assert store.state_id(msgs(0, 39), meta, lists=lists) != sid
    assert store.state_id(msgs(0, 40), {"title": "u"}, lists=lists) != sid
    assert store.state_id(msgs(0, 40), meta, lists={"context_messages": [3]}) != sid
    # An empty extra list is no list at all.
    assert store.state_id(msgs(0, 40), meta, lists={"context_messages": lists[
        "context_messages"]}) == sid


def test_state_id_sees_through_delta_manifests(store: Store) -> None:
    store.create("a", {"title": "t"}, msgs(0, 5))
    store.append("a", msgs(5, 7))
    store.update_metadata("a", {"title": "u"})
    assert store.version_state_id("a") == store.state_id(msgs(0, 7), {"title": "u"})
    store.delete("a")
    head = store.versions("a")[0].seq
    assert store.version_state_id("a", seq=head) == store.state_id(msgs(0, 7), {"title": "u"})


def test_state_id_validates_like_create(store: Store) -> None:
    with pytest.raises(errors.InvalidMessage):
        store.state_id([{"a": 1}, "text"])
    with pytest.raises(errors.InvalidMetadata):
        store.state_id([], [1])  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument):
        store.state_id([], {}, lists={"bad name": [1]})
    with pytest.raises(errors.SessionNotFound):
        store.version_state_id("nope")


def test_create_with_an_older_creation_time(store: Store) -> None:
    store.create("a", {}, msgs(0, 1), at=2000.0, created_at=1000.0, op=Op.IMPORT)
    meta = store.load_meta("a")
    assert (meta.created_at, meta.updated_at) == (1000.0, 2000.0)
    assert store.versions("a")[0].op == "import"


def test_import_create_of_a_deleted_session_is_a_new_life(store: Store) -> None:
    store.create("a", {}, msgs(0, 3), at=10.0)
    store.save("a", [], at=20.0)  # a suspect shrink, pending
    store.delete("a", at=30.0)
    store.create("a", {}, msgs(0, 1), at=40.0, created_at=35.0, op=Op.IMPORT)
    row = store.list_sessions().sessions[0]
    assert row.created_at == 35.0 and not row.suspect_shrink


def test_paged_reads_of_a_named_list(store: Store) -> None:
    items = list(range(100))
    store.create("a", {}, msgs(0, 2), lists={"nums": items})
    assert store.messages("a", 10, 5, list_name="nums") == items[10:15]
    assert store.messages("a", -3, list_name="nums") == items[-3:]
    assert store.messages("a", list_name="absent") == []
    assert store.messages("a") == msgs(0, 2)


def test_batch_commits_together(store: Store, store_path: Path) -> None:
    other = open_store(store_path)
    with store.batch():
        store.create("a", {}, msgs(0, 2))
        store.append("a", msgs(2, 3))
        store.create("b", {}, msgs(0, 1))
        # Readers elsewhere do not see the batch before it ends.
        assert other.list_sessions().sessions == []
        assert store.load("a").messages == msgs(0, 3)
    assert {s.session_id for s in other.list_sessions().sessions} == {"a", "b"}
    other.close()


def test_batch_rolls_back_whole_on_error(store: Store) -> None:
    store.create("keep", {}, msgs(0, 1))
    with pytest.raises(RuntimeError), store.batch():
        store.create("a", {}, msgs(0, 2))
        store.append("keep", msgs(1, 2))
        raise RuntimeError("crash in the middle")
    with pytest.raises(errors.SessionNotFound):
        store.load("a")
    assert store.load("keep").messages == msgs(0, 1)
    store.create("a", {}, msgs(0, 1))  # the store is usable afterwards


def test_a_failed_commit_inside_a_batch_undoes_only_itself(store: Store) -> None:
    store.create("a", {}, msgs(0, 1))
    with store.batch():
        store.create("b", {}, msgs(0, 1))
        with pytest.raises(errors.Conflict):
            store.append("a", msgs(1, 2), expected=7)
        with pytest.raises(errors.SessionExists):
            store.create("b", {}, [])
        store.append("a", msgs(1, 2))
    assert store.load("a").messages == msgs(0, 2)
    assert store.load("b").messages == msgs(0, 1)


def test_batch_cannot_nest(store: Store) -> None:
    with store.batch(), pytest.raises(errors.StorageError), store.batch():
        pass


def test_batch_holds_off_other_writers_until_it_ends(store: Store, store_path: Path) -> None:
    other = open_store(store_path)
    done = threading.Event()

    def write() -> None:
        other.create("late", {}, msgs(0, 1))
        done.set()

    with store.batch():
        store.create("early", {}, msgs(0, 1))
        t = threading.Thread(target=write)
        t.start()
        assert not done.wait(0.3)  # blocked on the write lock, not failed
    t.join(10)
    assert done.is_set()
    assert [v.seq for v in store.versions("late")] == [1]
    other.close()
