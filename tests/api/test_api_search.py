"""GET /api/search: hits as JSON, pages, and no query the user can type gets a 5xx."""

from __future__ import annotations

import pytest
from api_helpers import assert_error, msgs
from fastapi.testclient import TestClient

from cas_store import Store

pytestmark = pytest.mark.all_backends


@pytest.fixture
def seeded(api_store: Store) -> Store:
    api_store.create("trip", {"title": "Rome"},
                     msgs("flights to <Rome>", "hotel near the Colosseum"))
    api_store.create("work", {}, msgs("deploy the service", "rome is not a deploy target"))
    return api_store


def test_search_returns_ranked_hits_with_escaped_snippets(client: TestClient,
                                                          seeded: Store) -> None:
    r = client.get("/api/search", params={"q": "rome"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert {(h["session_id"], h["index"], h["seq"], h["role"]) for h in hits} == {
        ("trip", 0, 1, "user"), ("work", 1, 1, "user")}
    trip = next(h for h in hits if h["session_id"] == "trip")
    assert trip["snippet"] == "flights to &lt;<mark>Rome</mark>&gt;"
    assert r.json()["next_cursor"] is None


def test_pages_and_versions(client: TestClient, seeded: Store) -> None:
    first = client.get("/api/search", params={"q": "rome", "limit": 1}).json()
    assert len(first["hits"]) == 1 and first["next_cursor"]
    second = client.get("/api/search", params={"q": "rome", "limit": 1,
                                               "cursor": first["next_cursor"]}).json()
    assert second["hits"][0] != first["hits"][0] and second["next_cursor"] is None
    seeded.rewind("work", 0)
    assert len(client.get("/api/search", params={"q": "deploy"}).json()["hits"]) == 0
    old = client.get("/api/search", params={"q": "deploy", "versions": "all"}).json()["hits"]
    assert [(h["session_id"], h["seq"]) for h in old] == [("work", 1), ("work", 1)]


@pytest.mark.parametrize("q", ['"', "NEAR(", "a AND", "*", "col:x", "(((", "'", "-", "^"])
def test_hostile_queries_are_a_422_or_a_result(client: TestClient, seeded: Store, q: str) -> None:
    r = client.get("/api/search", params={"q": q})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert_error(r, 422, "invalid_argument")


def test_bad_parameters(client: TestClient, seeded: Store) -> None:
    assert_error(client.get("/api/search"), 422, "invalid_argument")
    assert_error(client.get("/api/search", params={"q": "x", "cursor": "zz"}), 422,
                 "invalid_argument")
    assert client.get("/api/search", params={"q": "x", "limit": 0}).status_code == 422
    assert client.get("/api/search", params={"q": "x", "versions": "no"}).status_code == 422
