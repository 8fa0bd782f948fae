"""Counters and timers: /proc/self/io, percentiles, repeated reads under a time budget."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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


def timed_reads(fn: Callable[[], Any], reps: int, budget: float) -> tuple[float, int, Any]:
    """Call fn up to reps times (at least once, stop after budget seconds).

    Returns the median seconds, the number of calls and the last result.
    """
    times: list[float] = []
    result: Any = None
    start = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times), result


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
