from __future__ import annotations

import pytest
from support import msg, msgs

from cas_store import Store

# Run on every backend (tests/conftest.py).
pytestmark = pytest.mark.all_backends

DAY = 86400.0


def test_recover_is_idempotent(store: Store) -> None:
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])
    first = store.recover()
    assert len(first.recovered) == 1
    head = store.versions("s")[0]
    assert head.op == "recover"
    again = store.recover()
    assert again.actions == []
    assert store.recover("s").actions == []
    assert store.versions("s")[0] == head


def test_dry_run_changes_nothing(store: Store) -> None:
    store.create("s", {}, msgs(0, 10))
    store.save("s", msgs(0, 2))
    report = store.recover(dry_run=True)
    assert [(a.action, a.from_count, a.to_count) for a in report.actions] == [
        ("would_recover", 2, 10)]
    assert store.load_meta("s").message_count == 2
    assert len(store.versions("s")) == 2


def test_intentional_shrinks_are_left_alone(store: Store) -> None:
    store.create("s", {}, msgs(0, 10))
    store.save("s", msgs(0, 3), intentional_shrink=True)
    store.rewind("s", 1, [msg(100)])
    assert store.recover().actions == []
    assert store.load("s").messages == [msg(0), msg(100)]


def test_an_intentional_shrink_after_the_wipe_is_not_undone(store: Store) -> None:
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])  # the accident
    store.append("s", msgs(100, 103))
    store.rewind("s", 2, [msg(200)])  # retry of the last message: deliberate
    store.recover()
    assert store.load("s").messages == [*msgs(0, 10), msg(100), msg(101), msg(200)]


def test_newest_metadata_is_kept(store: Store) -> None:
    store.create("s", {"title": "old"}, msgs(0, 10))
    store.save("s", [], {"title": "old"})
    store.update_metadata("s", {"title": "new"})
    store.recover()
    s = store.load("s")
    assert s.messages == msgs(0, 10) and s.metadata == {"title": "new"}


def test_partial_cut_is_recovered(store: Store) -> None:
    store.create("s", {}, msgs(0, 40))
    store.save("s", msgs(0, 17))
    store.append("s", [msg(500)])
    store.recover()
    assert store.load("s").messages == [*msgs(0, 40), msg(500)]


def test_an_unreviewed_shrink_is_recovered_however_old(store: Store) -> None:
    # The window bounds how far back recovery reads, not whether an unreviewed suspect
    # shrink counts: an imported wipe keeps its file's old times.
    now = [1_000_000.0]
    store.clock = lambda: now[0]
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])
    now[0] += 400 * DAY
    assert len(store.recover().recovered) == 1
    assert store.load_meta("s").message_count == 10
    assert store.recover().actions == []  # resolved: nothing more to do


def test_a_rewriting_shrink_is_reported_not_guessed(store: Store) -> None:
    store.create("s", {}, msgs(0, 10))
    store.save("s", [*msgs(0, 4), msg(99)])  # not a cut: a message changed
    report = store.recover()
    assert [a.action for a in report.actions] == ["skipped"]
    assert "restore by hand" in report.actions[0].reason
    assert store.load_meta("s").message_count == 5


def test_a_restore_resolves_the_shrink(store: Store) -> None:
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])
    store.restore("s", 1)
    assert store.recover().actions == []
    assert store.list_sessions().sessions[0].suspect_shrink is False


def test_suspect_marker_is_listed_until_resolved(store: Store) -> None:
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])
    store.append("s", [msg(1)])
    assert store.list_sessions().sessions[0].suspect_shrink is True
    store.recover()
    assert store.list_sessions().sessions[0].suspect_shrink is False


def test_deleted_sessions_are_not_recovered(store: Store) -> None:
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])
    store.delete("s")
    assert store.recover().actions == []


def test_recover_one_session_only(store: Store) -> None:
    for sid in ("a", "b"):
        store.create(sid, {}, msgs(0, 5))
        store.save(sid, [])
    report = store.recover("a")
    assert [a.session_id for a in report.actions] == ["a"]
    assert store.load_meta("b").message_count == 0


def test_a_new_life_never_brings_back_the_deleted_one(store: Store) -> None:
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])  # wiped, never recovered
    store.delete("s")
    store.create("s", {}, [msg(100), msg(101)])  # the id used again
    store.save("s", [])  # and wiped
    report = store.recover()
    assert [(a.action, a.to_count) for a in report.actions] == [("recovered", 2)]
    assert store.load("s").messages == [msg(100), msg(101)]
