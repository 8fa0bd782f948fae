"""Hardening through the app: Host allow-list, strict JSON, HEAD, search, storage faults."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import assert_error, create, make_app
from fastapi.testclient import TestClient

from cas_store import Store, open_store
from cas_store.api.bodies import container_count, parse_json
from cas_store.api.errors import ApiError
from cas_store.api.hosts import host_name
from cas_store.backends.sqlite import SQLiteBackend
from cas_store.errors import CorruptStore, StorageError, StoreLocked

JSON = {"Content-Type": "application/json"}


def rows(store: Store) -> list[Any]:
    with sqlite3.connect(store.backend.location) as con:
        out = con.execute("SELECT sid, seq FROM versions ORDER BY sid, seq").fetchall()
    con.close()
    return out


# --- Host allow-list (DNS rebinding) ------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "[::2]:8000", "10.0.0.1"])
def test_foreign_host_is_refused_before_any_store_access(api_store: Store, host: str) -> None:
    with TestClient(make_app(api_store, allowed_hosts=[]), base_url="http://localhost") as c:
        create(c, "chat", 2)
        before = rows(api_store)
        h = {"Host": host}
        for method, path in [("GET", "/api/sessions"), ("GET", "/api/sessions/chat"),
                             ("DELETE", "/api/sessions/chat"), ("GET", "/api/health"),
                             ("POST", "/api/sessions/chat/messages"), ("GET", "/"),
                             ("GET", "/app.js"), ("GET", "/openapi.json")]:
            r = c.request(method, path, headers=h,
                          content=b'{"messages":[{"c":1}]}' if method == "POST" else None)
            err = assert_error(r, 421, "host_not_allowed")
            assert "--allowed-host" in err["message"]
            assert "chat" not in r.text
        assert rows(api_store) == before
        assert c.get("/api/sessions/chat").status_code == 200


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST:1", "127.0.0.1",
                                  "127.0.0.1:8000", "[::1]", "[::1]:8000", "::1", "127.8.0.1"])
def test_loopback_names_with_or_without_port_are_accepted(api_store: Store, host: str) -> None:
    with TestClient(make_app(api_store, allowed_hosts=[])) as c:
        assert c.get("/api/health", headers={"Host": host}).status_code == 200
        assert c.get("/", headers={"Host": host}).status_code == 200


def test_allowed_hosts_from_settings_flag_and_environment(
        api_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(make_app(api_store, allowed_hosts=["chat.example", "b.example"])) as c:
        assert c.get("/api/health", headers={"Host": "chat.example:443"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "B.example"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "c.example"}).status_code == 421
    monkeypatch.setenv("CAS_STORE_ALLOWED_HOSTS", "env.example, other.example")
    from cas_store.api import Settings, create_app

    app = create_app(Settings(store=api_store.backend.location), store=api_store)
    with TestClient(app) as c:
        assert c.get("/api/health", headers={"Host": "env.example"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "other.example:1"}).status_code == 200
        assert c.get("/api/health").status_code == 421  # "testserver" is not listed
    with TestClient(make_app(api_store, host="127.0.0.2", allowed_hosts=[])) as c:
        assert c.get("/api/health", headers={"Host": "127.0.0.2:9"}).status_code == 200
    with TestClient(make_app(api_store, allowed_hosts=["*"])) as c:
        assert c.get("/api/health", headers={"Host": "anything.example"}).status_code == 200


def test_host_name_parsing() -> None:
    assert host_name("[::1]:8000") == "::1"
    assert host_name("::1") == "::1"
    assert host_name("Example.COM.:80") == "example.com"
    assert host_name("localhost") == "localhost"


# --- strict JSON bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/sessions", '{"session_id":"a","session_id":"b"}'),
    ("POST", "/api/sessions/chat/messages", '{"messages":[{"role":"user","role":"system"}]}'),
    ("POST", "/api/sessions/chat/messages", '{"messages":[],"messages":[{"c":1}]}'),
    ("PATCH", "/api/sessions/chat", '{"title":"a","title":"b"}'),
    ("PUT", "/api/sessions/chat", '{"metadata":{"k":{"x":1,"x":2}},"messages":[]}'),
])
def test_duplicate_keys_are_refused_with_400(client: TestClient, api_store: Store,
                                             method: str, path: str, body: str) -> None:
    create(client, "chat", 1)
    before = rows(api_store)
    r = client.request(method, path, content=body, headers=JSON)
    err = assert_error(r, 400, "invalid_json")
    assert "duplicate key" in err["message"]
    assert rows(api_store) == before


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/plain", b'{"messages":[]}'), ("application/x-www-form-urlencoded", b"messages=x"),
    ("application/xml", b"<messages/>"), ("application/octet-stream", b'{"messages":[]}'),
    ("multipart/form-data; boundary=x", b"--x--"), (None, b'{"messages":[]}'),
])
def test_non_json_body_is_415_naming_what_is_accepted(client: TestClient, api_store: Store,
                                                      content_type: str | None,
                                                      body: bytes) -> None:
    create(client, "chat", 1)
    before = rows(api_store)
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/api/sessions/chat/messages", content=body, headers=headers)
    err = assert_error(r, 415, "unsupported_media_type")
    assert "application/json" in err["message"] and err["accepted"]
    assert rows(api_store) == before
    # JSON with parameters, and merge patches, are JSON.
    ok = client.post("/api/sessions/chat/messages", content=b'{"messages":[{"c":1}]}',
                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200
    assert client.patch("/api/sessions/chat", content=b'{"t":1}',
                        headers={"Content-Type": "application/merge-patch+json"}
                        ).status_code == 200


def test_message_cap_is_413_before_anything_is_written(api_store: Store) -> None:
    with TestClient(make_app(api_store, max_messages=10)) as c:
        create(c, "chat", 10)
        before = rows(api_store)
        many = [{"c": i} for i in range(11)]
        for method, path, body in [
            ("POST", "/api/sessions/chat/messages", {"messages": many}),
            ("PUT", "/api/sessions/chat", {"metadata": {}, "messages": many}),
            ("POST", "/api/sessions/chat/rewind", {"keep": 0, "messages": many}),
            ("POST", "/api/sessions", {"session_id": "new", "messages": many}),
        ]:
            r = c.request(method, path, json=body)
            err = assert_error(r, 413, "too_many_messages")
            assert err["limit"] == 10
        assert rows(api_store) == before
        assert c.post("/api/sessions/chat/messages",
                      json={"messages": many[:10]}).status_code == 200
        # A metadata key called "messages" is metadata, not messages.
        assert c.patch("/api/sessions/chat", json={"messages": list(range(20))}
                       ).status_code == 200


def test_dense_bodies_are_refused_before_parsing(client: TestClient, api_store: Store) -> None:
    create(client, "chat", 1)
    before = rows(api_store)
    flood = b'{"k":[' + b",".join([b"{}"] * 20_000) + b"]}"
    err = assert_error(client.patch("/api/sessions/chat", content=flood, headers=JSON),
                       413, "too_many_values")
    assert err["limit"] == 10_000
    lists = b'{"messages":[{"c":[' + b",".join([b"[]"] * 20_000) + b"]}]}"
    assert_error(client.post("/api/sessions/chat/messages", content=lists, headers=JSON),
                 413, "too_many_values")
    assert rows(api_store) == before
    # Braces inside strings are text, not structure.
    text = {"messages": [{"c": "{[" * 20_000}]}
    assert client.post("/api/sessions/chat/messages", json=text).status_code == 200


def test_parse_json_counts_structure_not_strings() -> None:
    assert container_count(b'{"a":"{{[[","b":[{}]}') == 3
    assert container_count(b'{"a":"\\"{"}') == 1
    with pytest.raises(ApiError) as info:
        parse_json(b'{"a":1,"a":2}')
    assert info.value.status_code == 400


# --- HEAD and search --------------------------------------------------------------------------


def test_head_works_on_get_routes(client: TestClient) -> None:
    create(client, "chat", 3)
    for path in ["/api/sessions/chat", "/api/sessions/chat/meta", "/api/sessions",
                 "/api/sessions/chat/versions", "/api/sessions/chat/versions/1",
                 "/api/sessions/chat/messages", "/api/health", "/", "/app.js"]:
        got = client.get(path)
        head = client.head(path)
        assert head.status_code == 200 == got.status_code, (path, head.text)
        assert head.content == b""
        assert head.headers.get("etag") == got.headers.get("etag")
        assert head.headers["content-length"] == got.headers["content-length"]
    assert client.head("/api/sessions/nope").status_code == 404
    r = client.request("TRACE", "/api/sessions/chat")
    assert "HEAD" in r.headers["allow"] and "GET" in r.headers["allow"]


@pytest.mark.parametrize("q", ["\x00", "a\x00", "\x01", "\x1f", "\x7f", "\t"])
def test_control_characters_in_q_are_matched_literally(client: TestClient, q: str) -> None:
    create(client, "plain", 0, title="nothing special")
    create(client, "odd", 0, title=f"x{q}y")
    r = client.get("/api/sessions", params={"q": q})
    assert r.status_code == 200, r.text
    assert [s["session_id"] for s in r.json()["sessions"]] == ["odd"]


# --- storage faults inside a write ---------------------------------------------------------


def test_read_only_store_is_503_without_retry_after_and_reads_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ro.db"
    with open_store(path) as s:
        s.create("chat", {}, [{"c": 1}])
    original = SQLiteBackend._con

    def con(self: SQLiteBackend) -> sqlite3.Connection:
        c = original(self)
        c.execute("PRAGMA query_only = ON")
        return c

    monkeypatch.setattr(SQLiteBackend, "_con", con)
    store = open_store(path)
    with TestClient(make_app(store), raise_server_exceptions=False) as c:
        for _ in range(3):  # and again: the connection is still usable
            r = c.post("/api/sessions/chat/messages", json={"messages": [{"c": 2}]})
            err = assert_error(r, 503, "storage_error")
            assert "read-only" in err["message"]
            assert "retry-after" not in r.headers
            assert c.get("/api/sessions/chat").json()["message_count"] == 1
    store.close()


def test_busy_store_is_503_store_locked_with_retry_after(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    store = Store(SQLiteBackend(path, busy_timeout=0.2))
    store.create("chat", {}, [{"c": 1}])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with TestClient(make_app(store)) as c:
            r = c.post("/api/sessions/chat/messages", json={"messages": [{"c": 2}]})
            assert_error(r, 503, "store_locked")
            assert r.headers["retry-after"] == "1"
            holder.execute("ROLLBACK")
            r = c.post("/api/sessions/chat/messages", json={"messages": [{"c": 2}]})
            assert r.status_code == 200, r.text
    finally:
        holder.close()
        store.close()


def test_disk_full_inside_a_write_is_storage_error_and_the_store_goes_on(
        tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "full.db")
    store = Store(backend)
    store.create("chat", {}, [{"c": 1}])
    con = backend._con()
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.execute(f"PRAGMA max_page_count = {pages}")  # this connection's disk is now full
    big = [{"c": os.urandom(6000).hex()} for _ in range(20)]  # does not compress
    with pytest.raises(StorageError) as info:
        store.append("chat", big)
    assert not isinstance(info.value, StoreLocked) and not info.value.retryable
    assert "disk is full" in info.value.message
    assert store.load("chat").messages == [{"c": 1}]  # nothing half-written
    con.execute("PRAGMA max_page_count = 1073741823")
    assert store.append("chat", big).message_count == 21
    store.close()


def damage(path: Path, page: int, data: bytes) -> None:
    """Overwrite one page of a closed SQLite file (its WAL folded in first)."""
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with path.open("r+b") as f:
        f.seek(page * size)
        f.write(data[:size].ljust(size, b"\xa5"))


@pytest.fixture
def damaged(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "damaged.db"
    with open_store(path) as s:
        for i in range(30):
            s.create(f"s{i}", {"title": f"t{i}"}, [{"c": "x" * 3000, "i": j} for j in range(5)])
    with sqlite3.connect(path) as con:
        pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.close()
    for p in range(2, pages, 3):
        damage(path, p, bytes(range(256)) * 20)
    yield path


def test_malformed_database_is_corrupt_store_and_the_server_answers_on(damaged: Path) -> None:
    store = open_store(damaged)
    with TestClient(make_app(store), raise_server_exceptions=False) as c:
        codes = set()
        for i in range(30):
            r = c.get(f"/api/sessions/s{i}")
            codes.add(r.status_code)
            if r.status_code != 200:
                err = assert_error(r, 500, "corrupt_store") if r.status_code == 500 else None
                assert err is not None, r.text
                assert "fsck" in err["message"]
        r = c.post("/api/sessions", json={"session_id": "new", "messages": [{"c": 1}]})
        assert r.status_code in (201, 500)
        if r.status_code == 500:
            assert_error(r, 500, "corrupt_store")
        assert c.get("/api/health").status_code == 200
        assert 500 in codes
    store.close()


def test_corrupt_store_maps_in_the_backend(damaged: Path) -> None:
    store = open_store(damaged)
    with pytest.raises(CorruptStore):
        for head in list(store.backend.iter_heads()):
            store.load(head.sid)
        list(store.backend.iter_objects())
    store.close()


def test_body_is_parsed_once_and_kept_in_order(client: TestClient) -> None:
    create(client, "chat", 0)
    messages = [{"z": 1, "a": 2, "m": [1, {"k": None}]}]
    r = client.post("/api/sessions/chat/messages", content=json.dumps({"messages": messages}),
                    headers=JSON)
    assert r.status_code == 200
    assert client.get("/api/sessions/chat").json()["messages"] == messages
