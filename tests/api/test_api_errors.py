"""Every error status, the one error shape, If-Match/ETag, the body limit, token and CORS."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

import pytest
from api_helpers import assert_error, create, make_app, msgs
from fastapi.testclient import TestClient

from cas_store import CorruptObject, Store, StoreLocked

# --- ETag / If-Match -------------------------------------------------------------------------


def test_stale_if_match_is_412_with_current_seq(client: TestClient) -> None:
    create(client, "s", 1)
    client.post("/api/sessions/s/messages", json={"messages": msgs("x")})
    for method, path, body in [
        ("POST", "/api/sessions/s/messages", {"messages": msgs("late")}),
        ("PUT", "/api/sessions/s", {"metadata": {}, "messages": []}),
        ("PATCH", "/api/sessions/s", {"title": "t"}),
        ("POST", "/api/sessions/s/rewind", {"keep": 0}),
        ("POST", "/api/sessions/s/restore", {"seq": 1}),
        ("DELETE", "/api/sessions/s", None),
    ]:
        r = client.request(method, path, json=body, headers={"If-Match": '"1"'})
        err = assert_error(r, 412, "conflict")
        assert err["current_seq"] == 2 and err["expected"] == 1, (method, path)
        assert r.headers["etag"] == '"2"'
    session = client.get("/api/sessions/s").json()
    assert session["seq"] == 2 and session["message_count"] == 2  # nothing was written


def test_matching_if_match_applies(client: TestClient) -> None:
    create(client, "s")
    etag = client.get("/api/sessions/s/meta").headers["etag"]
    r = client.patch("/api/sessions/s", json={"a": 1}, headers={"If-Match": etag})
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    r = client.post("/api/sessions/s/messages", json={"messages": msgs("m")},
                    headers={"If-Match": r.headers["etag"]})
    assert r.status_code == 200 and r.json()["seq"] == 3


@pytest.mark.parametrize("header,status", [
    ("*", 200), ('"9", "1"', 200), ("1", 200), ('W/"1"', 412), ('"abc"', 412),
    ('"2", "3"', 412), ("garbage", 422), ('"1', 422),
])
def test_if_match_forms(client: TestClient, header: str, status: int) -> None:
    create(client, "s")
    r = client.post("/api/sessions/s/messages", json={"messages": msgs("m")},
                    headers={"If-Match": header})
    assert r.status_code == status, r.text
    if status == 422:
        assert r.json()["error"]["field"] == "If-Match"


def test_without_if_match_patch_and_append_apply_to_head(client: TestClient) -> None:
    create(client, "s", 2)
    for i in range(3):
        assert client.post("/api/sessions/s/messages",
                           json={"messages": msgs(f"a{i}")}).status_code == 200
        assert client.patch("/api/sessions/s", json={"active_stream_id": None}).status_code == 200
    assert client.get("/api/sessions/s/meta").json()["message_count"] == 5


def test_two_clients_same_if_match_exactly_one_wins(client: TestClient) -> None:
    create(client, "s", 1)
    n = 8
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    lock = threading.Lock()

    def racer(i: int) -> None:
        barrier.wait()
        r = client.post("/api/sessions/s/messages", json={"messages": msgs(f"from {i}")},
                        headers={"If-Match": '"1"'})
        with lock:
            statuses.append(r.status_code)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [412] * (n - 1)
    session = client.get("/api/sessions/s").json()
    assert session["seq"] == 2 and session["message_count"] == 2


# --- 404 / 409 / 405 ---------------------------------------------------------------------------


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/api/sessions/none", None),
    ("GET", "/api/sessions/none/meta", None),
    ("GET", "/api/sessions/none/messages", None),
    ("POST", "/api/sessions/none/messages", {"messages": []}),
    ("PUT", "/api/sessions/none", {"metadata": {}, "messages": []}),
    ("PATCH", "/api/sessions/none", {}),
    ("DELETE", "/api/sessions/none", None),
    ("POST", "/api/sessions/none/rewind", {"keep": 0}),
    ("POST", "/api/sessions/none/restore", {"seq": 1}),
    ("GET", "/api/sessions/none/versions", None),
    ("GET", "/api/sessions/none/diff", None),
])
def test_unknown_session_is_404(client: TestClient, method: str, path: str,
                                body: object) -> None:
    err = assert_error(client.request(method, path, json=body), 404, "session_not_found")
    assert err["session_id"] == "none"


def test_unknown_route_and_method_have_the_shape(client: TestClient) -> None:
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    assert_error(client.delete("/api/sessions"), 405, "method_not_allowed")


# --- 400 / 422 ----------------------------------------------------------------------------------


def test_bad_json_is_400(client: TestClient) -> None:
    create(client, "s")
    for ctype in ("application/json", "application/merge-patch+json"):
        r = client.post("/api/sessions/s/messages", content=b'{"messages": [',
                        headers={"Content-Type": ctype})
        assert_error(r, 400, "invalid_json")
    r = client.patch("/api/sessions/s", content=b"{nope",
                     headers={"Content-Type": "application/merge-patch+json"})
    assert_error(r, 400, "invalid_json")


def test_bad_session_id_is_422_naming_the_field(client: TestClient) -> None:
    for sid in (".leading-dot", "x" * 256, "sp ace"):
        err = assert_error(client.post("/api/sessions", json={"session_id": sid}), 422,
                           "invalid_session_id")
        assert err["field"] == "session_id"
    err = assert_error(client.get("/api/sessions/.hidden"), 422, "invalid_session_id")
    assert err["field"] == "session_id"


def test_bad_message_is_422_naming_its_index(client: TestClient) -> None:
    create(client, "s", 1)
    r = client.post("/api/sessions/s/messages", json={"messages": [{"ok": 1}, {"ok": 2}, "str"]})
    err = assert_error(r, 422, "invalid_message")
    assert err["field"] == "messages" and err["index"] == 2
    assert "messages[2]" in err["message"]
    # Caught by the engine rather than by validation: same code, same fields.
    r = client.post("/api/sessions/s/messages",
                    content=b'{"messages": [{"a": 1}, {"b": NaN}]}',
                    headers={"Content-Type": "application/json"})
    err = assert_error(r, 422, "invalid_message")
    assert err["index"] == 1
    assert client.get("/api/sessions/s/meta").json()["message_count"] == 1


def test_bad_metadata_and_unknown_fields_are_422(client: TestClient) -> None:
    err = assert_error(client.post("/api/sessions", json={"metadata": [1]}), 422,
                       "invalid_metadata")
    assert err["field"] == "metadata"
    err = assert_error(client.post("/api/sessions", json={"messages": [], "mesages": []}), 422,
                       "invalid_argument")
    assert err["field"] == "mesages"


@pytest.mark.parametrize("path,params,field", [
    ("/api/sessions", {"limit": 0}, "limit"),
    ("/api/sessions", {"limit": 1001}, "limit"),
    ("/api/sessions", {"limit": "ten"}, "limit"),
    ("/api/sessions/s/messages", {"limit": -1}, "limit"),
    ("/api/sessions/s/messages", {"offset": "x"}, "offset"),
    ("/api/sessions/s/versions", {"before": 0}, "before"),
    ("/api/sessions/s/diff", {"from": 0}, "from"),
    ("/api/sessions/s/versions/0", {}, "seq"),
])
def test_bad_parameters_are_422_naming_the_field(client: TestClient, path: str,
                                                 params: dict[str, object], field: str) -> None:
    create(client, "s")
    err = assert_error(client.get(path, params=params), 422, "invalid_argument")
    assert err["field"] == field
    assert err["errors"][0]["field"] == field


def test_missing_body_is_422(client: TestClient) -> None:
    create(client, "s")
    err = assert_error(client.put("/api/sessions/s"), 422, "invalid_argument")
    assert err["field"] == "body"


# --- 413 ----------------------------------------------------------------------------------------


@pytest.fixture
def small_client(api_store: Store) -> Iterator[TestClient]:
    with TestClient(make_app(api_store, max_body_bytes=4096)) as c:
        yield c


def test_body_over_limit_is_413(small_client: TestClient) -> None:
    create(small_client, "s")
    big = {"messages": msgs("x" * 5000)}
    err = assert_error(small_client.post("/api/sessions/s/messages", json=big), 413,
                       "body_too_large")
    assert err["limit"] == 4096
    assert small_client.get("/api/sessions/s/meta").json()["message_count"] == 0


def test_chunked_body_over_limit_is_413(small_client: TestClient) -> None:
    create(small_client, "s")
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"c": "'
        for _ in range(100):
            sent.append(1)
            yield b"y" * 1000
        yield b'"}]}'

    r = small_client.post("/api/sessions/s/messages", content=chunks(),
                          headers={"Content-Type": "application/json"})
    assert_error(r, 413, "body_too_large")
    assert "content-length" not in r.request.headers
    assert small_client.get("/api/sessions/s/meta").json()["message_count"] == 0


def test_body_under_limit_passes(small_client: TestClient) -> None:
    create(small_client, "s")
    r = small_client.post("/api/sessions/s/messages", json={"messages": msgs("x" * 3000)})
    assert r.status_code == 200


# --- 500: only for corruption -------------------------------------------------------------


def test_corrupt_object_is_500_corrupt_object(client: TestClient, api_store: Store) -> None:
    create(client, "s", 2)
    with sqlite3.connect(api_store.backend.location) as con:
        con.execute("UPDATE objects SET data = ? WHERE kind = 1", (b"not a zstd frame",))
    err = assert_error(client.get("/api/sessions/s"), 500, "corrupt_object")
    assert len(err["object_id"]) == 64
    assert client.get("/api/sessions/s/meta").status_code == 200  # no chunk needed


# --- token and CORS ---------------------------------------------------------------------


def test_token_guards_every_api_route(api_store: Store) -> None:
    app = make_app(api_store, token="s3cret")
    with TestClient(app) as c:
        for method, path in [("GET", "/api/sessions"),
                             ("POST", "/api/sessions"), ("GET", "/api/sessions/x"),
                             ("POST", "/api/recover")]:
            r = c.request(method, path, json={} if method == "POST" else None)
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
            r = c.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert_error(r, 401, "unauthorized")
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get("/api/health", headers=ok).status_code == 200
        assert c.get("/api/health", headers=ok).json()["store"] == api_store.backend.location
        assert c.post("/api/sessions", json={"session_id": "a"}, headers=ok).status_code == 201
        assert c.get("/api/sessions/a", headers={"Authorization": "Basic s3cret"}).status_code \
            == 401
        spec = c.get("/openapi.json").json()
        assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_cors_off_by_default_and_on_when_configured(api_store: Store) -> None:
    pre = {"Origin": "http://ui.example", "Access-Control-Request-Method": "GET"}
    with TestClient(make_app(api_store)) as c:
        r = c.get("/api/health", headers={"Origin": "http://ui.example"})
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-origin" not in c.options("/api/health", headers=pre).headers
    with TestClient(make_app(api_store, cors_origins="http://ui.example")) as c:
        r = c.get("/api/health", headers={"Origin": "http://ui.example"})
        assert r.headers["access-control-allow-origin"] == "http://ui.example"
        assert "etag" in r.headers["access-control-expose-headers"].lower()
        r = c.get("/api/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


# --- 503 and bugs ----------------------------------------------------------------------------


def test_storage_error_is_503_with_retry_after(client: TestClient, api_store: Store,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    create(client, "s")

    def locked(*args: object, **kwargs: object) -> None:
        raise StoreLocked("store stayed locked for 30s")

    monkeypatch.setattr(api_store, "load_meta", locked)
    r = client.get("/api/sessions/s/meta")
    assert_error(r, 503, "store_locked")
    assert r.headers["retry-after"] == "1"


def test_a_bug_is_500_internal_error_in_the_same_shape(api_store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(api_store, "load_meta", broken)
    with TestClient(make_app(api_store), raise_server_exceptions=False) as c:
        err = assert_error(c.get("/api/sessions/s/meta"), 500, "internal_error")
        assert "boom" not in err["message"]  # no internals leak to clients


def test_startup_recovery_failure_still_serves(api_store: Store,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def corrupt(*args: object, **kwargs: object) -> None:
        raise CorruptObject("object x is corrupt", object_id="x")

    monkeypatch.setattr(api_store, "recover", corrupt)
    with TestClient(make_app(api_store)) as c:
        assert c.get("/api/health").status_code == 200


def test_health_without_the_token_is_a_probe_that_reveals_no_path(api_store: Store) -> None:
    """With a token set, an unauthenticated /api/health says only that the server is up."""
    with TestClient(make_app(api_store, token="s3cret")) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = c.get("/api/health", headers=headers)
            assert r.status_code == 200, r.text
            assert r.json() == {"status": "ok", "version": r.json()["version"]}
            assert api_store.backend.location not in r.text
            assert "api.db" not in r.text
        r = c.get("/api/health", headers={"Authorization": "Bearer s3cret"})
        assert r.json()["store"] == api_store.backend.location
    with TestClient(make_app(api_store)) as c:  # no token: loopback only, path shown
        assert c.get("/api/health").json()["store"] == api_store.backend.location
