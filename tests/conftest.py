from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import PostgresServer, start_postgres

from cas_store import Store, open_store

# The backends a test marked ``all_backends`` runs on, unchanged: its ``store`` and
# ``store_path`` fixtures name a fresh store of each kind in turn.
BACKENDS = ["sqlite", "postgres"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "all_backends: run the test on every backend (store/store_path fixtures)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("all_backends") is None:
        return
    if "backend_kind" in metafunc.fixturenames:
        metafunc.parametrize("backend_kind", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for this test process (each xdist worker has its own)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_path(tmp_path: Path, backend_kind: str, request: pytest.FixtureRequest) -> Path | str:
    """Where a fresh store lives: a SQLite file, or a PostgreSQL URL (a schema of its own)."""
    if backend_kind == "sqlite":
        return tmp_path / "sessions.db"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.fresh_schema()


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    s = open_store(store_path)
    yield s
    s.close()
