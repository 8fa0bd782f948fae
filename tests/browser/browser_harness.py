"""What the page tests share: a real ``cas-store serve``, chromium, request recording.

chromium comes from scripts/sysdeps.sh (apt); when it is missing the tests fail, never skip.
Screenshots go to test-artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}


def chromium_path() -> str:
    """Return the system chromium, or fail the run saying how to install it."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    if not found:
        pytest.fail("chromium is not installed: run `bash scripts/sysdeps.sh` (apt)",
                    pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cas_store_exe() -> str:
    exe = Path(sys.executable).with_name("cas-store")
    return str(exe) if exe.exists() else "cas-store"


@dataclass
class Server:
    """A running ``cas-store serve`` subprocess."""

    store: Path
    token: str | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def start(self) -> Server:
        # No start-up recovery: the pages must show the seeded suspect shrink (recovery
        # would resolve it however old it is) and offer Recover for it themselves.
        cmd = [cas_store_exe(), "--store", str(self.store), "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--no-recover"]
        if self.token:
            cmd += ["--token", self.token]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_STORE")}
        self.log = self.store.with_suffix(".log")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cas-store serve exited:\n{self.log.read_text()}")
            try:
                r = httpx.get(f"{self.base}/api/sessions?limit=1", headers=self.headers(),
                              timeout=2)
                if r.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"cas-store serve did not come up:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.base}/api{path}", headers=self.headers(), timeout=10)
        r.raise_for_status()
        return r.json()


@dataclass
class Recorder:
    """Every request a page made, and every script error it raised."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def assert_only(self, base: str) -> None:
        origin = urlsplit(base)
        foreign = [u for u in self.requests
                   if (urlsplit(u).scheme, urlsplit(u).netloc) != (origin.scheme, origin.netloc)]
        assert not foreign, f"requests left the server: {foreign}"
        assert self.requests, "no request was recorded"
        assert not self.errors, f"script errors: {self.errors}"


OpenPage = Callable[..., tuple[Page, Recorder]]


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/browser/ and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
