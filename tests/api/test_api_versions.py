"""History endpoints (versions, old states, diff, restore, fork), recovery and health."""

from __future__ import annotations

from api_helpers import assert_error, create, msgs
from fastapi.testclient import TestClient

from cas_store import Store


def _history(client: TestClient) -> None:
    create(client, "s", 2, title="v1")                                   # 1
    client.post("/api/sessions/s/messages", json={"messages": msgs("a")})  # 2
    client.patch("/api/sessions/s", json={"title": "v3"})                  # 3
    client.put("/api/sessions/s", json={"metadata": {"title": "v3"},      # 4: suspect
                                        "messages": msgs("only")})


def test_versions_newest_first_with_flags(client: TestClient) -> None:
    _history(client)
    page = client.get("/api/sessions/s/versions").json()
    versions = page["versions"]
    assert page["session_id"] == "s" and page["next_before"] is None
    assert [v["seq"] for v in versions] == [4, 3, 2, 1]
    assert [v["op"] for v in versions] == ["save", "update_metadata", "append", "create"]
    assert [v["message_count"] for v in versions] == [1, 3, 3, 2]
    assert versions[0]["suspect_shrink"] is True and versions[0]["intentional_shrink"] is False
    for v in versions:
        assert set(v) >= {"seq", "manifest", "op", "created_at", "message_count",
                          "intentional_shrink", "suspect_shrink"}


def test_versions_pagination_with_before(client: TestClient) -> None:
    _history(client)
    first = client.get("/api/sessions/s/versions", params={"limit": 3}).json()
    assert [v["seq"] for v in first["versions"]] == [4, 3, 2]
    assert first["next_before"] == 2
    rest = client.get("/api/sessions/s/versions",
                      params={"limit": 3, "before": first["next_before"]}).json()
    assert [v["seq"] for v in rest["versions"]] == [1] and rest["next_before"] is None


def test_version_state_and_meta_only(client: TestClient) -> None:
    _history(client)
    r = client.get("/api/sessions/s/versions/2")
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    old = r.json()
    assert old["seq"] == 2 and old["metadata"] == {"title": "v1"}
    assert [m["content"] for m in old["messages"]] == ["m0", "m1", "a"]
    meta = client.get("/api/sessions/s/versions/2", params={"meta": "true"}).json()
    assert "messages" not in meta and meta["message_count"] == 3 and meta["seq"] == 2
    assert_error(client.get("/api/sessions/s/versions/99"), 404, "version_not_found")
    assert_error(client.get("/api/sessions/nope/versions/1"), 404, "session_not_found")
    assert_error(client.get("/api/sessions/nope/versions"), 404, "session_not_found")


def test_diff(client: TestClient) -> None:
    _history(client)
    d = client.get("/api/sessions/s/diff", params={"from": 2, "to": 4}).json()
    assert d["from"] == 2 and d["to"] == 4 and d["common_prefix"] == 0
    assert [m["content"] for m in d["removed"]] == ["m0", "m1", "a"]
    assert [m["content"] for m in d["added"]] == ["only"]
    assert d["metadata_changes"] == {"title": {"from": "v1", "to": "v3"}}
    # Defaults: to = head, from = to - 1.
    d = client.get("/api/sessions/s/diff").json()
    assert (d["from"], d["to"]) == (3, 4)
    d = client.get("/api/sessions/s/diff", params={"from": 1, "to": 2}).json()
    assert d["common_prefix"] == 2 and d["removed"] == [] and len(d["added"]) == 1
    assert_error(client.get("/api/sessions/s/diff", params={"from": 1, "to": 77}), 404,
                 "version_not_found")


def test_restore_makes_a_new_head(client: TestClient) -> None:
    _history(client)
    r = client.post("/api/sessions/s/restore", json={"seq": 2}, headers={"If-Match": '"4"'})
    assert r.status_code == 200 and r.headers["etag"] == '"5"'
    assert r.json()["op"] == "restore" and r.json()["message_count"] == 3
    assert client.get("/api/sessions/s").json()["metadata"] == {"title": "v1"}
    assert_error(client.post("/api/sessions/s/restore", json={"seq": 40}), 404,
                 "version_not_found")


