"""The session endpoints' contract, through the ASGI app."""

from __future__ import annotations

import json

from api_helpers import assert_error, create, msgs
from fastapi.testclient import TestClient

from cas_store import Store


def test_create_returns_201_location_etag_and_version(client: TestClient) -> None:
    r = client.post("/api/sessions", json={"session_id": "chat-1", "metadata": {"title": "Rome"},
                                           "messages": msgs("hi", "hello")})
    assert r.status_code == 201
    assert r.headers["location"] == "/api/sessions/chat-1"
    assert r.headers["etag"] == '"1"'
    v = r.json()
    assert v["session_id"] == "chat-1" and v["seq"] == 1 and v["op"] == "create"
    assert v["message_count"] == 2 and len(v["manifest"]) == 64
    assert isinstance(v["created_at"], float)


def test_create_generates_an_id_when_absent(client: TestClient) -> None:
    r = client.post("/api/sessions", json={})
    assert r.status_code == 201
    sid = r.json()["session_id"]
    assert r.headers["location"] == f"/api/sessions/{sid}"
    assert client.get(f"/api/sessions/{sid}").json()["messages"] == []


def test_create_existing_id_is_409(client: TestClient) -> None:
    create(client, "dup", 2)
    r = client.post("/api/sessions", json={"session_id": "dup", "messages": []})
    assert_error(r, 409, "session_exists")
    assert client.get("/api/sessions/dup").json()["message_count"] == 2  # untouched


def test_get_full_session(client: TestClient) -> None:
    create(client, "s", 3, title="T")
    r = client.get("/api/sessions/s")
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    body = r.json()
    for key in ("session_id", "metadata", "messages", "message_count", "seq", "manifest",
                "created_at", "updated_at"):
        assert key in body
    assert body["metadata"] == {"title": "T"}
    assert [m["content"] for m in body["messages"]] == ["m0", "m1", "m2"]
    assert body["message_count"] == 3


def test_meta_has_no_messages_and_reads_no_chunk(client: TestClient, api_store: Store) -> None:
    create(client, "s", 50, title="T")
    before = (api_store.reads["chunk"], api_store.reads["page"])
    r = client.get("/api/sessions/s/meta")
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    body = r.json()
    assert "messages" not in body
    assert body["message_count"] == 50 and body["metadata"] == {"title": "T"}
    assert (api_store.reads["chunk"], api_store.reads["page"]) == before


def test_messages_slices_and_negative_offset(client: TestClient) -> None:
    create(client, "s", 10)
    r = client.get("/api/sessions/s/messages", params={"offset": 2, "limit": 3})
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    body = r.json()
    assert [m["content"] for m in body["messages"]] == ["m2", "m3", "m4"]
    assert body["offset"] == 2 and body["message_count"] == 10 and body["seq"] == 1
    r = client.get("/api/sessions/s/messages", params={"offset": -2})
    assert [m["content"] for m in r.json()["messages"]] == ["m8", "m9"]
    assert r.json()["offset"] == 8
    r = client.get("/api/sessions/s/messages", params={"offset": -100, "limit": 1})
    assert [m["content"] for m in r.json()["messages"]] == ["m0"]
    r = client.get("/api/sessions/s/messages", params={"offset": 50})
    assert r.json()["messages"] == []


def test_append_returns_new_version(client: TestClient) -> None:
    create(client, "s", 1)
    r = client.post("/api/sessions/s/messages", json={"messages": msgs("a", "b")})
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    assert r.json()["op"] == "append" and r.json()["message_count"] == 3
    assert [m["content"] for m in client.get("/api/sessions/s").json()["messages"]] == [
        "m0", "a", "b"]


def test_put_replaces_and_flags_unintended_shrink(client: TestClient) -> None:
    create(client, "s", 4)
    r = client.put("/api/sessions/s", json={"metadata": {"title": "new"}, "messages": msgs("x")})
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    assert r.json()["suspect_shrink"] is True and r.json()["intentional_shrink"] is False
    r = client.put("/api/sessions/s", json={"metadata": {}, "messages": [],
                                            "intentional_shrink": True})
    assert r.json()["intentional_shrink"] is True and r.json()["suspect_shrink"] is False
    session = client.get("/api/sessions/s").json()
    assert session["messages"] == [] and session["metadata"] == {}


def test_put_that_only_grows_is_not_a_shrink(client: TestClient) -> None:
    create(client, "s", 2)
    full = client.get("/api/sessions/s").json()["messages"]
    r = client.put("/api/sessions/s", json={"metadata": {"a": 1}, "messages": [*full, *msgs("z")]})
    assert r.json()["suspect_shrink"] is False and r.json()["message_count"] == 3


