from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import make_app
from fastapi import FastAPI
from fastapi.testclient import TestClient
from servers import fresh_location

from cas_store import Store, open_store


@pytest.fixture
def api_store(tmp_path: Path, backend_kind: str, request: pytest.FixtureRequest
              ) -> Iterator[Store]:
    """The app's store: SQLite, or each backend in turn for a test marked all_backends."""
    if backend_kind == "sqlite":
        s = open_store(tmp_path / "api.db", synchronous="NORMAL")
    else:
        s = open_store(fresh_location(backend_kind, tmp_path, request))
    yield s
    s.close()


@pytest.fixture
def app(api_store: Store) -> FastAPI:
    return make_app(api_store)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c
