"""Hostile clients against a real ``cas-store serve`` on a loopback port, over raw sockets:
slow and stalled clients, lying Content-Length, over-long chunked bodies, broken bytes,
and If-Match races from many connections. After each, nothing is written and fsck is
clean; meanwhile other clients are served.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cas_store import open_store

Record = Callable[[str, Any], None]
BODY_LIMIT = 64 * 1024
COUNTS: Counter[str] = Counter()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``cas-store serve`` process on a free loopback port."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        exe = Path(sys.executable).with_name("cas-store")
        self.proc = subprocess.Popen(
            [str(exe), "--store", str(store), "serve", "--port", str(self.port),
             "--max-body-bytes", str(BODY_LIMIT), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.proc.stderr!r}")
            time.sleep(0.1)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        COUNTS["connections"] += 1
        return s

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = tmp_path_factory.mktemp("served") / "served.db"
    with open_store(path) as store:
        store.create("chat-1", {"title": "Trip"},
                     [{"role": "user", "content": f"m{i}"} for i in range(5)])
    srv = Server(path)
    yield srv
    srv.stop()
    with open_store(path) as store:
        assert store.fsck().ok


def written(server: Server) -> list[Any]:
    """Every version and object id: what any write would change."""
    with sqlite3.connect(f"file:{server.store}?mode=ro", uri=True) as con:
        out = [con.execute("SELECT sid, seq FROM versions ORDER BY sid, seq").fetchall(),
               con.execute("SELECT count(*) FROM objects").fetchall()]
    con.close()
    return out


def healthy(server: Server) -> None:
    """Another client is served while the hostile ones hang on."""
    r = httpx.get(server.url + "/api/sessions/chat-1/meta", timeout=10)
    assert r.status_code == 200
    COUNTS["requests"] += 1


def read_response(s: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """Return (status, body) of one response, or (0, b'') if the server just closed."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return 0, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    while length is not None and len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest


def request(path: str, body: bytes, *, method: str = "POST", length: int | None = None,
            extra: str = "") -> bytes:
    n = len(body) if length is None else length
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {n}\r\n{extra}\r\n").encode() + body


RAW_CASES: dict[str, tuple[bytes, set[int]]] = {
    "huge Content-Length, small body": (
        request("/api/sessions/chat-1/messages", b'{"messages":[]}', length=10**12), {413}),
    "Content-Length just over the limit": (
        request("/api/sessions/chat-1/messages", b"{", length=BODY_LIMIT + 1), {413}),
    "chunked body over the limit": (
        b"POST /api/sessions/chat-1/messages HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"4000\r\n" + b"a" * 0x4000 + b"\r\n" for _ in range(6)) + b"0\r\n\r\n",
        {413}),
    "invalid UTF-8": (request("/api/sessions/chat-1/messages",
                              b'{"messages":[{"c":"\xff\xfe"}]}'), {400, 422}),
    "raw NUL bytes": (request("/api/sessions/chat-1/messages",
                              b'{"messages":[{"c":"\x00\x00"}]}'), {400, 422}),
    "negative Content-Length": (request("/api/sessions/chat-1/messages", b"{}", length=-5),
                                {400}),
    "two different Content-Lengths": (
        request("/api/sessions/chat-1/messages", b'{"messages":[]}',
                extra="Content-Length: 3\r\n"), {400}),
    "bad chunk size": (
        b"POST /api/sessions/chat-1/messages HTTP/1.1\r\nHost: localhost\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", {400}),
    "NUL in the request line": (b"GET /api/sessions/chat\x00-1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
                                {400, 404, 422}),
    "path traversal, raw": (
        b"GET /api/sessions/../../etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n", {400, 404}),
    "encoded traversal on a write, raw": (
        request("/api/sessions/%2E%2E/messages", b'{"messages":[{"c":1}]}'), {404, 422}),
    "header of 4 MiB": (b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-A: " + b"a" * (4 << 20)
                        + b"\r\n\r\n", {400, 431}),
}


@pytest.mark.parametrize("name", list(RAW_CASES))
def test_raw_hostile_request_is_refused_and_writes_nothing(server: Server, name: str) -> None:
    raw, allowed = RAW_CASES[name]
    before = written(server)
    with server.connect() as s:
        # Refused before it was all sent: the answer is still read below.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(raw)
        status, body = read_response(s)
    COUNTS["requests"] += 1
    # 0: the server closed the connection without answering, also a refusal.
    assert status in allowed | {0}, (status, body[:200])
    if status and body.startswith(b"{"):
        assert json.loads(body)["error"]["code"]
    assert written(server) == before
    healthy(server)