def test_rewind_keeps_prefix_and_appends(client: TestClient) -> None:
    create(client, "s", 5)
    r = client.post("/api/sessions/s/rewind", json={"keep": 3, "messages": msgs("final")},
                    headers={"If-Match": '"1"'})
    assert r.status_code == 200
    v = r.json()
    assert v["op"] == "rewind" and v["intentional_shrink"] and not v["suspect_shrink"]
    contents = [m["content"] for m in client.get("/api/sessions/s").json()["messages"]]
    assert contents == ["m0", "m1", "m2", "final"]
    r = client.post("/api/sessions/s/rewind", json={"keep": 9})
    err = assert_error(r, 422, "invalid_argument")
    assert err["field"] == "keep"


def test_patch_with_json_and_merge_patch_content_types(client: TestClient) -> None:
    create(client, "s", 2, title="T", active_stream_id="abc", nested={"a": 1, "b": 2})
    r = client.patch("/api/sessions/s", json={"active_stream_id": None})
    assert r.status_code == 200 and r.json()["op"] == "update_metadata"
    r = client.patch("/api/sessions/s", content=json.dumps({"nested": {"a": None, "c": 3}}),
                     headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    session = client.get("/api/sessions/s").json()
    assert session["metadata"] == {"title": "T", "nested": {"b": 2, "c": 3}}
    assert session["message_count"] == 2


def test_patch_rejects_non_object(client: TestClient) -> None:
    create(client, "s")
    r = client.patch("/api/sessions/s", content="[1, 2]",
                     headers={"Content-Type": "application/merge-patch+json"})
    assert_error(r, 422, "invalid_argument")


def test_delete_then_404_then_restore(client: TestClient) -> None:
    create(client, "s", 3, title="keep me")
    r = client.delete("/api/sessions/s")
    assert r.status_code == 204 and r.content == b"" and r.headers["etag"] == '"2"'
    assert_error(client.get("/api/sessions/s"), 404, "session_not_found")
    assert_error(client.get("/api/sessions/s/meta"), 404, "session_not_found")
    assert client.get("/api/sessions").json()["sessions"] == []
    assert_error(client.delete("/api/sessions/s"), 404, "session_not_found")
    # Its versions stay, and restore brings it back.
    versions = client.get("/api/sessions/s/versions").json()["versions"]
    assert [v["op"] for v in versions] == ["delete", "create"]
    r = client.post("/api/sessions/s/restore", json={"seq": 1})
    assert r.status_code == 200 and r.json()["op"] == "restore" and r.json()["seq"] == 3
    session = client.get("/api/sessions/s").json()
    assert session["message_count"] == 3 and session["metadata"] == {"title": "keep me"}
    assert [s["session_id"] for s in client.get("/api/sessions").json()["sessions"]] == ["s"]


def test_deleted_sessions_listed_on_request(client: TestClient) -> None:
    create(client, "gone")
    client.delete("/api/sessions/gone")
    page = client.get("/api/sessions", params={"include_deleted": True}).json()
    assert [(s["session_id"], s["deleted"]) for s in page["sessions"]] == [("gone", True)]


def test_list_newest_first_with_cursor_pagination(client: TestClient) -> None:
    for i in range(7):
        create(client, f"s{i}", title=f"chat {i}")
    client.post("/api/sessions/s2/messages", json={"messages": msgs("bump")})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/sessions", params=params).json()
        pages += 1
        seen += [s["session_id"] for s in page["sessions"]]
        assert len(page["sessions"]) <= 3
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == ["s2", "s6", "s5", "s4", "s3", "s1", "s0"]
    first = client.get("/api/sessions", params={"limit": 1}).json()["sessions"][0]
    assert first["title"] == "chat 2" and first["message_count"] == 1
    assert "messages" not in first


def test_list_q_filters_on_title(client: TestClient) -> None:
    create(client, "a", title="Trip to Rome")
    create(client, "b", title="Groceries")
    create(client, "c", title="rome again")
    page = client.get("/api/sessions", params={"q": "rome"}).json()
    assert sorted(s["session_id"] for s in page["sessions"]) == ["a", "c"]
    assert client.get("/api/sessions", params={"q": "100%_"}).json()["sessions"] == []


def test_list_reads_no_message(client: TestClient, api_store: Store) -> None:
    for i in range(5):
        create(client, f"s{i}", 20)
    before = dict(api_store.reads)
    assert len(client.get("/api/sessions").json()["sessions"]) == 5
    assert dict(api_store.reads) == before


def test_bad_cursor_is_422(client: TestClient) -> None:
    err = assert_error(client.get("/api/sessions", params={"cursor": "!!not-a-cursor"}), 422,
                       "invalid_argument")
    assert err["field"] == "cursor"
