"""Counters and timers: /proc/self/io, percentiles, interleaved reads under a time budget."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any


def proc_io() -> tuple[int, int]:
    """Return this process's (write_bytes, wchar) from /proc/self/io, all threads included.

    write_bytes: bytes the process caused to be sent to the storage layer (page-cache
    pages dirtied, so at least one 4 KiB page per fsynced write). wchar: bytes passed to
    write()-like calls.
    """
    wb = wc = 0
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            if k == "write_bytes":
                wb = int(v)
            elif k == "wchar":
                wc = int(v)
    return wb, wc


def proc_io_works() -> bool:
    """Return True if write_bytes moves when this process writes and fsyncs a file."""
    import os
    import tempfile

    before = proc_io()[0]
    with tempfile.NamedTemporaryFile(dir=".") as f:
        f.write(b"x" * 65536)
        f.flush()
        os.fsync(f.fileno())
    return proc_io()[0] - before >= 65536


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) by linear interpolation."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def append_turns(counts: dict[str, int], seed: int) -> Iterator[list[str]]:
    """Yield one round of stores at a time, each store once a round until it has had its count.

    Each round is a new shuffle (seeded, so a run can be repeated): an fsync pays for what
    the append just before it left behind (a 10,000-message whole-JSON rewrite made the
    next store's append 17-18% slower), so no store may always follow the same neighbour.
    """
    rng = random.Random(seed)
    for j in range(max(counts.values(), default=0)):
        order = [k for k, count in counts.items() if j < count]
        rng.shuffle(order)
        yield order


def interleaved_reads(calls: dict[str, Callable[[], Any]], reps: int, budget: float,
                      check: Callable[[str, Any], None], burst: int = 3
                      ) -> dict[str, tuple[float, int]]:
    """Time the calls in turns of a few each, turn after turn; return each one's median and count.

    Each is called up to reps times (at least once, and no more once its own calls have
    taken budget seconds). Every store has a turn each round, as the appends do, and each
    round starts one store further on: a slow spell of a shared machine then meets every store
    alike instead of whichever was being read. A turn is ``burst`` calls in a row, so
    most calls follow one of the same store's (the first of a turn pays for what the
    store before it left in the caches and the heap, and the median leaves it out).
    ``check`` sees each result, which is then dropped outside the timing (freeing a
    loaded session is no part of the next load).
    """
    times: dict[str, list[float]] = {k: [] for k in calls}
    spent = dict.fromkeys(calls, 0.0)
    rnd = 0

    def wants(k: str) -> bool:
        return len(times[k]) < reps and (not times[k] or spent[k] < budget)

    while todo := [k for k in calls if wants(k)]:
        rnd += 1
        at = rnd % len(todo)
        for k in todo[at:] + todo[:at]:
            for _ in range(burst):
                if not wants(k):
                    break
                t0 = time.perf_counter()
                result = calls[k]()
                took = time.perf_counter() - t0
                check(k, result)
                del result
                times[k].append(took)
                spent[k] += took
    return {k: (statistics.median(v), len(v)) for k, v in times.items()}


_RSS = """
import sys
sys.path[:0] = {path!r}


def status(field):
    # /proc/self/status, in KiB. VmHWM is this process image's own peak (ru_maxrss would
    # carry over the peak of the forking parent across exec).
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])


before = status("VmRSS")
{code}
assert len(got) == {n}, len(got)
print(status("VmHWM") - before)
"""


def peak_rss(code: str, n: int) -> int:
    """Return the peak RSS (bytes) above the resident size before running code, in a fresh
    interpreter.

    The code's imports run before the baseline is taken (modules are not the load's
    memory); what it allocates to hold ``got``, the loaded messages, is.
    """
    import subprocess
    import sys

    lines = code.splitlines()
    imports = "\n".join(x for x in lines if x.startswith(("import ", "from ")))
    body = "\n".join(x for x in lines if not x.startswith(("import ", "from ")))
    src = imports + "\n" + _RSS.format(path=sys.path, code=body, n=n)
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[-1]) * 1024
