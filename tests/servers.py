"""Real servers for the tests: a throw-away PostgreSQL cluster, started and stopped by PID.

``initdb`` refuses to run as root, so as root the cluster runs as Debian's ``postgres``
user (``runuser``) in a temporary directory it can traverse; otherwise as the caller.
Each pytest worker process starts its own cluster on a free loopback port.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest


class ServerMissing(RuntimeError):
    """The server's binaries are not installed (scripts/sysdeps.sh installs them)."""


def pg_bindir() -> Path:
    """Return the newest installed PostgreSQL server's bin directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        on_path = shutil.which("initdb")
        if on_path is None:
            raise ServerMissing("PostgreSQL is not installed: run scripts/sysdeps.sh")
        return Path(on_path).parent
    return Path(found[-1]).parent


def free_port() -> int:
    """Return a TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, on a loopback port."""

    def __init__(self, *, durable: bool = False, max_connections: int = 200) -> None:
        self.bindir = pg_bindir()
        self.durable = durable
        self.max_connections = max_connections
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cas-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.pid: int | None = None
        self._names = itertools.count(1)
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=120)

    def start(self) -> PostgresServer:
        """Create the cluster and start the server; return self once it accepts connections."""
        self.sockets.mkdir()
        self.root.chmod(0o755)  # the server's user must reach data/ and sock/
        if self._as_root:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "cas",
                  "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        settings = [
            "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
            "-k", str(self.sockets), "-c", f"max_connections={self.max_connections}",
            "-c", "shared_buffers=128MB",
        ]
        if not self.durable:
            # Tests check behaviour, not durability across power loss: skip the fsyncs.
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"]
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-w", "-t", "60", "-o", " ".join(settings), "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def stop(self) -> None:
        """Stop the server (immediate mode, then SIGKILL by PID) and remove its files."""
        if self.pid is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                          "immediate", "-w", "-t", "20", "stop")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres", schema: str | None = None) -> str:
        """Return a postgresql:// URL for dbname (and a search_path of schema)."""
        url = f"postgresql://cas@127.0.0.1:{self.port}/{dbname}"
        if schema is not None:
            url += "?options=" + quote(f"-csearch_path={schema}", safe="")
        return url

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser on the postgres database."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def fresh_database(self) -> str:
        """Create an empty database; return its URL (a whole store of its own)."""
        name = f"cas_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def fresh_schema(self) -> str:
        """Create an empty schema in the postgres database; return a URL that uses it.

        A few milliseconds, against a second or so for a database: what a test per store
        uses.
        """
        name = f"s_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE SCHEMA {name}")
        return self.url(schema=name)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres(*, durable: bool = False) -> PostgresServer:
    """Start a server, or fail (in CI) / skip (elsewhere) when PostgreSQL is missing."""
    try:
        server = PostgresServer(durable=durable)
    except ServerMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc} (CI never skips a real-server test)")
        pytest.skip(str(exc))
    try:
        return server.start()
    except BaseException:
        if server.log.exists():
            print(server.log.read_text()[-4000:])
        server.stop()
        raise


@contextlib.contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[PostgresServer]:
    """Yield a running server, stopped by PID at the end, also on failure."""
    server = start_postgres(durable=durable)
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    """Poll predicate() until true or the timeout passes (then raise)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def fresh_location(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Return where a fresh store of this kind lives; PostgreSQL+S3 records its bucket.

    A PostgreSQL store remembers its object location on first open, so the URL alone
    reopens it with its objects (the AWS_* variables stay set for the test).
    """
    if kind == "sqlite":
        return tmp_path / "sessions.db"
    server: PostgresServer = request.getfixturevalue("pg_server")
    url = server.fresh_schema()
    if kind == "postgres+s3":
        from cas_store import open_store

        open_store(url, objects=request.getfixturevalue("s3_store_url")).close()
    return url
