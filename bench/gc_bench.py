"""GC benchmark: a store of many sessions x versions, then ``gc --keep-last 20``.

Builds (once, cached under bench/.work/) a store of --sessions sessions with --versions
versions each: a realistic mix of appends, metadata updates, retries (intentional
rewinds), compactions and accidental (suspect) shrinks, with version times spread over
the last 60 days. Then, on a copy, runs GC in a child process and prints objects/s
marked and swept, the child's peak memory, and bytes before/after. Also measures the
memory of the mark set itself: a bitmap over object ordinals against the obvious Python
sets, scaled to 10 million objects.

    .venv/bin/python bench/gc_bench.py                       # 1,000 x 200 (builds once)
    .venv/bin/python bench/gc_bench.py --sessions 50 --versions 50   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cas_store import SQLiteBackend, Store, gc  # noqa: E402
from cas_store.gc import Bitmap  # noqa: E402

WORK = ROOT / "bench" / ".work"
DAY = 86400.0
WORDS = [
    "the", "a", "to", "of", "and", "in", "is", "it", "you", "that", "for", "on", "with", "as",
    "be", "this", "was", "are", "have", "not", "but", "what", "can", "so", "if", "do", "we",
    "my", "your", "an", "about", "will", "there", "one", "all", "would", "they", "from", "at",
    "by", "model", "token", "context", "window", "summary", "function", "return", "error",
    "value", "python", "request", "server", "session", "message", "retry", "answer",
    "question", "code", "file", "test", "data", "store",
]


def corpus(rng: random.Random, size: int = 1 << 20) -> str:
    out, n = [], 0
    while n < size:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def build(path: Path, sessions: int, versions: int, seed: int = 1) -> None:
    """Build the store at path (via a temporary file, so a cut build is never cached)."""
    rng = random.Random(seed)
    text = corpus(rng)
    tmp = path.with_suffix(".building")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    store = Store(SQLiteBackend(tmp, synchronous="NORMAL"))
    now = time.time()
    step = 60 * DAY / versions
    t0 = time.monotonic()

    def msg(role: str) -> dict[str, str]:
        n = rng.randint(200, 2000)
        i = rng.randrange(len(text) - n)
        return {"role": role, "content": text[i : i + n]}

    for s in range(sessions):
        sid = f"s{s:05}"
        start = now - 60 * DAY + rng.random() * step
        store.create(sid, {"title": f"chat {s}", "model": "m1"}, [msg("user")], at=start)
        count = 1
        for k in range(1, versions):
            at = start + k * step
            roll = rng.random()
            if roll < 0.72 or count < 4:
                new = [msg("assistant")] if rng.random() < 0.5 else [msg("user"), msg("assistant")]
                store.append(sid, new, at=at)
                count += len(new)
            elif roll < 0.85:
                store.update_metadata(sid, {"title": f"chat {s} v{k}", "tokens": k * 100}, at=at)
            elif roll < 0.93:  # retry: drop the last answer, append a new one
                store.rewind(sid, count - 1, [msg("assistant")], at=at)
            elif roll < 0.97:  # an accidental shrink: a stale client saves a prefix
                keep = rng.randint(1, count - 1)
                loaded = store.messages(sid, 0, keep)
                store.save(sid, loaded, at=at)
                count = keep
            else:  # context compaction: a summary plus the last few messages
                tail = store.messages(sid, -4)
                store.save(sid, [msg("system"), *tail], intentional_shrink=True, at=at)
                count = 1 + len(tail)
        if (s + 1) % max(1, sessions // 20) == 0:
            rate = (s + 1) * versions / (time.monotonic() - t0)
            print(f"  built {s + 1}/{sessions} sessions ({rate:,.0f} versions/s)", flush=True)
    store.backend.checkpoint()  # type: ignore[attr-defined]
    store.close()
    os.replace(tmp, path)


def totals(path: Path) -> dict[str, int]:
    con = sqlite3.connect(path)
    objects, stored = con.execute("SELECT count(*), sum(length(data)) FROM objects").fetchone()
    versions = con.execute("SELECT count(*) FROM versions").fetchone()[0]
    con.close()
    return {"objects": objects, "stored_bytes": stored or 0, "versions": versions,
            "file_bytes": path.stat().st_size}


def run_child(path: Path, args: list[str]) -> dict[str, object]:
    """Run GC on path in a fresh process; return its report, peak RSS and baseline RSS."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), *args],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def child(path: Path, keep_last: int | None, dry_run: bool) -> None:
    store = Store(SQLiteBackend(path, synchronous="NORMAL"))
    store.stats()  # connections, caches, imports: the baseline before GC
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = gc(store, keep_last=keep_last, grace=0, dry_run=dry_run)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if not dry_run:
        store.backend.checkpoint()  # type: ignore[attr-defined]
    store.close()
    print(json.dumps({"report": report.to_json(), "base_kb": base, "peak_kb": peak}))


