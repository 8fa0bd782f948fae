"""postgresql:// store URLs wherever a store is named, and a broken server as StorageError."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import PostgresServer, free_port, start_postgres

from cas_store import InvalidArgument, StorageError, open_store


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from cas_store.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_both_schemes_open_the_same_store(pg_server: PostgresServer) -> None:
    url = pg_server.fresh_schema()
    s = open_store(url)
    s.create("a", {"title": "t"}, [{"role": "user", "content": "hi"}])
    s.close()
    other = open_store(url.replace("postgresql://", "postgres://", 1))
    try:
        assert other.load("a").messages == [{"role": "user", "content": "hi"}]
        assert other.stats().backend == "postgresql"
    finally:
        other.close()


def test_cli_store_option_and_environment(pg_server: PostgresServer) -> None:
    url = pg_server.fresh_schema()
    s = open_store(url)
    s.create("chat-1", {"title": "Rome trip"}, [{"role": "user", "content": "hi"}])
    s.close()
    listed = _cli("--store", url, "ls")
    assert listed.returncode == 0, listed.stderr
    assert "chat-1" in listed.stdout
    import os

    env = {**os.environ, "CAS_STORE": url}
    checked = _cli("fsck", env=env)
    assert checked.returncode == 0, checked.stderr


def test_a_server_that_is_down_is_a_storage_error_at_once() -> None:
    url = f"postgresql://cas@127.0.0.1:{free_port()}/x"
    t = time.monotonic()
    with pytest.raises(StorageError):
        open_store(url)
    assert time.monotonic() - t < 10
    run = _cli("--store", url, "ls")
    assert run.returncode == 7
    assert "error:" in run.stderr and "Traceback" not in run.stderr + run.stdout


def test_unknown_scheme_and_objects_without_postgres_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        open_store("mysql://x@localhost/db")
    with pytest.raises(InvalidArgument):
        open_store(tmp_path / "s.db", objects="s3://bucket/prefix")
    run = _cli("--store", "mysql://x@localhost/db", "ls")
    assert run.returncode == 5 and "Traceback" not in run.stderr
    # A path stays a path.
    assert _cli("--store", str(tmp_path / "none.db"), "ls").returncode == 3


def test_losing_the_server_mid_use_is_a_storage_error() -> None:
    server = start_postgres()
    try:
        s = open_store(server.fresh_schema())
        s.create("a", {}, [{"n": 1}])
        server.stop()
        with pytest.raises(StorageError):
            s.load("a")
        with pytest.raises(StorageError):
            s.append("a", [{"n": 2}])
        s.close()
    finally:
        server.stop()
