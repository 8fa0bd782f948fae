"""A real ``cas-store serve`` process over TCP, and the settings that guard it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from cas_store import open_store
from cas_store.api.settings import Settings, is_loopback


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("cas-store")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cas_store.cli import main; main()"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_STORE")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Server:
    def __init__(self, store: Path, *args: str) -> None:
        self.store = store
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Output goes to a file: a pipe nobody drains would fill with access-log lines and
        # block the server mid-request.
        self.log = store.with_suffix(".log")
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [*_cli(), "--store", str(store), "--synchronous", "NORMAL", "serve",
             "--port", str(self.port), *args],
            stdout=self._log_file, stderr=subprocess.STDOUT, env=_env(),
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
                time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.stop()}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.log.read_text()


@pytest.fixture
def seeded_store(tmp_path: Path) -> Path:
    """A store holding one session that lost its messages to an unintended shrink."""
    path = tmp_path / "served.db"
    with open_store(path) as store:
        store.create("victim", {"title": "long chat"},
                     [{"role": "user", "content": f"v{i}"} for i in range(20)])
        store.save("victim", [], {"title": "long chat"})  # the accident
    return path


@pytest.fixture
def server(seeded_store: Path) -> Iterator[Server]:
    srv = Server(seeded_store)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
def test_real_server_appends_survive_a_stale_metadata_poller(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        # Recovery ran before the first request was accepted.
        assert c.get("/api/sessions/victim/meta").json()["message_count"] == 20

        r = c.post("/api/sessions", json={
            "session_id": "chat", "metadata": {"title": "streamed", "active_stream_id": "s0"},
            "messages": [{"role": "system", "content": "start"}]})
        assert r.status_code == 201

        errors: list[str] = []
        appended = threading.Event()

        def appender() -> None:
            try:
                with httpx.Client(base_url=server.url, timeout=30.0) as a:
                    for i in range(1000):
                        r = a.post("/api/sessions/chat/messages",
                                   json={"messages": [{"role": "assistant", "content": f"t{i}"}]})
                        if r.status_code != 200:
                            errors.append(f"append {i}: {r.status_code} {r.text}")
            finally:
                appended.set()

        def poller() -> None:
            # The incident's shape: read metadata only, then write back stale stream fields.
            with httpx.Client(base_url=server.url, timeout=30.0) as p:
                for i in range(100):
                    meta = p.get("/api/sessions/chat/meta")
                    if meta.status_code != 200 or "messages" in meta.json():
                        errors.append(f"poll {i}: {meta.status_code} {meta.text[:200]}")
                        continue
                    stale = {"active_stream_id": None, "title": meta.json()["metadata"]["title"]}
                    headers = {"If-Match": meta.headers["etag"]} if i % 10 == 0 else {}
                    r = p.patch("/api/sessions/chat", json=stale, headers=headers)
                    if r.status_code not in (200, 412) or (r.status_code == 412 and not headers):
                        errors.append(f"patch {i}: {r.status_code} {r.text}")

        threads = [threading.Thread(target=appender), threading.Thread(target=poller)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert appended.is_set()
        assert errors == []

        session = c.get("/api/sessions/chat").json()
        contents = [m["content"] for m in session["messages"]]
        assert session["message_count"] == len(contents) == 1001
        assert contents == ["start"] + [f"t{i}" for i in range(1000)]
        assert session["metadata"] == {"title": "streamed"}
        versions = c.get("/api/sessions/chat/versions", params={"limit": 1000}).json()
        assert not any(v["suspect_shrink"] for v in versions["versions"])
        tail = c.get("/api/sessions/chat/messages", params={"offset": -3}).json()
        assert [m["content"] for m in tail["messages"]] == ["t997", "t998", "t999"]

    out = server.stop()
    assert f"store: {server.store} (sqlite backend)" in out  # which store, before recovery
    assert out.index("store: ") < out.index("recovery: ")
    assert "recovery: victim restored 0 -> 20 messages" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("args,env", [
    (["--host", "0.0.0.0"], {}),
    (["--host", "192.0.2.10"], {}),
    ([], {"CAS_STORE_HOST": "::"}),
])
def test_serve_refuses_public_address_without_token(tmp_path: Path, args: list[str],
                                                   env: dict[str, str]) -> None:
    store = tmp_path / "never.db"
    proc = subprocess.run(
        [*_cli(), "--store", str(store), "serve", "--port", str(_free_port()), *args],
        capture_output=True, text=True, env={**_env(), **env}, timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to listen on" in proc.stderr and "token" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not store.exists()  # refused before anything was opened


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAS_STORE", str(tmp_path / "env.db"))
    monkeypatch.setenv("CAS_STORE_TOKEN", "t0k")
    monkeypatch.setenv("CAS_STORE_HOST", "0.0.0.0")
    monkeypatch.setenv("CAS_STORE_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("CAS_STORE_MAX_BODY_BYTES", "65536")
    s = Settings()
    assert Path(s.store) == tmp_path / "env.db"
    assert s.token is not None and s.token.get_secret_value() == "t0k"
    assert s.cors_origins == ["http://a.example", "http://b.example"]
    assert s.max_body_bytes == 65536 and s.host == "0.0.0.0"


def test_settings_refuse_insecure_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("CAS_STORE")]:
        monkeypatch.delenv(key)
    with pytest.raises(ValidationError, match="refusing to listen"):
        Settings(host="example.com")
    with pytest.raises(ValidationError, match="must not be empty"):
        Settings(host="0.0.0.0", token=" ")
    assert Settings().host == "127.0.0.1" and Settings().cors_origins == []
    assert Settings().max_body_bytes == 32 * 1024 * 1024


@pytest.mark.parametrize("host,loop", [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
    ("my-host", False),
])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop
