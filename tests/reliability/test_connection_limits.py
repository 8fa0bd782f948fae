"""Connection floods and slow clients against a real ``cas-store serve`` over TCP.

Half request lines, thousands of held connections, a connection cap, drip-fed bodies,
idle and slow keep-alive connections, a foreign Host header, and a port in use. Every
figure (connections held, probe latency under them) is recorded for RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from served import Served, raise_fd_limit

from cas_store import open_store

Record = Callable[[str, Any], None]
HALF_LINE = b"GET /api/sessions/chat-1 HT"
HELD = 2500  # connections held at once (fits the 20,000 open files of the test machine)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("floods") / "floods.db"
    with open_store(path) as s:
        s.create("chat-1", {"title": "Trip"}, [{"role": "user", "content": "hi"}])
    return path


@contextlib.contextmanager
def served(store: Path, *args: str) -> Iterator[Served]:
    server = Served(store, *args)
    try:
        yield server
    finally:
        server.stop()


def open_half(server: Served, n: int) -> list[socket.socket]:
    """Open n connections that each send half a request line and stall."""
    out = []
    for _ in range(n):
        s = server.connect()
        s.sendall(HALF_LINE)
        out.append(s)
    return out


def wait_closed(socks: list[socket.socket], timeout: float) -> list[float]:
    """Return, per socket, seconds until the server closed it (inf if it did not)."""
    start = time.monotonic()
    closed: dict[socket.socket, float] = {}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    while len(closed) < len(socks) and time.monotonic() - start < timeout:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except (ConnectionResetError, BlockingIOError) as exc:
                if isinstance(exc, BlockingIOError):
                    continue
                data = b""
            if not data:
                closed[s] = time.monotonic() - start
                sel.unregister(s)
    sel.close()
    return [closed.get(s, float("inf")) for s in socks]


def probe(server: Served) -> float:
    """Return the seconds one real request (new connection) took; it must succeed."""
    t0 = time.monotonic()
    r = httpx.get(server.url + "/api/sessions/chat-1/meta", timeout=30)
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    return took


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def test_half_request_lines_are_closed_within_the_header_deadline(
        store: Path, record_property: Record) -> None:
    raise_fd_limit(4096)
    with served(store, "--header-timeout", "2") as server:
        socks = open_half(server, 300)
        try:
            times = wait_closed(socks, timeout=2 + 8)
        finally:
            close_all(socks)
        assert max(times) < 2 + 5, sorted(times)[-5:]
        assert probe(server) < 3
        log = server.stop()
    assert "Traceback" not in log
    record_property("what", "300 connections sending half a request line, --header-timeout 2")
    record_property("connections", 300)
    record_property("closed_by_server", sum(t != float("inf") for t in times))
    record_property("first_close_s", round(min(times), 2))
    record_property("last_close_s", round(max(times), 2))


def test_real_requests_are_answered_while_thousands_of_connections_are_held(
        store: Path, record_property: Record) -> None:
    limit = raise_fd_limit(HELD * 2 + 1000)
    held_target = min(HELD, limit - 500)
    with served(store) as server:  # defaults: headers within 10 s
        t0 = time.monotonic()
        socks = open_half(server, held_target)
        opened = time.monotonic() - t0
        try:
            latencies = [probe(server) for _ in range(5)]
            server_fds = server.open_fds()
        finally:
            close_all(socks)
        log = server.stop()
    assert all(t < 3 for t in latencies), latencies
    assert server_fds >= held_target  # they really were all held open by the server
    assert "Traceback" not in log
    record_property("what", "5 real requests while thousands of half-open connections are held"
                    " (default settings)")
    record_property("connections_held", held_target)
    record_property("seconds_to_open_them", round(opened, 2))
    record_property("server_fds", server_fds)
    record_property("probe_latency_ms", " ".join(f"{t * 1000:.0f}" for t in latencies))
    record_property("probes_answered", f"{len(latencies)}/5")


def test_connection_cap_closes_the_oldest_half_open_ones(store: Path,
                                                         record_property: Record) -> None:
    raise_fd_limit(4096)
    with served(store, "--max-connections", "200") as server:
        base = server.open_fds()
        socks = open_half(server, 600)
        try:
            time.sleep(0.5)
            fds = server.open_fds()
            latencies = [probe(server) for _ in range(5)]
            states = wait_closed(socks[:400], timeout=3)
        finally:
            close_all(socks)
        log = server.stop()
    # Held connections stay at the cap (plus the listener's accept batch in flight).
    assert fds - base <= 200 + 20, (base, fds)
    assert all(t < 3 for t in latencies), latencies
    assert all(t != float("inf") for t in states)  # the 400 oldest were closed
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "connections held (the cap)" in line]
    assert 1 <= len(lines) <= 2, lines  # one rate-limited line, not one per connection
    record_property("what", "600 half-open connections against --max-connections 200")
    record_property("server_fds_over_idle", fds - base)
    record_property("probe_latency_ms", " ".join(f"{t * 1000:.0f}" for t in latencies))
    record_property("cap_log_lines", len(lines))


def read_status(s: socket.socket, timeout: float) -> tuple[int, bytes]:
    """Return (status, rest) of the next response, or (0, b'') if the server closed."""
    s.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return 0, data
            data += chunk
    except ConnectionResetError:
        return 0, data
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


def test_drip_fed_body_gets_408_at_the_body_deadline(store: Path,
                                                     record_property: Record) -> None:
    with served(store, "--body-timeout", "2") as server, server.connect() as s:
        s.sendall(b"POST /api/sessions/chat-1/messages HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        t0 = time.monotonic()
        status = 0
        s.settimeout(0.3)
        while time.monotonic() - t0 < 10:
            try:
                s.sendall(b" ")  # one byte every 0.3 s: never idle, never done
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            if data:
                status = int(data.split(b" ", 2)[1])
            break
        took = time.monotonic() - t0
    assert status == 408, status
    assert took < 2 + 3, took
    record_property("what", "body dripped one byte every 0.3 s, --body-timeout 2")
    record_property("answered_408_after_s", round(took, 2))


def test_idle_and_slow_keep_alive_connections_are_closed(store: Path,
                                                         record_property: Record) -> None:
    request = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with served(store, "--keep-alive-timeout", "1", "--header-timeout", "2") as server:
        with server.connect() as idle:
            idle.sendall(request)
            assert read_status(idle, 5)[0] == 200
            t0 = time.monotonic()
            assert wait_closed([idle], timeout=6) != [float("inf")]
            idle_close = time.monotonic() - t0
        with server.connect() as slow:
            slow.sendall(request)
            assert read_status(slow, 5)[0] == 200
            t0 = time.monotonic()
            closed = False
            for byte in request * 3:  # the next request, a byte every 0.25 s
                try:
                    slow.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                time.sleep(0.25)
                if time.monotonic() - t0 > 8:
                    break
            if not closed:
                closed = wait_closed([slow], timeout=3) != [float("inf")]
            slow_close = time.monotonic() - t0
    assert idle_close < 1 + 3, idle_close
    assert closed and slow_close < 2 + 3, slow_close
    record_property("what", "idle keep-alive (--keep-alive-timeout 1) and a second request's"
                    " headers trickled (--header-timeout 2)")
    record_property("idle_closed_after_s", round(idle_close, 2))
    record_property("slow_headers_closed_after_s", round(slow_close, 2))


def raw(server: Served, request: bytes) -> tuple[int, dict[str, Any]]:
    with server.connect() as s:
        s.sendall(request)
        status, rest = read_status(s, 10)
        s.settimeout(2)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
    return status, json.loads(rest) if rest.startswith(b"{") else {}


def test_foreign_host_over_tcp_is_421_and_changes_nothing(store: Path) -> None:
    with served(store, "--allowed-host", "chat.example") as server:
        port = server.port
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}"):
            for method, path in (("GET", "/api/sessions"), ("DELETE", "/api/sessions/chat-1"),
                                 ("GET", "/"), ("GET", "/app.js")):
                status, body = raw(server, f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
                                   "Connection: close\r\n\r\n".encode())
                assert status == 421, (host, method, path, status)
                assert body["error"]["code"] == "host_not_allowed"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "chat.example", f"[::1]:{port}"):
            status, body = raw(server, f"GET /api/sessions/chat-1/meta HTTP/1.1\r\nHost: {host}"
                               "\r\nConnection: close\r\n\r\n".encode())
            assert status == 200 and body["session_id"] == "chat-1", (host, status)
        status, _ = raw(server, b"GET /api/health HTTP/1.0\r\n\r\n")  # no Host at all
        assert status == 421


def test_busy_port_is_one_line_exit_7_and_the_store_untouched(tmp_path: Path) -> None:
    path = tmp_path / "untouched.db"
    with open_store(path) as s:
        s.create("victim", {"title": "long"}, [{"role": "user", "content": f"v{i}"}
                                               for i in range(20)])
        s.save("victim", [], {"title": "long"})  # a start-up recovery would write here
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        exe = Path(sys.executable).with_name("cas-store")
        proc = subprocess.run([str(exe), "--store", str(path), "serve", "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert proc.returncode == 7, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with open_store(path) as s:  # still waiting for its recovery
        assert s.load_meta("victim").message_count == 0

