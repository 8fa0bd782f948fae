"""Regression tests for the incident this store exists to make impossible."""

from __future__ import annotations

import pytest
from support import msg, msgs

from cas_store import Store

STALE = {"active_stream_id": None, "pending_user_message": None}


@pytest.fixture
def long_session(store: Store) -> Store:
    store.create("chat", {"title": "a long one", "active_stream_id": "st-1",
                          "pending_user_message": "draft"}, msgs(0, 1000))
    return store


def test_metadata_only_load_then_clearing_stale_fields_keeps_every_message(
        long_session: Store) -> None:
    store = long_session
    meta = store.load_meta("chat")  # the "metadata only" load of the incident
    assert meta.message_count == 1000
    store.update_metadata("chat", STALE, expected=meta.seq)
    assert store.load_meta("chat").message_count == 1000
    assert store.load("chat").messages == msgs(0, 1000)
    assert store.load_meta("chat").metadata == {"title": "a long one"}


def test_the_metadata_only_object_cannot_be_saved_as_a_session(long_session: Store) -> None:
    meta = long_session.load_meta("chat")
    assert not hasattr(meta, "messages")
    with pytest.raises(TypeError):
        long_session.save("chat", metadata=meta.metadata)  # type: ignore[call-arg]


def test_a_wipe_is_kept_as_a_version_and_recovered(long_session: Store) -> None:
    store = long_session
    v = store.save("chat", messages=[], metadata={"title": "a long one"})
    assert v.suspect_shrink and v.message_count == 0
    assert store.load_version("chat", v.seq - 1).messages == msgs(0, 1000)
    report = store.recover()
    assert [(a.session_id, a.action, a.to_count) for a in report.actions] == [
        ("chat", "recovered", 1000)]
    assert store.load("chat").messages == msgs(0, 1000)


def test_a_wipe_then_two_appends_recovers_to_1002_in_order(long_session: Store) -> None:
    store = long_session
    store.save("chat", messages=[], metadata={"title": "a long one"})
    store.append("chat", [msg(5000)])
    store.append("chat", [msg(5001)])
    store.recover()
    assert store.load("chat").messages == [*msgs(0, 1000), msg(5000), msg(5001)]


def test_a_wipe_on_every_reconnect_loses_nothing(long_session: Store) -> None:
    store = long_session
    for k in range(3):  # wiped again on each reconnect, with a message typed in between
        store.save("chat", messages=[])
        store.append("chat", [msg(7000 + k)])
        store.update_metadata("chat", STALE)
    store.recover()
    assert store.load("chat").messages == [*msgs(0, 1000), msg(7000), msg(7001), msg(7002)]
