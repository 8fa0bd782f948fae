"""Append throughput on PostgreSQL with several writers: the feed's counter row beside a sequence.

Every commit takes its change-feed cursor from one counter row updated last in its
transaction (commit order: docs/design.md, "Change feed on PostgreSQL"). The baseline
in the same run takes it from a sequence instead, which costs no row lock but does
not give commit order. Each writer is a thread with its own session appending one
message a commit (search index on, LISTEN/NOTIFY on: the whole commit path). The
PostgreSQL cluster runs with fsync on and synchronous commit, started here and
stopped at the end.

    python -m bench.pg_feed_bench            # 5 s a cell
    python -m bench.pg_feed_bench --quick    # 1 s a cell
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the real-server helpers the tests use

from servers import postgres_server  # noqa: E402

from cas_store import Store  # noqa: E402
from cas_store.backends.postgres import _VERSION_COLS, PostgresBackend  # noqa: E402


class _SequenceCursor(PostgresBackend):
    """The baseline: cursors from a sequence (unordered by commit), no counter row."""

    _append_version = (
        "WITH c AS (SELECT nextval('bench_cursor') AS cursor)"
        f" INSERT INTO versions ({_VERSION_COLS})"
        " SELECT %s,%s,%s,%s,%s,%s,%s,%s, c.cursor FROM c"
        " ON CONFLICT (sid, seq) DO NOTHING"
    )


def run(url: str, kind: type[PostgresBackend], writers: int, seconds: float) -> float:
    """Return appends/s of writers threads appending to their own sessions for seconds."""
    store = Store(kind(url, max_size=writers + 2))
    try:
        tag = f"{kind.__name__}-{writers}"
        for k in range(writers):
            store.create(f"{tag}-{k}", {}, [{"role": "user", "content": "start"}])
        counts = [0] * writers
        stop = time.monotonic() + seconds
        barrier = threading.Barrier(writers)

        def write(k: int) -> None:
            barrier.wait()
            while time.monotonic() < stop:
                store.append(f"{tag}-{k}", [{"role": "user", "content": f"m {k} {counts[k]}"}])
                counts[k] += 1

        threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.monotonic() - started)
    finally:
        store.close()


def main() -> None:
    """Print appends/s per writer count, the counter row beside the sequence baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s a cell")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 5.0
    with postgres_server(durable=True) as server:
        url = server.fresh_schema()
        PostgresBackend(url).close()  # the schema
        with psycopg.connect(url, autocommit=True) as conn:  # in the store's schema
            conn.execute("CREATE SEQUENCE bench_cursor")
        print("writers  counter row (appends/s)  sequence baseline (appends/s)  ratio")
        for writers in (1, 2, 4, 8):
            seq = run(url, _SequenceCursor, writers, seconds)
            row = run(url, PostgresBackend, writers, seconds)
            print(f"{writers:7d}  {row:23.0f}  {seq:29.0f}  {row / seq:5.2f}")


if __name__ == "__main__":
    main()
