"""The change feed over HTTP against real servers: live events, resume, processes, auth."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from api_helpers import make_app
from test_api_serve import Server

from cas_store import open_store


class Stream:
    """An open SSE stream read by a thread; events arrive on a queue (dicts, or comments)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status: int | None = None
        self._ready = threading.Event()
        self._cm = self.client.stream("GET", url, headers=headers or {})
        self.response = self._cm.__enter__()
        self.status = self.response.status_code
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for line in self.response.iter_lines():
                if line == "":
                    if event:
                        self.events.put(event)
                    event = {}
                elif line.startswith(":"):
                    self.events.put({"comment": line[1:].strip()})
                else:
                    key, _, value = line.partition(":")
                    event[key] = value[1:] if value.startswith(" ") else value
        except httpx.HTTPError:
            pass

    def next(self, timeout: float = 10.0, comments: bool = False) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no event in time")
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                raise AssertionError("no event in time") from None
            if "comment" in e and not comments:
                continue
            return e

    def changes(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            e = self.next(timeout)
            assert e.get("event", "message") == "message", e
            out.append({"id": int(e["id"]), **json.loads(e["data"])})
        return out

    def quiet(self, seconds: float) -> None:
        """Assert no change event arrives for this long."""
        try:
            e = self.next(seconds)
        except AssertionError:
            return
        raise AssertionError(f"unexpected event {e}")

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        self.client.close()
        self.thread.join(timeout=5)


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for s in opened:
        s.close()


def _open(streams: list[Stream], url: str, **kw: Any) -> Stream:
    s = Stream(url, **kw)
    streams.append(s)
    return s


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "feed.db"
    with open_store(path) as s:
        s.create("old", {"title": "before"}, [{"role": "user", "content": "hi"}])
    return path


@pytest.fixture
def servers(store_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []

    def start(*args: str) -> Server:
        srv = Server(store_path, *args)
        started.append(srv)
        srv.wait_ready()
        return srv

    yield start  # type: ignore[misc]
    for srv in started:
        srv.stop()  # by its PID (terminate, then kill)


def _post(base: str, path: str, body: Any, method: str = "POST",
          headers: dict[str, str] | None = None) -> httpx.Response:
    r = httpx.request(method, base + path, json=body, headers=headers or {}, timeout=10)
    assert r.status_code < 300, r.text
    return r


def test_live_events_then_exactly_the_missed_ones_on_resume(servers: Any,
                                                            streams: list[Stream]) -> None:
    srv = servers()
    s = _open(streams, srv.url + "/api/events")
    assert s.status == 200
    assert s.response.headers["content-type"].startswith("text/event-stream")
    ready = s.next()
    assert ready["event"] == "ready"
    start = int(ready["id"])
    assert start == 1  # the seeded session's one version

    _post(srv.url, "/api/sessions", {"session_id": "a", "messages": [{"role": "user",
                                                                      "content": "x"}]})
    _post(srv.url, "/api/sessions/a/messages", {"messages": [{"role": "user", "content": "y"}]})
    got = s.changes(2)
    assert [(e["session_id"], e["seq"], e["op"], e["message_count"]) for e in got] == [
        ("a", 1, "create", 1), ("a", 2, "append", 2)]
    assert got[0]["id"] > start and got[1]["id"] > got[0]["id"]
    assert set(got[1]) >= {"session_id", "seq", "op", "message_count", "suspect_shrink",
                           "intentional_shrink", "created_at", "deleted"}
    last = got[1]["id"]
    s.close()
    streams.remove(s)

    # Missed while away: a shrink, a metadata change, a delete.
    _post(srv.url, "/api/sessions/a", {"messages": [], "metadata": {}}, method="PUT")
    _post(srv.url, "/api/sessions/old", {"title": "renamed"}, method="PATCH")
    httpx.delete(srv.url + "/api/sessions/a", timeout=10).raise_for_status()

    back = _open(streams, srv.url + "/api/events", headers={"Last-Event-ID": str(last)})
    assert back.next()["event"] == "ready"
    missed = back.changes(3)
    assert [(e["session_id"], e["op"]) for e in missed] == [
        ("a", "save"), ("old", "update_metadata"), ("a", "delete")]
    assert missed[0]["suspect_shrink"] is True and missed[0]["message_count"] == 0
    assert missed[2]["deleted"] is True and missed[1]["deleted"] is False
    back.quiet(0.5)  # exactly those: nothing replayed twice
    _post(srv.url, "/api/sessions/old/messages", {"messages": [{"role": "user", "content": "z"}]})
    [live] = back.changes(1)
    assert (live["session_id"], live["op"], live["id"]) == ("old", "append",
                                                            missed[2]["id"] + 1)


def test_a_second_process_hears_of_the_first_ones_writes(servers: Any,
                                                         streams: list[Stream]) -> None:
    writer, reader = servers(), servers()
    s = _open(streams, reader.url + "/api/events")
    assert s.next()["event"] == "ready"
    for i in range(3):
        _post(writer.url, "/api/sessions/old/messages",
              {"messages": [{"role": "user", "content": f"n{i}"}]})
    got = s.changes(3)
    assert [e["seq"] for e in got] == [2, 3, 4]


def test_one_sessions_stream(servers: Any, streams: list[Stream]) -> None:
    srv = servers()
    _post(srv.url, "/api/sessions", {"session_id": "b"})
    s = _open(streams, srv.url + "/api/sessions/b/events?after=0")
    assert s.next()["event"] == "ready"
    [created] = s.changes(1)  # from the log: ?after=0 replays the whole session
    assert (created["session_id"], created["op"]) == ("b", "create")
    _post(srv.url, "/api/sessions/old/messages", {"messages": [{"role": "user", "content": "-"}]})
    httpx.delete(srv.url + "/api/sessions/b", timeout=10).raise_for_status()
    [gone] = s.changes(1)
    assert (gone["session_id"], gone["op"], gone["deleted"]) == ("b", "delete", True)
    # A deleted session's stream can still be opened (its events say it is deleted).
    again = _open(streams, srv.url + "/api/sessions/b/events?after=0")
    assert again.next()["event"] == "ready"
    assert [e["op"] for e in again.changes(2)] == ["create", "delete"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def inproc(store_path: Path) -> Iterator[str]:
    """An in-process server with a token and a 0.2 s heartbeat (stopped at the end)."""
    store = open_store(store_path, synchronous="NORMAL")
    app = make_app(store, token="t0k")
    app.state.events_heartbeat = 0.2
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()


AUTH = {"Authorization": "Bearer t0k"}


def test_heartbeat_comments_keep_an_idle_stream_alive(inproc: str,
                                                      streams: list[Stream]) -> None:
    s = _open(streams, inproc + "/api/events", headers=AUTH)
    assert s.next()["event"] == "ready"
    pings = [s.next(5, comments=True) for _ in range(2)]
    assert all("comment" in p for p in pings)


def test_refusals_are_json_errors(inproc: str) -> None:
    r = httpx.get(inproc + "/api/events", timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = httpx.get(inproc + "/api/sessions/nope/events", headers=AUTH, timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    r = httpx.get(inproc + "/api/events", headers={**AUTH, "Last-Event-ID": "x1"}, timeout=5)
    assert r.status_code == 422 and r.json()["error"]["field"] == "Last-Event-ID"
    r = httpx.get(inproc + "/api/events?after=-1", headers=AUTH, timeout=5)
    assert r.status_code == 422
