"""What the search index and the change feed cost, beside baselines from the same run.

1. Append latency with the search index kept in the commit's transaction, against the same
   appends on a store opened with the index off (``SQLiteBackend(index_search=False)``),
   alternating append by append so both see the same machine. Target: <= 1.25x.
2. Search latency over 100,000 messages in 1,000 sessions (Zipf-distributed words), per
   kind of query: a rare word, a mid-frequency word, a frequent word, two words, a phrase,
   a prefix. Target: p50 <= 20 ms over the mix.
3. The index's size (FTS5 + spans + docs, from dbstat) beside the messages' own size.
4. 500 idle SSE streams on a real ``cas-store serve``: the server's memory before and
   after, the latency of an append through the API with 0 and with 500 streams open, and
   that every stream received every append.

    python -m bench.feed_search_bench            # the figures of bench/RESULTS.md
    python -m bench.feed_search_bench --quick    # small sizes, a minute
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from cas_store import Store, open_store
from cas_store.backends.sqlite import SQLiteBackend
from cas_store.objects import Kind

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "da", "zo", "fi", "gu",
             "be", "xa", "qu", "ni", "so", "te", "wa"]


def vocabulary(n: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(sorted(words), key=lambda w: rng.random())  # not set order: hash-seeded


class Text:
    """Messages of Zipf-distributed words (rank r drawn with weight 1/r)."""

    def __init__(self, rng: random.Random, vocab_size: int = 20_000) -> None:
        self.rng = rng
        self.vocab = vocabulary(vocab_size, rng)
        weights = [1 / (r + 1) for r in range(vocab_size)]
        total = sum(weights)
        acc = 0.0
        self.cum = []
        for w in weights:
            acc += w / total
            self.cum.append(acc)

    def words(self, n: int) -> list[str]:
        return self.rng.choices(self.vocab, cum_weights=self.cum, k=n)

    def message(self, role: str) -> dict[str, str]:
        return {"role": role, "content": " ".join(self.words(self.rng.randint(15, 80)))}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# --- 1. append latency ------------------------------------------------------------------------


def append_latency(tmp: Path, rounds: int, per_round: int, sync: str) -> dict[str, Any]:
    rng = random.Random(1)
    text = Text(rng)
    stores = {
        "with index": Store(SQLiteBackend(tmp / f"with-{sync}.db", synchronous=sync)),
        "without index": Store(SQLiteBackend(tmp / f"without-{sync}.db", synchronous=sync,
                                             index_search=False)),
    }
    times: dict[str, list[float]] = {k: [] for k in stores}
    for s in stores.values():
        for i in range(20):
            s.create(f"s{i}", {}, [text.message("user") for _ in range(50)])
    for _ in range(rounds):
        batch = [text.message("assistant") for _ in range(per_round)]
        for j, m in enumerate(batch):
            for name, s in stores.items():  # alternating: the same moment for both
                t = time.perf_counter()
                s.append(f"s{j % 20}", [m])
                times[name].append(time.perf_counter() - t)
    # The index's deferred half: the words of the appended messages go into FTS5 at the
    # next search, many per transaction. Time that first search against a second one.
    first = time.perf_counter()
    stores["with index"].search("zzzz")
    flush = time.perf_counter() - first
    second = time.perf_counter()
    stores["with index"].search("zzzz")
    again = time.perf_counter() - second
    for s in stores.values():
        s.close()
    out: dict[str, Any] = {
        name: {"p50_ms": statistics.median(ts) * 1e3, "p95_ms": pct(ts, 0.95) * 1e3,
               "mean_ms": statistics.fmean(ts) * 1e3, "n": len(ts)}
        for name, ts in times.items()}
    out["flush_ms"] = (flush - again) * 1e3
    # Pending: the 1,000 messages of the set-up plus the timed appends.
    out["pending"] = 20 * 50 + len(times["with index"])
    out["flush_ms_per_message"] = (flush - again) * 1e3 / out["pending"]
    out["ratio_p50"] = out["with index"]["p50_ms"] / out["without index"]["p50_ms"]
    out["ratio_mean"] = out["with index"]["mean_ms"] / out["without index"]["mean_ms"]
    return out


# --- 2 and 3. search latency and index size ---------------------------------------------------


def build_corpus(path: Path, sessions: int, per_session: int) -> tuple[Store, Text, float]:
    rng = random.Random(2)
    text = Text(rng)
    store = open_store(path, synchronous="NORMAL")
    start = time.perf_counter()
    for base in range(0, sessions, 50):
        with store.batch():
            for i in range(base, min(base + 50, sessions)):
                msgs = [text.message("user" if k % 2 == 0 else "assistant")
                        for k in range(per_session)]
                store.create(f"chat-{i:05d}", {"title": f"chat {i}"}, msgs)
    return store, text, time.perf_counter() - start


def queries(text: Text, store: Store, n: int, sessions: int) -> dict[str, list[str]]:
    rng = random.Random(3)
    v = text.vocab
    phrases = []
    for _ in range(n):
        i = rng.randrange(sessions)
        words = store.messages(f"chat-{i:05d}", 3, 1)[0]["content"].split()
        k = rng.randrange(len(words) - 1)
        phrases.append(f'"{words[k]} {words[k + 1]}"')
    return {
        "rare word (rank 5k-20k)": [rng.choice(v[5000:]) for _ in range(n)],
        "mid word (rank 200-2k)": [rng.choice(v[200:2000]) for _ in range(n)],
        "frequent word (rank 10-100)": [rng.choice(v[10:100]) for _ in range(n)],
        "two words": [f"{rng.choice(v[50:1000])} {rng.choice(v[50:1000])}" for _ in range(n)],
        "phrase": phrases,
        "prefix": [rng.choice(v[200:2000])[:4] + "*" for _ in range(n)],
    }


def search_latency(store: Store, qs: dict[str, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    every: list[float] = []
    for kind, items in qs.items():
        ts, hits = [], []
        for q in items:
            t = time.perf_counter()
            page = store.search(q, limit=20)
            ts.append(time.perf_counter() - t)
            hits.append(len(page.hits))
        every += ts
        out[kind] = {"p50_ms": statistics.median(ts) * 1e3, "p95_ms": pct(ts, 0.95) * 1e3,
                     "mean_hits": statistics.fmean(hits)}
    out["all"] = {"p50_ms": statistics.median(every) * 1e3, "p95_ms": pct(every, 0.95) * 1e3,
                  "n": len(every)}
    return out


def sizes(store: Store) -> dict[str, float]:
    totals = store.backend.object_totals()
    n, payload, stored = totals.get(Kind.CHUNK, (0, 0, 0))
    index = store.backend.search_bytes()
    store.backend.checkpoint()  # type: ignore[attr-defined]
    return {"messages": n, "message_json_bytes": payload, "message_stored_bytes": stored,
            "index_bytes": index, "store_file_bytes": store.backend.disk_bytes()}


# --- 4. idle streams --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def http_appends(base: str, n: int) -> list[float]:
    ts = []
    with httpx.Client(timeout=30) as c:
        for i in range(n):
            t = time.perf_counter()
            r = c.post(f"{base}/api/sessions/live/messages",
                       json={"messages": [{"role": "user", "content": f"m{i}"}]})
            ts.append(time.perf_counter() - t)
            r.raise_for_status()
    return ts


async def open_streams(port: int, paths: list[str]) -> tuple[list[Any], list[int]]:
    conns = []
    counts = [0] * len(paths)
    for path in paths:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        conns.append((reader, writer))
    for reader, _w in conns:  # each got its headers and its ready event
        await reader.readuntil(b"event: ready")
    return conns, counts


async def count_events(conns: list[Any], counts: list[int], stop: asyncio.Event) -> None:
    async def one(i: int, reader: asyncio.StreamReader) -> None:
        while not stop.is_set():
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"id: "):
                counts[i] += 1

    tasks = [asyncio.create_task(one(i, r)) for i, (r, _w) in enumerate(conns)]
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def idle_streams(tmp: Path, n_streams: int, n_appends: int, broadcast: bool) -> dict[str, Any]:
    """Streams on /api/events (each gets every append) or one a session (all idle)."""
    path = tmp / f"served-{broadcast}.db"
    with open_store(path) as s:
        s.create("live", {}, [])
        for i in range(0 if broadcast else n_streams):
            s.create(f"tab-{i}", {}, [])
    paths = (["/api/events"] * n_streams if broadcast
             else [f"/api/sessions/tab-{i}/events" for i in range(n_streams)])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_STORE")}
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", "from cas_store.cli import main; main()",
                             "--store", str(path), "serve", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        http_appends(base, 20)  # warm up
        rss_before = rss_kib(proc.pid)
        quiet = http_appends(base, n_appends)

        result: dict[str, Any] = {}

        async def run() -> None:
            conns, counts = await open_streams(port, paths)
            await asyncio.sleep(1.0)
            result["rss_streams_kib"] = rss_kib(proc.pid)
            stop = asyncio.Event()
            counter = asyncio.create_task(count_events(conns, counts, stop))
            ts = await asyncio.to_thread(http_appends, base, n_appends)
            await asyncio.sleep(2.0)  # let the last events arrive
            stop.set()
            await counter
            result["busy"] = ts
            result["delivered"] = counts
            for _r, w in conns:
                w.close()

        asyncio.run(run())
        busy = result["busy"]
        return {
            "streams": n_streams,
            "rss_before_kib": rss_before,
            "rss_with_streams_kib": result["rss_streams_kib"],
            "kib_per_stream": (result["rss_streams_kib"] - rss_before) / n_streams,
            "append_p50_ms_0": statistics.median(quiet) * 1e3,
            "append_p95_ms_0": pct(quiet, 0.95) * 1e3,
            "append_p50_ms_n": statistics.median(busy) * 1e3,
            "append_p95_ms_n": pct(busy, 0.95) * 1e3,
            "appends": n_appends,
            "streams_with_every_event": sum(c >= n_appends for c in result["delivered"]),
            "events_delivered": sum(result["delivered"]),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def append_part(tmp: Path, quick: bool) -> None:
    print("## append latency, search index on vs off (alternating)")
    for sync in ("FULL", "NORMAL"):
        a = append_latency(tmp, rounds=5 if quick else 20, per_round=20 if quick else 50,
                           sync=sync)
        for name in ("with index", "without index"):
            r = a[name]
            print(f"  synchronous={sync:6} {name:14} p50 {r['p50_ms']:.3f} ms  p95"
                  f" {r['p95_ms']:.3f} ms  mean {r['mean_ms']:.3f} ms  (n={r['n']})")
        print(f"  synchronous={sync:6} ratio p50 {a['ratio_p50']:.2f}x  mean"
              f" {a['ratio_mean']:.2f}x  (target <= 1.25x)")
        print(f"  synchronous={sync:6} deferred FTS5 work, paid by the next search:"
              f" {a['flush_ms']:.1f} ms for {a['pending']:,} messages"
              f" ({a['flush_ms_per_message'] * 1e3:.0f} us a message)")


def search_part(tmp: Path, quick: bool) -> None:
    sessions, per = (100, 100) if quick else (1000, 100)
    print(f"\n## search over {sessions * per:,} messages in {sessions:,} sessions")
    store, text, built = build_corpus(tmp / "corpus.db", sessions, per)
    t = time.perf_counter()
    store.search("zzzz")  # the first search puts the pending words into FTS5
    flushed = time.perf_counter() - t
    print(f"  built in {built:.1f} s (spans and docs as written); the first search put"
          f" {sessions * per:,} messages' words into FTS5 in {flushed:.1f} s")
    qs = queries(text, store, 20 if quick else 100, sessions)
    search_latency(store, {k: v[:5] for k, v in qs.items()})  # warm the page cache
    s = search_latency(store, qs)
    for kind, r in s.items():
        extra = f"  mean hits {r['mean_hits']:.1f}" if "mean_hits" in r else ""
        print(f"  {kind:28} p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms{extra}")
    print("  target: p50 <= 20 ms over the mix")
    z = sizes(store)
    print(f"\n## index size: {z['index_bytes'] / 2**20:.1f} MiB for {z['messages']:,}"
          f" messages of {z['message_json_bytes'] / 2**20:.1f} MiB JSON"
          f" ({z['message_stored_bytes'] / 2**20:.1f} MiB stored compressed);"
          f" {z['index_bytes'] / z['message_json_bytes']:.2f}x the JSON,"
          f" store file {z['store_file_bytes'] / 2**20:.1f} MiB")
    t = time.perf_counter()
    r = store.reindex()
    print(f"  reindex from the log: {time.perf_counter() - t:.1f} s ({r.spans:,} spans)")
    store.close()


def streams_part(tmp: Path, quick: bool) -> None:
    n = 50 if quick else 500
    for broadcast in (False, True):
        what = ("on /api/events, each receiving every append" if broadcast
                else "one a session (idle tabs), appends to another session")
        print(f"\n## {n} SSE streams on a real server: {what}")
        st = idle_streams(tmp, n, 30 if quick else 100, broadcast)
        print(f"  server RSS {st['rss_before_kib'] / 1024:.1f} MiB -> "
              f"{st['rss_with_streams_kib'] / 1024:.1f} MiB with {n} streams"
              f" ({st['kib_per_stream']:.1f} KiB a stream)")
        print(f"  append through the API: p50 {st['append_p50_ms_0']:.2f} ms (p95"
              f" {st['append_p95_ms_0']:.2f}) with 0 streams, p50"
              f" {st['append_p50_ms_n']:.2f} ms (p95 {st['append_p95_ms_n']:.2f}) with {n}")
        if broadcast:
            print(f"  streams that received all {st['appends']} appends:"
                  f" {st['streams_with_every_event']} of {n}")
        else:
            print(f"  events delivered to the idle streams: {st['events_delivered']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["append", "search", "streams"],
                    help="run one part only")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="feed-search-"))
    parts = {"append": append_part, "search": search_part, "streams": streams_part}
    try:
        for name, part in parts.items():
            if args.only in (None, name):
                part(tmp, args.quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
