"""Two real ``cas-store serve`` processes on one PostgreSQL (+S3) store behave as one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import free_port, fresh_location

from cas_store import open_store

pytestmark = pytest.mark.slow


class Server:
    """One ``cas-store serve`` process on a store URL, its output in a log file."""

    def __init__(self, store: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = log.open("w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_STORE")}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from cas_store.cli import main; main()",
             "--store", store, "serve", "--port", str(self.port), "--log-level", "warning"],
            stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.stop()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.stop()}")

    def kill(self) -> None:
        """SIGKILL by PID: no shutdown code runs."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()
        return self.log.read_text()


@pytest.fixture(params=["postgres", "postgres+s3"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh PostgreSQL (+S3) store seeded with a session recovery must repair."""
    url = str(fresh_location(request.param, tmp_path, request))
    store = open_store(url)
    store.create("victim", {"title": "v"}, [{"role": "user", "n": i} for i in range(20)])
    store.save("victim", [{"role": "user", "n": i} for i in range(5)])  # a suspect shrink
    store.close()
    return url


@pytest.fixture
def two_servers(shared_store: str, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    # Both start at once: each runs start-up recovery on the same store.
    a, b = Server(shared_store, tmp_path / "a.log"), Server(shared_store, tmp_path / "b.log")
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


def _append(c: httpx.Client, sid: str, message: dict[str, object],
            if_match: int | None = None) -> httpx.Response:
    headers = {"If-Match": f'"{if_match}"'} if if_match is not None else {}
    return c.post(f"/api/sessions/{sid}/messages", json={"messages": [message]}, headers=headers)


def test_two_servers_behave_as_one(two_servers: tuple[Server, Server], shared_store: str) -> None:
    a, b = two_servers
    with httpx.Client(base_url=a.url, timeout=30) as ca, \
            httpx.Client(base_url=b.url, timeout=30) as cb:
        # Start-up recovery on two servers at once repaired the shrink exactly once.
        ops = [v["op"] for v in cb.get("/api/sessions/victim/versions").json()["versions"]]
        assert ops.count("recover") == 1, ops
        assert ca.get("/api/sessions/victim/meta").json()["message_count"] == 20

        # A write acknowledged by one server is read at once through the other.
        r = ca.post("/api/sessions", json={"session_id": "chat", "metadata": {"title": "x"},
                                           "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 201
        got = cb.get("/api/sessions/chat")
        assert got.status_code == 200 and got.json()["messages"][0]["content"] == "hi"
        for i in range(10):
            seq = _append(cb if i % 2 else ca, "chat", {"role": "user", "i": i}).json()["seq"]
            other = ca if i % 2 else cb
            assert other.get("/api/sessions/chat/meta").headers["etag"] == f'"{seq}"'

        # Concurrent appends through both servers lose and duplicate nothing.
        assert ca.post("/api/sessions", json={"session_id": "shared", "messages": []}
                       ).status_code == 201
        errors: list[str] = []

        def writer(w: int, url: str) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                for i in range(25):
                    r = _append(c, "shared", {"role": "user", "w": w, "i": i})
                    if r.status_code != 200:
                        errors.append(f"{w}/{i}: {r.status_code} {r.text}")

        threads = [threading.Thread(target=writer, args=(w, (a, b)[w % 2].url))
                   for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        messages = cb.get("/api/sessions/shared").json()["messages"]
        assert len(messages) == 100
        for w in range(4):
            assert [m["i"] for m in messages if m["w"] == w] == list(range(25))

        # An If-Match race across the servers has exactly one winner; the other gets 412.
        for round_ in range(10):
            seq = int(ca.get("/api/sessions/shared/meta").headers["etag"].strip('"'))
            barrier = threading.Barrier(2)
            codes: list[int] = []

            def race(c: httpx.Client, k: int, seq: int = seq, round_: int = round_,
                     barrier: threading.Barrier = barrier, codes: list[int] = codes) -> None:
                barrier.wait()
                codes.append(_append(c, "shared", {"race": round_, "k": k}, seq).status_code)

            racers = [threading.Thread(target=race, args=(c, k)) for k, c in enumerate((ca, cb))]
            for t in racers:
                t.start()
            for t in racers:
                t.join()
            assert sorted(codes) == [200, 412], codes
            assert cb.get("/api/sessions/shared/meta").headers["etag"] == f'"{seq + 1}"'

    store = open_store(shared_store)
    try:
        assert store.fsck().ok
    finally:
        store.close()


def test_a_killed_server_loses_nothing_acknowledged(two_servers: tuple[Server, Server],
                                                   shared_store: str) -> None:
    a, b = two_servers
    with httpx.Client(base_url=b.url, timeout=30) as cb:
        assert cb.post("/api/sessions", json={"session_id": "k", "messages": []}
                       ).status_code == 201
    acked: list[tuple[int, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(400):
                if stop.is_set():
                    return
                try:
                    r = _append(c, "k", {"role": "user", "w": w, "i": i})
                except httpx.HTTPError:
                    return  # the server died under this request: not acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.append((w, i))

    threads = [threading.Thread(target=writer, args=(w, (a, b)[w % 2].url)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len([x for x in acked if x[0] % 2 == 0]) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    a.kill()  # mid-write: its writers have requests in flight
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert any(w % 2 == 0 for w, _ in acked) and any(w % 2 for w, _ in acked)

    with httpx.Client(base_url=b.url, timeout=30) as cb:
        messages = cb.get("/api/sessions/k").json()["messages"]
    stored = {(m["w"], m["i"]) for m in messages}
    assert len(stored) == len(messages), "no message stored twice"
    assert set(acked) <= stored, "every acknowledged append is there"
    for w in range(4):
        seen = [m["i"] for m in messages if m["w"] == w]
        assert seen == sorted(seen)
    store = open_store(shared_store)
    try:
        assert store.fsck().ok
    finally:
        store.close()
