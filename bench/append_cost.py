"""What one append costs at N = 100 … 100,000 messages: cas-store beside a whole-JSON-file store.

For each N, a session of N messages is built, then K more messages are appended one at a
time (every version kept). Printed per store and N:

* bytes written per append, excluding the message's own chunk (cas-store: new objects'
  stored bytes + the log entry and head row it adds; JSON file: the whole file rewritten),
  and the store file's growth per append (after a WAL checkpoint);
* append latency (median, p95), load_meta latency, full load latency;
* and once: the bytes one small-key metadata patch writes for a session holding 400 KB of
  metadata (a chat UI's scene index), beside the whole-object cost of the previous format.

Both stores fsync every save (cas-store: WAL + synchronous=FULL; JSON: fsync + os.replace).

Then, at N = 1,000 and 100,000, what one save that edits the list writes: an edit of
message 0, of the middle one, of the last one, a deletion in the middle, and compaction
of the first half into one summary message. Pages written by cas-store (content-defined
boundaries) beside the pages a fixed-fanout tree (16 ids a page, as stores before it
were written) would have to write for the same two lists, computed in the same run.

    python -m bench.append_cost            # N = 100, 1k, 10k, 100k; edits at 1k and 100k
    python -m bench.append_cost --quick    # N = 100, 1k; edits at 1k
    python -m bench.append_cost --edits    # the edits table only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cas_store import open_store
from cas_store.backends import Commit
from cas_store.objects import Kind

WORDS = (  # noqa: SIM905 - one line per sentence-ish run reads better
    "the a to of and in that is for it on with as was be this by at from or an are "
    "not you have but they we his her she he one all would there their what so up "
    "out if about who get which go me when make can like time no just him know take "
    "people into year your good some could them see other than then now look only "
    "come its over think also back after use two how our work first well way even "
    "new want because any these give day most us session message store version "
    "pointer chunk manifest recovery python json sqlite latency conversation "
    "assistant user tool result error retry "
).split()


def make_message(rng: random.Random, i: int) -> dict[str, Any]:
    """Return a realistic chat message of 200-2,000 characters (some with tool calls)."""
    n = rng.randint(200, 2000)
    words: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(WORDS)
        words.append(w)
        size += len(w) + 1
    msg: dict[str, Any] = {
        "role": "user" if i % 2 == 0 else "assistant",
        "content": " ".join(words)[:n],
        "id": f"msg-{i:07d}",
        "created_at": 1_700_000_000 + i * 7,
    }
    if i % 2 and rng.random() < 0.15:
        msg["tool_calls"] = [{
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": rng.choice(["search", "read_file", "run"]),
                         "arguments": json.dumps({"q": " ".join(rng.sample(WORDS, 5))})},
        }]
    return msg


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Return the wall-clock seconds of repeat calls of fn."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def p95(xs: list[float]) -> float:
    """Return the 95th percentile."""
    return sorted(xs)[int(0.95 * (len(xs) - 1))]


class JsonFileStore:
    """The incident's design: one JSON file per session, rewritten whole on every save."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _write(self, sid: str, session: dict[str, Any]) -> int:
        path = self.root / f"{sid}.json"
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(session, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
        return size

    def create(self, sid: str, metadata: dict[str, Any], messages: list[Any]) -> None:
        """Write a new session file."""
        self._write(sid, {**metadata, "messages": messages})

    def append(self, sid: str, session: dict[str, Any], message: Any) -> int:
        """Append in memory and rewrite the whole file; return bytes written."""
        session["messages"].append(message)
        return self._write(sid, session)

    def load(self, sid: str) -> dict[str, Any]:
        """Parse the whole file."""
        with open(self.root / f"{sid}.json", encoding="utf-8") as f:
            return json.load(f)  # type: ignore[no-any-return]

    def load_meta(self, sid: str) -> dict[str, Any]:
        """Parse the whole file and drop the messages (the naive metadata read)."""
        s = self.load(sid)
        s.pop("messages", None)
        return s


def bench_cas(root: Path, n: int, k: int, rng: random.Random) -> dict[str, float]:
    """Measure cas-store at N messages; return the figures."""
    store = open_store(root / f"cas-{n}.db")
    backend = store.backend
    sid = "bench"
    msgs = [make_message(rng, i) for i in range(n)]
    store.create(sid, {"title": "benchmark", "model": "m-1"}, msgs)
    written: list[int] = []
    real_commit = backend.commit

    def counting_commit(change: Commit) -> None:
        # Everything the pointer move adds besides the message chunks themselves: new
        # pages, manifest, metadata (none on append), the log entry and the head row.
        extra = sum(len(o.frame) for o in change.objects
                    if o.frame is not None and o.kind != Kind.CHUNK)
        e = change.entry
        log_row = len(e.sid) + 8 + 32 + 8 + len(e.op) + 8 + 8 + 1
        head_row = len(e.sid) + 8 + 32 + 8 + 8 + len(change.head.title) + 8 + 8 + 2
        written.append(extra + log_row + head_row)
        real_commit(change)

    backend.commit = counting_commit  # type: ignore[method-assign]
    backend.checkpoint()  # type: ignore[attr-defined]
    size0 = sum(backend.file_sizes().values())  # type: ignore[attr-defined]
    chunk_bytes = 0
    lat = []
    for i in range(n, n + k):
        m = make_message(rng, i)
        from cas_store.objects import canonical_json, compress

        chunk_bytes += len(compress(canonical_json(m)))
        t = time.perf_counter()
        store.append(sid, [m])
        lat.append(time.perf_counter() - t)
    backend.commit = real_commit  # type: ignore[method-assign]
    backend.checkpoint()  # type: ignore[attr-defined]
    growth = (sum(backend.file_sizes().values()) - size0 - chunk_bytes) / k  # type: ignore[attr-defined]
    meta = timed(lambda: store.load_meta(sid), 50)
    full = timed(lambda: store.load(sid), 3 if n >= 100_000 else 10)
    store.close()
    return {
        "written": statistics.mean(written),
        "written_max": max(written),
        "growth": growth,
        "append_med": statistics.median(lat),
        "append_p95": p95(lat),
        "meta": statistics.median(meta),
        "load": statistics.median(full),
    }


def bench_json(root: Path, n: int, k: int, rng: random.Random) -> dict[str, float]:
    """Measure the whole-JSON-file store at N messages; return the figures."""
    store = JsonFileStore(root)
    sid = f"json-{n}"
    msgs = [make_message(rng, i) for i in range(n)]
    session: dict[str, Any] = {"title": "benchmark", "model": "m-1", "messages": msgs}
    store.create(sid, {"title": "benchmark", "model": "m-1"}, msgs)
    written, lat = [], []
    for i in range(n, n + k):
        m = make_message(rng, i)
        t = time.perf_counter()
        written.append(store.append(sid, session, m))
        lat.append(time.perf_counter() - t)
    meta = timed(lambda: store.load_meta(sid), 3 if n >= 100_000 else 20)
    full = timed(lambda: store.load(sid), 3 if n >= 100_000 else 10)
    return {
        "written": statistics.mean(written),
        "written_max": max(written),
        "growth": 0.0,
        "append_med": statistics.median(lat),
        "append_p95": p95(lat),
        "meta": statistics.median(meta),
        "load": statistics.median(full),
    }


def _fixed_pages(ids: list[bytes], cut: int) -> tuple[int, int]:
    """Return (pages, stored bytes) the fixed-fanout splice rewrote for a save of ids whose
    first change from the head is at position cut: every page holding a position at or
    after the cut (all leaves from there on, and their parents), 16 ids a page."""
    from cas_store.objects import compress, encode_page, object_id

    pages = nbytes = 0

    def put(height: int, children: list[bytes], end: int) -> bytes:
        nonlocal pages, nbytes
        payload = encode_page(height, children)
        if end > cut:
            pages += 1
            nbytes += len(compress(payload))
        return object_id(Kind.PAGE, payload)

    full = len(ids) // 16 * 16
    level = [(put(0, ids[i : i + 16], i + 16), i + 16) for i in range(0, full, 16)]
    h = 0
    while len(level) > 1:
        h += 1
        level = [(put(h, [o for o, _ in level[i : i + 16]], level[i : i + 16][-1][1]),
                  level[i : i + 16][-1][1]) for i in range(0, len(level), 16)]
    return pages, nbytes


EDITS = ("edit message 0", "edit the middle message", "edit the last message",
         "delete the middle message", "compact the first half to one summary")


def _edited(msgs: list[Any], edit: str, rng: random.Random) -> list[Any]:
    n = len(msgs)
    new = make_message(rng, 10**6)
    if edit == "edit message 0":
        return [new, *msgs[1:]]
    if edit == "edit the middle message":
        return [*msgs[: n // 2], new, *msgs[n // 2 + 1 :]]
    if edit == "edit the last message":
        return [*msgs[:-1], new]
    if edit == "delete the middle message":
        return [*msgs[: n // 2], *msgs[n // 2 + 1 :]]
    summary = {"role": "system", "content": "Summary of the first half: " + new["content"]}
    return [summary, *msgs[n // 2 :]]


def bench_edits(root: Path, n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Measure the pages one editing save writes at N messages, beside fixed fan-out."""
    from cas_store.objects import canonical_json, object_id

    store = open_store(root / f"edits-{n}.db")
    sid = "edits"
    msgs = [make_message(rng, i) for i in range(n)]
    base = store.create(sid, {"title": "benchmark"}, msgs).seq
    staged: list[tuple[int, int]] = []
    real_commit = store.backend.commit

    def counting_commit(change: Commit) -> None:
        pages = [o for o in change.objects if o.frame is not None and o.kind == Kind.PAGE]
        staged.append((len(pages), sum(len(o.frame or b"") for o in pages)))
        real_commit(change)

    def ids_of(ms: list[Any]) -> list[bytes]:
        return [object_id(Kind.CHUNK, canonical_json(m)) for m in ms]

    old_ids = ids_of(msgs)
    rows = []
    for edit in EDITS:
        new = _edited(msgs, edit, rng)
        store.backend.commit = counting_commit  # type: ignore[method-assign]
        t = time.perf_counter()
        store.save(sid, new, intentional_shrink=True)
        seconds = time.perf_counter() - t
        store.backend.commit = real_commit  # type: ignore[method-assign]
        pages, nbytes = staged.pop()
        assert store.load(sid).messages == new
        store.restore(sid, base)  # names the old manifest again: writes no page
        new_ids = ids_of(new)
        cut = next((i for i, (a, b) in enumerate(zip(old_ids, new_ids, strict=False)) if a != b),
                   min(len(old_ids), len(new_ids)))
        fixed_pages, fixed_bytes = _fixed_pages(new_ids, cut)
        rows.append({"n": n, "edit": edit, "pages": pages, "bytes": nbytes,
                     "fixed_pages": fixed_pages, "fixed_bytes": fixed_bytes,
                     "seconds": seconds})
    store.close()
    return rows


def print_edits(rows: list[dict[str, Any]]) -> None:
    """Print the edits table."""
    print()
    print("Pages one save writes (every version kept): cas-store's content-defined pages beside")
    print("what the fixed-fanout tree (16 ids a page) rewrote for the same save: every page")
    print("from the first changed position on. Same lists, same run.")
    print()
    print("| N | save | pages written | page bytes | fixed fan-out: pages | fixed fan-out: bytes"
          " | save time (whole list sent) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['edit']} | {r['pages']} | {fmt_bytes(r['bytes'])} "
              f"| {r['fixed_pages']:,} | {fmt_bytes(r['fixed_bytes'])} "
              f"| {ms(r['seconds'])} |")


def bench_metadata_patch(root: Path, meta_bytes: int, patches: int) -> dict[str, float]:
    """Measure patching one small key of a session with meta_bytes of metadata.

    Returns the bytes of new non-chunk objects per patch (logical and stored), beside
    what writing the whole metadata object costs (the previous format: one object).
    """
    from cas_store.objects import canonical_json, compress

    store = open_store(root / f"meta-{meta_bytes}.db")
    scenes: dict[str, Any] = {}
    rng = random.Random(meta_bytes)
    size = 0
    while size < meta_bytes:
        scene = {"summary": " ".join(rng.choice(WORDS) for _ in range(40)),
                 "anchors": [rng.randrange(10_000) for _ in range(8)]}
        scenes[f"scene-{len(scenes):05d}"] = scene
        size += len(canonical_json(scene)) + 16
    metadata: dict[str, Any] = {"title": "benchmark", "model": "m-1", "pinned": False,
                                "anchor_activity_scenes": scenes}
    store.create("meta", metadata, [make_message(rng, 0)])
    logical: list[int] = []
    stored: list[int] = []
    real_commit = store.backend.commit

    def counting_commit(change: Commit) -> None:
        new = [o for o in change.objects if o.frame is not None and o.kind != Kind.CHUNK]
        logical.append(sum(o.size for o in new))
        stored.append(sum(len(o.frame or b"") for o in new))
        real_commit(change)

    store.backend.commit = counting_commit  # type: ignore[method-assign]
    lat = []
    for i in range(patches):
        t = time.perf_counter()
        store.update_metadata("meta", {"pinned": i % 2 == 0})
        lat.append(time.perf_counter() - t)
    store.backend.commit = real_commit  # type: ignore[method-assign]
    store.close()
    whole = canonical_json({**metadata, "pinned": True})
    return {
        "logical": statistics.mean(logical),
        "stored": statistics.mean(stored),
        "whole_logical": float(len(whole)),
        "whole_stored": float(len(compress(whole))),
        "patch_med": statistics.median(lat),
    }


def fmt_bytes(b: float) -> str:
    """Return a short human size."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(b) < 1024 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GB"


def ms(s: float) -> str:
    """Return seconds as milliseconds."""
    return f"{s * 1000:.2f} ms"


def main() -> None:
    """Run the benchmark and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 100 and 1,000 only")
    ap.add_argument("--appends", type=int, default=200, help="appends measured per N")
    ap.add_argument("--edits", action="store_true", help="the edits table only")
    args = ap.parse_args()
    sizes = [100, 1_000] if args.quick else [100, 1_000, 10_000, 100_000]
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        root = Path(d)
        edits = []
        for n in [1_000] if args.quick else [1_000, 100_000]:
            edits += bench_edits(root, n, random.Random(n))
            print(f"edits at N={n}: done", flush=True)
        if args.edits:
            print_edits(edits)
            return
        for n in sizes:
            k = args.appends if n < 100_000 else min(args.appends, 50)
            cas = bench_cas(root, n, k, random.Random(n))
            js = bench_json(root, n, k, random.Random(n))
            rows.append((n, cas, js))
            print(f"N={n}: done", flush=True)
        bench_meta = bench_metadata_patch(root, 400 * 1024, 20 if args.quick else 100)
    print()
    print("Per append at the end of a session of N messages; both stores fsync every save.")
    print("'written' excludes the message's own chunk (cas-store) — the JSON store rewrites"
          " the whole file.")
    print()
    meta = bench_meta
    print("One-key metadata patch of a session with"
          f" {fmt_bytes(meta['whole_logical'])} of metadata (mostly one large dict):")
    print()
    print("| metadata written per patch | logical | stored (zstd) | patch median |")
    print("|---|---:|---:|---:|")
    print(f"| large values as their own objects (now) | {fmt_bytes(meta['logical'])}"
          f" | {fmt_bytes(meta['stored'])} | {ms(meta['patch_med'])} |")
    print(f"| the whole metadata object (before) | {fmt_bytes(meta['whole_logical'])}"
          f" | {fmt_bytes(meta['whole_stored'])} | — |")
    print()
    print("| N | store | bytes written / append (mean, max) | file growth / append |"
          " append median | append p95 | load_meta | full load |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n, cas, js in rows:
        for name, r in (("cas-store", cas), ("JSON file", js)):
            growth = fmt_bytes(r["growth"]) if name == "cas-store" else "—"
            print(f"| {n:,} | {name} | {fmt_bytes(r['written'])}, {fmt_bytes(r['written_max'])}"
                  f" | {growth} | {ms(r['append_med'])} | {ms(r['append_p95'])}"
                  f" | {ms(r['meta'])} | {ms(r['load'])} |")
    print_edits(edits)


if __name__ == "__main__":
    main()
