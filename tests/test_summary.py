"""A chat sidebar from the session list alone: summary metadata beside the head, filters."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import msgs

from cas_store import Limits, Store, open_store
from cas_store.api import create_app
from cas_store.api.settings import Settings
from cas_store.errors import InvalidArgument


def _sidebar(store: Store) -> None:
    store.create("a", {"title": "A", "pinned": True, "project_id": "p1", "model": "m1",
                       "input_tokens": 10, "ignored_key": "x"}, msgs(0, 2), at=1.0)
    store.create("b", {"title": "B", "archived": True, "project_id": "p1"}, [], at=2.0)
    store.create("c", {"title": "C", "project_id": "p2", "archived": False}, [], at=3.0)
    store.create("d", {"title": "D"}, [], at=4.0)


def test_summary_values_come_with_the_list_without_reading_a_manifest(store: Store) -> None:
    _sidebar(store)
    store.reads.clear()
    rows = {s.session_id: s for s in store.list_sessions().sessions}
    assert sum(store.reads.values()) == 0  # no object read at all
    assert rows["a"].metadata == {"pinned": True, "project_id": "p1", "model": "m1",
                                  "input_tokens": 10}
    assert rows["d"].metadata == {}
    assert rows["a"].to_json()["metadata"]["pinned"] is True


def test_filters_and_pinned_first(store: Store) -> None:
    _sidebar(store)

    def ids(**kw: object) -> list[str]:
        return [s.session_id for s in store.list_sessions(**kw).sessions]  # type: ignore[arg-type]

    assert ids() == ["d", "c", "b", "a"]
    assert ids(where={"archived": False}) == ["d", "c", "a"]  # never archived counts
    assert ids(where={"project_id": "p1"}) == ["b", "a"]
    assert ids(where={"project_id": "p1", "archived": False}) == ["a"]
    assert ids(where={"project_id": None}) == ["d"]
    assert ids(where={"input_tokens": 10}) == ["a"]
    assert ids(pinned_first=True) == ["a", "d", "c", "b"]
    assert ids(pinned_first=True, where={"pinned": False}) == ["d", "c", "b"]
    with pytest.raises(InvalidArgument):
        store.list_sessions(where={"not_a_summary_key": 1})


def test_pinned_first_pages_through_every_session_once(store: Store) -> None:
    for i in range(9):
        store.create(f"s{i}", {"pinned": i % 3 == 0}, [], at=float(i))
    seen, cursor = [], None
    while True:
        page = store.list_sessions(limit=2, cursor=cursor, pinned_first=True)
        seen += [s.session_id for s in page.sessions]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["s6", "s3", "s0", "s8", "s7", "s5", "s4", "s2", "s1"]
    # A page that ends exactly at the end of the pinned part.
    page = store.list_sessions(limit=3, pinned_first=True)
    assert [s.session_id for s in page.sessions] == ["s6", "s3", "s0"]
    nxt = store.list_sessions(limit=3, cursor=page.next_cursor, pinned_first=True)
    assert [s.session_id for s in nxt.sessions] == ["s8", "s7", "s5"]


def test_every_write_keeps_the_summary_current(store: Store) -> None:
    store.create("s", {"pinned": False, "model": "m1"}, msgs(0, 3))
    store.update_metadata("s", {"pinned": True})
    assert store.list_sessions().sessions[0].metadata == {"pinned": True, "model": "m1"}
    store.append("s", msgs(3, 4))
    assert store.list_sessions().sessions[0].metadata["pinned"] is True
    store.save("s", msgs(0, 4), {"model": "m2"})
    assert store.list_sessions().sessions[0].metadata == {"model": "m2"}
    store.restore("s", 1)
    assert store.list_sessions().sessions[0].metadata == {"pinned": False, "model": "m1"}
    store.fork("s", "f")
    rows = {r.session_id: r.metadata for r in store.list_sessions().sessions}
    assert rows["f"] == {"pinned": False, "model": "m1"}


def test_summary_keys_are_configurable(tmp_path: Path) -> None:
    with open_store(tmp_path / "k.db", limits=Limits(summary_keys=("color",))) as store:
        store.create("s", {"color": "red", "pinned": True, "long": "x" * 1000}, [])
        assert store.list_sessions().sessions[0].metadata == {"color": "red"}
        assert store.list_sessions(where={"color": "red"}).sessions


def test_api_lists_filters_and_pins(store: Store) -> None:
    _sidebar(store)
    settings = Settings(store=store.backend.location, allowed_hosts=["testserver"])
    with TestClient(create_app(settings, store=store, static_dir=None)) as client:
        r = client.get("/api/sessions", params={"archived": "false", "project_id": "p1"})
        assert r.status_code == 200
        assert [s["session_id"] for s in r.json()["sessions"]] == ["a"]
        assert r.json()["sessions"][0]["metadata"]["pinned"] is True
        r = client.get("/api/sessions", params={"pinned_first": "true"})
        assert [s["session_id"] for s in r.json()["sessions"]] == ["a", "d", "c", "b"]
        r = client.get("/api/sessions", params={"input_tokens": "10"})
        assert [s["session_id"] for s in r.json()["sessions"]] == ["a"]


def test_a_damaged_summary_lists_as_empty_and_fails_nothing(tmp_path: Path) -> None:
    # SQLite keeps no checksum of a text value: a summary whose bytes were damaged must
    # not fail every list (or filter) that reaches its row. The metadata itself is intact.
    path = tmp_path / "s.db"
    with open_store(path) as store:
        _sidebar(store)
    with sqlite3.connect(path) as con:
        con.execute("UPDATE sessions SET summary = '{\"pinned\": tru' WHERE sid = 'a'")
    with open_store(path) as store:
        rows = {s.session_id: s for s in store.list_sessions().sessions}
        assert list(rows) == ["d", "c", "b", "a"] and rows["a"].metadata == {}
        assert [s.session_id for s in store.list_sessions(where={"project_id": "p1"}).sessions
                ] == ["b"]
        assert [s.session_id for s in store.list_sessions(pinned_first=True).sessions
                ] == ["d", "c", "b", "a"]
        assert store.load_meta("a").metadata["pinned"] is True
        store.update_metadata("a", {"model": "m2"})  # the next commit writes it anew
        assert store.list_sessions(where={"pinned": True}).sessions[0].metadata["model"] == "m2"
