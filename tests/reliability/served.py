"""A real ``cas-store serve`` for the reliability tests: start, probe, inspect, stop by PID."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """Return a TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft open-file limit towards wanted (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class Served:
    """``cas-store serve`` on a free loopback port; output goes to a log file."""

    def __init__(self, store: Path, *args: str, name: str = "serve") -> None:
        self.store = store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = store.parent / f"{name}-{self.port}.log"
        self._out = self.log.open("w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_STORE")}
        env["PYTHONUNBUFFERED"] = "1"
        exe = Path(sys.executable).with_name("cas-store")
        self.proc = subprocess.Popen(
            [str(exe), "--store", str(store), "--synchronous", "NORMAL", "serve",
             "--port", str(self.port), "--log-level", "warning", *args],
            stdout=self._out, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.stop()}")
            time.sleep(0.1)

    def connect(self) -> socket.socket:
        """Return a new TCP connection to the server."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def open_fds(self) -> int:
        """Return how many file descriptors the server process holds."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def peak_rss(self) -> int:
        """Return the server's peak resident memory so far, in bytes (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    def output(self) -> str:
        """Return what the server has logged so far."""
        self._out.flush()
        return self.log.read_text()

    def stop(self) -> str:
        """Stop the server (by its PID) and return its log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.log.read_text()
