from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import make_app
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cas_store import Store, open_store


@pytest.fixture
def api_store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "api.db", synchronous="NORMAL")
    yield s
    s.close()


@pytest.fixture
def app(api_store: Store) -> FastAPI:
    return make_app(api_store)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c
