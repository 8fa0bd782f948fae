"""Flip random bits anywhere in a SQLite store, then run every read: only CasError may come out.

Not part of `make test` (minutes, and each trial lands elsewhere): run it after touching a
read path, GC or fsck, and add a regression test for anything it finds.

    .venv/bin/python tests/reliability/flip_fuzz.py --seed 41 --trials 700

Each trial copies a freshly built store (4 sessions of 20-1,000 messages with packs,
metadata, key order and search), flips 1 to 120 random bits past the file header, and
runs loads, windows, versions, search, fsck, stats, a GC dry run, recover, diff and an
append, each with a deadline. It prints every exception that is not a CasError, and
every operation that outlived its deadline, grouped by where it was raised.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import shutil
import signal
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cas_store import Store, open_store
from cas_store.errors import CasError
from cas_store.gc import gc


class Hang(BaseException):
    """An operation outlived its deadline."""


def _alarm(*_: Any) -> None:
    raise Hang


def build(path: Path) -> None:
    """Write the store every trial starts from."""
    with open_store(path) as s:
        for k in range(4):
            s.create(f"s{k}", {"title": f"T{k}", "pinned": k % 2 == 0, "big": "x" * 1500},
                     [{"role": "user", "content": f"hello {k} {i} " * 20}
                      for i in range(300 * k + 20)],
                     key_order=["title", "big", "pinned"])
            for i in range(30):
                s.append(f"s{k}", [{"role": "assistant", "content": f"reply {i}"}])


OPS: list[tuple[str, Callable[[Store], object]]] = [
    ("list", lambda s: s.list_sessions()),
    ("list where", lambda s: s.list_sessions(where={"pinned": True})),
    ("load", lambda s: [s.load(f"s{k}") for k in range(4)]),
    ("load_meta", lambda s: [s.load_meta(f"s{k}") for k in range(4)]),
    ("versions", lambda s: [s.versions(f"s{k}") for k in range(4)]),
    ("messages", lambda s: [s.messages(f"s{k}", -5) for k in range(4)]),
    ("search", lambda s: s.search("hello")),
    ("fsck", lambda s: s.fsck()),
    ("load_version", lambda s: [s.load_version(f"s{k}", 2) for k in range(4)]),
    ("stats", lambda s: s.stats()),
    ("gc dry run", lambda s: gc(s, dry_run=True, grace=0)),
    ("recover dry run", lambda s: s.recover(dry_run=True)),
    ("diff", lambda s: [s.diff(f"s{k}", 1, 3) for k in range(4)]),
    ("append", lambda s: s.append("s1", [{"role": "user", "content": "new"}])),
]


def where(exc: BaseException) -> str:
    """Return the innermost frames of an exception, file:line, outermost first."""
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames)


def main() -> int:
    """Run the trials; exit 1 if any operation raised something other than CasError."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--deadline", type=int, default=15, help="seconds per operation")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(args.seed)
    found: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        source, path = Path(tmp) / "source.db", Path(tmp) / "trial.db"
        build(source)
        size = source.stat().st_size
        for _ in range(args.trials):
            for extra in ("-wal", "-shm"):
                Path(str(path) + extra).unlink(missing_ok=True)
            shutil.copy(source, path)
            with open(path, "r+b") as f:
                for _ in range(rng.choice([1, 3, 10, 40, 120])):
                    pos = rng.randrange(100, size)
                    f.seek(pos)
                    byte = f.read(1)[0]
                    f.seek(pos)
                    f.write(bytes([byte ^ (1 << rng.randrange(8))]))
            try:
                store = open_store(path)
            except CasError:
                continue
            except Exception as exc:  # what this tool looks for
                found[("open", type(exc).__name__, where(exc), str(exc)[:60])] += 1
                continue
            for name, op in OPS:
                signal.alarm(args.deadline)
                try:
                    op(store)
                except CasError:
                    pass
                except Hang as exc:
                    found[(name, "outlived its deadline", where(exc), "")] += 1
                except Exception as exc:
                    found[(name, type(exc).__name__, where(exc), str(exc)[:60])] += 1
                finally:
                    signal.alarm(0)
            with contextlib.suppress(CasError):
                store.close()
    for key, n in found.most_common():
        print(n, *key, sep="  ")
    print(f"{args.trials} trials, {sum(found.values())} findings")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
