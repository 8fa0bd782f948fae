"""Import of a JSON session directory at scale, beside the baseline of json.load-ing every file.

    python -m bench.import_bench                      # 10,000 files x 100 messages, 200 MB file
    python -m bench.import_bench --files 2000 --big-mb 50   # shorter

Prints: files/s, messages/s and seconds for the import (wall and CPU) next to reading
every file with json.load; the re-run (idempotent: no writes); one transaction per
session against one per batch; peak RSS of importing one big file next to json.load of
it (each in a fresh process); and what a metadata update writes when a big list field
rides in the metadata versus when it is a named list.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from jsondir_fixtures import make_bulk_dir, write_big_session  # noqa: E402

from cas_store import jsondir as J  # noqa: E402
from cas_store import open_store  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):  # type: ignore[no-untyped-def]
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def baseline_load(directory: Path) -> int:
    n = 0
    for p in sorted(directory.iterdir()):
        with open(p, encoding="utf-8") as f:
            n += len(json.load(f)["messages"])
    return n


def child(mode: str, path: str, db: str) -> None:
    """Run in a fresh process: load or import one big file, print peak RSS as JSON."""
    base = peak_rss_mb()
    t = time.perf_counter()
    if mode == "json.load":
        with open(path, encoding="utf-8") as f:
            n = len(json.load(f)["messages"])
    else:
        store = open_store(db)
        report = J.import_json_dir(store, Path(path).parent)
        n = report.messages
        assert not report.skipped, report.skipped
        store.close()
    print(json.dumps({"mode": mode, "messages": n, "seconds": time.perf_counter() - t,
                      "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base}))


def run_child(mode: str, path: Path, db: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.import_bench", "--child", mode,
                          str(path), str(db)], capture_output=True, text=True, check=True,
                         cwd=HERE.parent)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def metadata_update_cost(work: Path) -> tuple[int, int]:
    """Return payload bytes one metadata update writes: list in metadata vs named list."""
    store = open_store(work / "meta.db")
    scenes = [{"scene": k, "note": "x" * 120} for k in range(100)]  # ≈ 14 KB
    store.create("in-meta", {"title": "a", "anchor_activity_scenes": scenes}, [])
    store.create("named", {"title": "a"}, [], lists={"anchor_activity_scenes": scenes})
    costs = []
    for sid in ("in-meta", "named"):
        before = store.stats().payload_bytes
        store.update_metadata(sid, {"title": "b"})
        costs.append(store.stats().payload_bytes - before)
    store.close()
    return costs[0], costs[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.import_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--messages", type=int, default=100)
    p.add_argument("--big-mb", type=int, default=200)
    p.add_argument("--unbatched-files", type=int, default=1000,
                   help="files for the one-transaction-per-session comparison")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "DB"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="import-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bulk = work / "bulk"
        print(f"writing {args.files} files x {args.messages} messages ...", flush=True)
        size = make_bulk_dir(bulk, args.files, args.messages)
        total_msgs = args.files * args.messages
        print(f"  {size / 1e6:.1f} MB of JSON, {total_msgs} messages")

        _, w, c = timed(lambda: baseline_load(bulk))
        print(f"baseline json.load of every file: {w:.2f} s wall, {c:.2f} s CPU,"
              f" {args.files / w:.0f} files/s, {total_msgs / w:.0f} messages/s")

        store = open_store(work / "bulk.db")
        report, w, c = timed(lambda: J.import_json_dir(store, bulk))
        assert report.versions == args.files and not report.skipped
        print(f"cas-store import:                  {w:.2f} s wall, {c:.2f} s CPU,"
              f" {args.files / w:.0f} files/s, {total_msgs / w:.0f} messages/s")
        print(f"  bytes in {report.bytes_in / 1e6:.1f} MB, stored {report.bytes_stored / 1e6:.1f}"
              f" MB, dedup ratio {report.dedup_ratio:.3f}")
        again, w2, c2 = timed(lambda: J.import_json_dir(store, bulk))
        assert again.versions == 0
        print(f"re-run (unchanged, no writes):     {w2:.2f} s wall, {c2:.2f} s CPU")
        store.close()

        n = min(args.unbatched_files, args.files)
        sub = work / "sub"
        sub.mkdir()
        for f in sorted(bulk.iterdir())[:n]:
            os.link(f, sub / f.name)
        results = {}
        for label, per_batch in (("one transaction per session", 1),
                                 (f"one per batch of {J.BATCH_SESSIONS}", J.BATCH_SESSIONS)):
            J.importer.BATCH_SESSIONS = per_batch
            s = open_store(work / f"sub-{per_batch}.db")
            _, w, c = timed(lambda s=s: J.import_json_dir(s, sub))
            s.close()
            results[label] = (w, c)
            print(f"{n} files, {label}: {w:.2f} s wall, {c:.2f} s CPU")
        J.importer.BATCH_SESSIONS = 64

        in_meta, named = metadata_update_cost(work)
        print(f"metadata update of a session with a 14 KB list field: {in_meta} bytes written"
              f" when the list is metadata, {named} when it is a named list")

        if args.big_mb:
            big_dir = work / "big"
            big_dir.mkdir()
            big = big_dir / "huge-session.json"
            bsize = write_big_session(big, args.big_mb * 1024 * 1024)
            print(f"one big session file: {bsize / 1e6:.0f} MB")
            for mode in ("json.load", "import"):
                r = run_child(mode, big, work / "big.db")
                print(f"  {mode:9s}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB"
                      f" ({r['peak_rss_mb'] / (bsize / 2**20):.2f}x the file; interpreter"
                      f" {r['base_rss_mb']:.0f} MB), {r['messages']:.0f} messages")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
