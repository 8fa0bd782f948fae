"""Helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cas_store import Store
from cas_store.api import Settings, create_app

#: The Host name TestClient sends; the app accepts it only because it is listed.
TEST_HOST = "testserver"


def make_app(store: Store, **settings: Any) -> FastAPI:
    """Build the app on a given store, which the test keeps and closes."""
    settings.setdefault("allowed_hosts", [TEST_HOST])
    return create_app(Settings(store=store.backend.location, **settings), store=store)


def create(client: TestClient, sid: str, messages: int = 0, **metadata: Any) -> dict[str, Any]:
    r = client.post("/api/sessions", json={
        "session_id": sid, "metadata": metadata,
        "messages": [{"role": "user", "content": f"m{i}"} for i in range(messages)],
    })
    assert r.status_code == 201, r.text
    return r.json()


def msgs(*texts: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": t} for t in texts]


def assert_error(r: Any, status: int, code: str) -> dict[str, Any]:
    """Check the one error shape and return the error object."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    return err