def mark_set_memory(n: int = 1_000_000) -> dict[str, float]:
    """Bytes per object of three mark sets, measured with tracemalloc over n random ids."""
    rng = random.Random(7)
    ids = [rng.randbytes(32) for _ in range(n)]
    out = {}
    tracemalloc.start()
    s: object = set(ids)  # the 32-byte ids already exist (read from pages): set cost only
    out["set of 32-byte ids (ids already in memory)"] = tracemalloc.get_traced_memory()[0] / n
    del s
    tracemalloc.stop()
    tracemalloc.start()
    s = {bytes(bytearray(i)) for i in ids}  # copies: ids the walk has already let go of
    out["set of 32-byte ids (owned by the set)"] = tracemalloc.get_traced_memory()[0] / n
    del s
    tracemalloc.stop()
    tracemalloc.start()
    s = {i.hex() for i in ids}
    out["set of hex strings"] = tracemalloc.get_traced_memory()[0] / n
    del s
    tracemalloc.stop()
    tracemalloc.start()
    b = Bitmap()
    for k in range(n):
        b.add(k)
    out["bitmap over ordinals"] = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--versions", type=int, default=200)
    ap.add_argument("--keep-last", type=int, default=20)
    ap.add_argument("--rebuild", action="store_true", help="Build the store again.")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.keep_last or None, a.dry_run)
        return

    WORK.mkdir(parents=True, exist_ok=True)
    cached = WORK / f"gc-{a.sessions}x{a.versions}.db"
    if a.rebuild or not cached.exists():
        print(f"building {cached.name}: {a.sessions} sessions x {a.versions} versions")
        t = time.monotonic()
        build(cached, a.sessions, a.versions)
        print(f"  built in {time.monotonic() - t:.0f} s")
    work = WORK / "gc-run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    shutil.copyfile(cached, work)

    before = totals(work)
    print(f"\nstore: {a.sessions} sessions x {a.versions} versions: {before['objects']:,} objects,"
          f" {before['versions']:,} versions, {before['stored_bytes'] / 1e6:.1f} MB stored,"
          f" file {before['file_bytes'] / 1e6:.1f} MB")

    dry = run_child(work, ["--keep-last", str(a.keep_last), "--dry-run"])
    assert totals(work) == before, "dry run changed the store"
    real = run_child(work, ["--keep-last", str(a.keep_last)])
    after = totals(work)
    r = real["report"]
    assert isinstance(r, dict)
    print(f"\ngc --keep-last {a.keep_last} (grace 0):")
    print(f"  versions     {r['versions_pruned']:,} pruned, {r['versions_kept']:,} kept"
          f" (dry run predicted {dry['report']['versions_pruned']:,})")  # type: ignore[index]
    print(f"  mark         {r['objects_marked']:,} objects in {r['mark_seconds']:.2f} s"
          f" = {r['objects_marked'] / max(r['mark_seconds'], 1e-9):,.0f} objects/s")
    print(f"  sweep        {r['objects_swept']:,} swept of {before['objects']:,} scanned in"
          f" {r['sweep_seconds']:.2f} s = {r['objects_swept'] / max(r['sweep_seconds'], 1e-9):,.0f}"
          f" swept/s, {before['objects'] / max(r['sweep_seconds'], 1e-9):,.0f} scanned/s")
    print(f"  total        {r['seconds']:.2f} s")
    base, peak = int(real["base_kb"]), int(real["peak_kb"])  # type: ignore[call-overload]
    print(f"  peak memory  {peak / 1024:.1f} MB RSS ({(peak - base) / 1024:.1f} MB above the"
          f" process before GC)")
    print(f"  objects      {before['objects']:,} -> {after['objects']:,}")
    mb = 1e6
    print(f"  stored bytes {before['stored_bytes'] / mb:.1f} MB ->"
          f" {after['stored_bytes'] / mb:.1f} MB")
    print(f"  versions     {before['versions']:,} -> {after['versions']:,}")
    print(f"  file bytes   {before['file_bytes'] / mb:.1f} MB -> {after['file_bytes'] / mb:.1f} MB"
          " (SQLite reuses freed pages; VACUUM returns them to the OS)")

    print("\nmark set memory, measured over 1,000,000 ids, scaled to 10,000,000 objects:")
    for name, per in mark_set_memory().items():
        print(f"  {name:45} {per:8.2f} bytes/object  {per * 10_000_000 / 1e6:10.1f} MB")


if __name__ == "__main__":
    main()