def test_client_that_disconnects_mid_body_writes_nothing(server: Server) -> None:
    before = written(server)
    for cut in (1, 10, 30):
        body = json.dumps({"messages": [{"c": "x" * 50}]}).encode()
        with server.connect() as s:
            s.sendall(request("/api/sessions/chat-1/messages", body)[: -cut])
        COUNTS["requests"] += 1
    time.sleep(0.5)
    assert written(server) == before
    healthy(server)


def test_stalled_and_trickling_clients_do_not_block_others(server: Server) -> None:
    before = written(server)
    hostile: list[socket.socket] = []
    try:
        for i in range(40):
            s = server.connect()
            if i % 3 == 0:  # headers never finished (slowloris)
                s.sendall(b"POST /api/sessions/chat-1/messages HTTP/1.1\r\nHost: localhost\r\nX-")
            elif i % 3 == 1:  # headers sent, body stalled
                s.sendall(request("/api/sessions/chat-1/messages", b'{"messages":[',
                                  length=1000))
            else:  # body trickled a byte at a time below
                s.sendall(request("/api/sessions/chat-1/messages", b"", length=1000))
            hostile.append(s)
        for second in range(6):
            for s in hostile[2::3]:
                s.sendall(b" ")
            healthy(server)  # everyone else is still served
            time.sleep(0.25 if second < 5 else 0)
        assert written(server) == before
    finally:
        for s in hostile:
            s.close()
    time.sleep(0.3)
    assert written(server) == before
    healthy(server)


def test_stalled_body_is_timed_out(server: Server) -> None:
    with server.connect() as s:
        s.sendall(request("/api/sessions/chat-1/messages", b'{"messages":[', length=1000))
        # Generous: a server that times out stalled bodies does so within 30 s.
        status, _ = read_response(s, timeout=30.0)
        assert status in (0, 408)


def _race(server: Server, worker: int, rounds: int, out: list[Any]) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for r in range(rounds):
            got = client.get("/api/sessions/racy")
            assert got.status_code == 200
            seq = int(got.headers["etag"].strip('"'))
            body = got.json()
            mine = {"role": "user", "w": worker, "r": r}
            put = client.put("/api/sessions/racy", headers={"If-Match": f'"{seq}"'},
                             json={"metadata": {"by": worker},
                                   "messages": [*body["messages"], mine]})
            COUNTS["requests"] += 2
            if put.status_code == 412:
                assert put.json()["error"]["current_seq"] > seq
                out.append({"won": False})
            else:
                assert put.status_code == 200, put.text
                assert put.json()["seq"] == seq + 1
                out.append({"won": True, "seq": seq + 1, "w": worker, "r": r})


@pytest.mark.slow
def test_if_match_races_over_http_exactly_one_wins(server: Server,
                                                  record_property: Record) -> None:
    r = httpx.post(server.url + "/api/sessions", json={"session_id": "racy"})
    assert r.status_code == 201
    out: list[Any] = []
    threads = [threading.Thread(target=_race, args=(server, w, 25, out)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [o for o in out if o["won"]]
    assert len(out) == 6 * 25
    seqs = Counter(w["seq"] for w in wins)
    assert max(seqs.values()) == 1
    with open_store(server.store) as store:
        assert sorted(seqs) == list(range(2, store.load_meta("racy").seq + 1))
        for w in wins:
            s = store.load_version("racy", w["seq"])
            assert s.messages[-1] == {"role": "user", "w": w["w"], "r": w["r"]}
            assert len(s.messages) == w["seq"] - 1
    record_property("what", "If-Match PUT races over HTTP, 6 clients")
    record_property("attempts", len(out))
    record_property("wins", len(wins))
    record_property("conflicts_412", len(out) - len(wins))


def test_report_figures(server: Server, record_property: Record) -> None:
    """Runs last in this module: records what the hostile clients sent."""
    record_property("what", "raw-socket hostile clients against a real `cas-store serve`")
    record_property("connections", COUNTS["connections"])
    record_property("requests", COUNTS["requests"])