def test_fork_shares_chunks(client: TestClient, api_store: Store) -> None:
    create(client, "src", 30)
    client.post("/api/sessions/src/messages", json={"messages": msgs("late")})
    objects_before = api_store.stats().objects
    r = client.post("/api/sessions/src/fork", json={"session_id": "copy", "seq": 1})
    assert r.status_code == 201 and r.headers["location"] == "/api/sessions/copy"
    assert r.json()["op"] == "fork" and r.json()["message_count"] == 30
    assert api_store.stats().objects == objects_before  # nothing new stored
    r = client.post("/api/sessions/src/fork", json={})
    assert r.status_code == 201
    new_sid = r.json()["session_id"]
    assert client.get(f"/api/sessions/{new_sid}/meta").json()["message_count"] == 31
    assert_error(client.post("/api/sessions/src/fork", json={"session_id": "copy"}), 409,
                 "session_exists")
    assert_error(client.post("/api/sessions/none/fork", json={}), 404, "session_not_found")


def test_recover_dry_run_then_real(client: TestClient) -> None:
    create(client, "s", 5)
    client.put("/api/sessions/s", json={"metadata": {}, "messages": []})  # the accident
    client.post("/api/sessions/s/messages", json={"messages": msgs("after")})
    dry = client.post("/api/recover", params={"dry_run": True}).json()
    assert dry["dry_run"] is True
    assert [(a["session_id"], a["action"], a["to_count"]) for a in dry["actions"]] == [
        ("s", "would_recover", 6)]
    assert client.get("/api/sessions/s/meta").json()["message_count"] == 1
    real = client.post("/api/recover").json()
    assert [(a["action"], a["from_count"], a["to_count"]) for a in real["actions"]] == [
        ("recovered", 1, 6)]
    contents = [m["content"] for m in client.get("/api/sessions/s").json()["messages"]]
    assert contents == ["m0", "m1", "m2", "m3", "m4", "after"]
    assert client.post("/api/recover").json()["actions"] == []  # idempotent


def test_health(client: TestClient, api_store: Store) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["backend"] == "sqlite"
    assert body["store"] == api_store.backend.location


def test_openapi_is_complete(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("/api/sessions", "post"), ("/api/sessions", "get"), ("/api/sessions/{sid}", "get"),
        ("/api/sessions/{sid}/meta", "get"), ("/api/sessions/{sid}/messages", "get"),
        ("/api/sessions/{sid}/messages", "post"), ("/api/sessions/{sid}", "put"),
        ("/api/sessions/{sid}/rewind", "post"), ("/api/sessions/{sid}", "patch"),
        ("/api/sessions/{sid}", "delete"), ("/api/sessions/{sid}/versions", "get"),
        ("/api/sessions/{sid}/versions/{seq}", "get"), ("/api/sessions/{sid}/diff", "get"),
        ("/api/sessions/{sid}/restore", "post"), ("/api/sessions/{sid}/fork", "post"),
        ("/api/recover", "post"), ("/api/health", "get"),
    }
    found = {(p, m) for p, ops in paths.items() for m in ops}
    assert expected <= found
    for path, method in expected:
        op = paths[path][method]
        responses = op["responses"]
        ok = [s for s in responses if s.startswith("2")]
        assert ok, (path, method)
        if ok != ["204"]:
            assert "application/json" in responses[ok[0]]["content"], (path, method)
        for status in ("401", "413", "422", "500"):
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse"), (path, method, status)
    assert "ETag" in paths["/api/sessions/{sid}"]["get"]["responses"]["200"]["headers"]
    assert "ETag" in paths["/api/sessions/{sid}"]["delete"]["responses"]["204"]["headers"]
    created = paths["/api/sessions"]["post"]["responses"]["201"]
    assert {"ETag", "Location"} <= set(created["headers"])
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/VersionPublic")
    if_match = [p for p in paths["/api/sessions/{sid}"]["put"]["parameters"]
                if p["name"] == "If-Match"]
    assert if_match and if_match[0]["in"] == "header"
    patch_body = paths["/api/sessions/{sid}"]["patch"]["requestBody"]["content"]
    assert {"application/json", "application/merge-patch+json"} <= set(patch_body)
    schemas = spec["components"]["schemas"]
    for name in ("SessionPublic", "SessionMetaPublic", "SessionPage", "VersionPublic",
                 "DiffPublic", "RecoveryReportPublic", "ErrorResponse", "SessionCreate"):
        assert name in schemas
    assert client.get("/docs").status_code == 200
