"""A damaged store answers as damaged: a missing or corrupt object is a 500 naming it."""

from __future__ import annotations

import sqlite3

import pytest
from api_helpers import assert_error, create
from fastapi.testclient import TestClient

from cas_store import Store


def _chunk_ids(store: Store) -> list[bytes]:
    with sqlite3.connect(store.backend.location) as con:
        # Chunks plain (kind 1) or kept in a pack (6, their row a reference).
        return [r[0] for r in con.execute("SELECT oid FROM objects WHERE kind IN (1, 6)"
                                         " ORDER BY oid")]


@pytest.mark.parametrize(("damage", "code"), [
    ("DELETE FROM objects WHERE oid = ?", "missing_object"),
    ("UPDATE objects SET data = x'00' WHERE oid = ?", "corrupt_object"),
])
def test_a_damaged_session_is_500_on_every_read_of_its_messages(
        client: TestClient, api_store: Store, damage: str, code: str) -> None:
    create(client, "s", 3)
    victim = _chunk_ids(api_store)[0]  # only "s" has chunks yet
    r = client.post("/api/sessions", json={"session_id": "ok", "messages": [{"c": "other"}]})
    assert r.status_code == 201
    with sqlite3.connect(api_store.backend.location) as con:
        con.execute(damage, (victim,))
    err = assert_error(client.get("/api/sessions/s"), 500, code)
    assert err["object_id"] == victim.hex()
    assert err["session_id"] == "s" and "'s'" in err["message"]
    # The same answer from every route that needs the object, never a 404 ...
    for path in ("/api/sessions/s/messages", "/api/sessions/s/versions/1"):
        assert assert_error(client.get(path), 500, code)["object_id"] == victim.hex()
    # ... while the session itself exists: its metadata reads no chunk and agrees.
    meta = client.get("/api/sessions/s/meta")
    assert meta.status_code == 200 and meta.json()["message_count"] == 3
    assert "s" in [x["session_id"] for x in client.get("/api/sessions").json()["sessions"]]
    assert client.get("/api/sessions/ok").json()["messages"] == [{"c": "other"}]
