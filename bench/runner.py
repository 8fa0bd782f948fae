"""Grow one conversation per store through N = 100 … 100,000 and measure it at each N."""

from __future__ import annotations

import gc
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters.base import Adapter, Message
from .measure import append_turns, interleaved_reads, peak_rss, percentile, proc_io
from .workload import Floor, Workload

SAMPLES = 200            # appends timed at the end of each N
ONE_BY_ONE_MAX = 10_000  # beyond this, bulk growth (--one-by-one raises it)
BATCH = 1_000            # messages per bulk write
SEED_SAMPLE_BUDGET = 30.0  # seconds of timed appends per N for a store that rewrites it all
# Reads per figure, each figure their median: a cold read and a full load are short and
# noisy on a shared machine (one run's raw cold read took 0.67 ms against 0.17-0.21 ms
# elsewhere, with 7 of them), so they take more samples than they once did (7 and 5).
# A fresh handle's load at 10,000 ranged 17-24 ms by process on one machine, so 9 of them.
META_READS = 30
COLD_READS = 21
LOAD_READS = 9
FRESH_LOADS = 9


@dataclass
class Caps:
    """Where a store that grows quadratically is stopped (never extrapolated)."""

    seconds: float = 120.0   # cumulative time spent appending
    disk: int = 5 * 10**9    # bytes on disk
    one_by_one: int = ONE_BY_ONE_MAX  # grown one message at a time up to here, then batches


@dataclass
class Row:
    """The figures of one store at one N (or why there are none)."""

    store: str
    n: int
    reached: str = ""
    samples: int = 0
    p50: float = 0.0            # seconds per append
    p95: float = 0.0
    written: float = 0.0        # write_bytes per append
    wchar: float = 0.0          # write() bytes per append
    disk: int = 0
    floor: int = 0              # zstd-3 size of the N messages, each alone
    raw: int = 0                # canonical JSON size of the N messages
    load: float | None = None
    load_reps: int = 0
    meta: float | None = None
    meta_reps: int = 0
    version: float | None = None
    version_reps: int = 0
    open_disk: int = 0          # bytes on disk while the store is open, after the appends
    cold_meta: float | None = None  # first metadata read on a fresh handle
    fresh_load: float | None = None  # full load on a fresh handle (open, load, close)
    load_rss: int | None = None     # peak RSS growth of a full load in a fresh interpreter
    stopped: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Stopped(Exception):
    """A capped store hit its time or disk cap."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class StoreRun:
    """One store's conversation, grown through the sizes in order."""

    def __init__(self, cls: type[Adapter], root: Path, workload: Workload, floor: Floor,
                 sizes: list[int], caps: Caps) -> None:
        self.a = cls(root / cls.key, workload.metadata)
        self.cls = cls
        self.w = workload
        self.floor = floor
        self.sizes = sizes
        self.caps = caps
        self.count = 0
        self.append_seconds = 0.0
        self.version_points = {n // 2 for n in sizes}
        self.grew: list[str] = []
        self.one_by_one = caps.one_by_one

    # --- growing -----------------------------------------------------------------------

    def _after(self, count: int) -> None:
        if count in self.version_points and self.cls.versions:
            self.a.mark_version(count)

    def _append_one(self, m: Message) -> float:
        t0 = time.perf_counter()
        self.a.append(m)
        dt = time.perf_counter() - t0
        self.count += 1
        self.append_seconds += dt
        self._after(self.count)
        if self.cls.growth == "capped":
            if self.append_seconds > self.caps.seconds:
                raise Stopped(f"time cap {self.caps.seconds:.0f} s")
            if self.count % 50 == 0 and self.a.disk_bytes() > self.caps.disk:
                raise Stopped(f"disk cap {self.caps.disk / 1e9:.0f} GB")
        return dt

    def _grow_to(self, target: int) -> None:
        """Reach target messages without timing, in the way this store allows."""
        msgs = self.w.messages(target)
        growth = self.cls.growth
        if growth == "seed":
            if target > self.count:
                self.a.seed(msgs[:target])
                self.count = target
            return
        while self.count < min(target, self.one_by_one) or (growth == "capped"
                                                           and self.count < target):
            self._append_one(msgs[self.count])
        while self.count < target:
            stop = min(target, self.count + BATCH)
            # Split batches at the counts whose versions are read back later.
            nxt = [p for p in self.version_points if self.count < p < stop]
            stop = min([stop, *nxt])
            self.a.append_many(msgs[self.count:stop])
            self.count = stop
            self._after(stop)

    def _how(self, n: int, k: int) -> str:
        growth = self.cls.growth
        if growth == "seed":
            return f"one save of {n - k:,}, then {k} appends"
        if n <= self.one_by_one or growth == "capped":
            return "one at a time from empty"
        return (f"one at a time to {self.one_by_one:,}, batches of {BATCH:,} to {n - k:,}, "
                f"then {k} one at a time")

    # --- one size ------------------------------------------------------------------------

    def prepare(self, n: int) -> int:
        """Grow to n - k without timing; return k, the appends to time for size n."""
        self.row = Row(self.cls.key, n, floor=self.floor.compressed_at(n),
                       raw=self.floor.raw_at(n))
        k = min(SAMPLES, n // 2)
        if self.cls.growth == "seed":
            # A store that rewrites everything per append: time as many appends as fit.
            t0 = time.perf_counter()
            self.a.seed(self.w.messages(n - k))
            per_save = max(time.perf_counter() - t0, 1e-6)
            fit = min(k, max(20, int(SEED_SAMPLE_BUDGET / per_save)))
            if fit != k:
                k = fit
                self.a.seed(self.w.messages(n - k))
            self.count = n - k
        else:
            self._grow_to(n - k)
        self.k = k
        self.lat: list[float] = []
        self.wb = self.wc = 0
        return k

    def timed_append(self) -> None:
        """Append the next message, timing it and counting what it writes."""
        m = self.w.messages(self.count + 1)[self.count]
        b0 = proc_io()
        self.lat.append(self._append_one(m))
        b1 = proc_io()
        self.wb += b1[0] - b0[0]
        self.wc += b1[1] - b0[1]

    def settle(self, n: int) -> None:
        """Record the timed appends, measure disk open and closed, and reopen for the reads."""
        row, k, lat = self.row, self.k, self.lat
        assert self.count == n and len(lat) == k
        row.reached = self._how(n, k)
        row.samples = k
        row.p50 = percentile(lat, 50)
        row.p95 = percentile(lat, 95)
        row.written = self.wb / k
        row.wchar = self.wc / k
        row.open_disk = self.a.disk_bytes()
        self.a.close()
        row.disk = self.a.disk_bytes()
        self.a.open()
        code = self.a.load_code()
        if code is not None:
            row.load_rss = peak_rss(code, n)
        gc.collect()

    def readers(self, n: int) -> dict[str, tuple[Callable[[], Any], int]]:
        """Return this store's timed reads at size n: figure -> (call, items it returns)."""
        out: dict[str, tuple[Callable[[], Any], int]] = {}
        # A probe call says whether the store has the read at all (and warms it alike).
        if self.a.cold_meta() is not None:
            out["cold_meta"] = (self.a.cold_meta, -1)
        if self.a.fresh_load() is not None:
            out["fresh_load"] = (self.a.fresh_load, n)
        out["meta"] = (self.a.load_meta, -1)
        out["load"] = (self.a.load, n)
        if self.cls.versions:
            out["version"] = (lambda: self.a.load_version(n // 2), n // 2)
        return out

    def report(self, n: int) -> Row:
        """Log and return the row at size n, its reads measured."""
        row = self.row
        _log(f"  {self.cls.label:<28} N={n:>7,}  p50 {row.p50 * 1e3:8.3f} ms  "
             f"p95 {row.p95 * 1e3:8.3f} ms  disk {row.disk / 1e6:9.2f} MB  "
             f"load {row.load * 1e3 if row.load else 0:9.2f} ms")
        return row

    def start(self) -> None:
        """Open the store and create the empty conversation."""
        self.a.open()
        self.a.create()
        self.stopped = ""

    def stop(self, n: int, cap: Stopped) -> Row:
        """Close a capped store and return the row that says where it stopped."""
        self.a.close()
        disk = self.a.disk_bytes()
        self.stopped = (f"stopped at N={self.count:,}, {disk / 1e9:.2f} GB on disk "
                        f"({cap}; {self.append_seconds:.0f} s appending)")
        _log(f"  {self.cls.label}: {self.stopped}")
        return Row(self.cls.key, n, floor=self.floor.compressed_at(n), stopped=self.stopped,
                   disk=disk, extra={"count": self.count})

    def stopped_row(self, n: int) -> Row:
        """Return the row of a size this store never reached."""
        return Row(self.cls.key, n, floor=self.floor.compressed_at(n), stopped=self.stopped)

    def finish(self) -> None:
        """Close the store."""
        self.a.close()


def measure_size(runs: list[StoreRun], n: int) -> list[Row]:
    """Bring every store to size n, timing their last appends interleaved.

    The timed appends go in rounds (one append of each store a round), so on a shared
    machine every store meets the same bursts of neighbours' load and the ratios hold;
    each round's order is a new shuffle (``append_turns``), so no store always follows
    the same one.
    """
    rows: dict[str, Row] = {}
    live: list[StoreRun] = []
    for r in runs:
        if r.stopped:
            rows[r.cls.key] = r.stopped_row(n)
            continue
        try:
            r.prepare(n)
            live.append(r)
        except Stopped as cap:
            rows[r.cls.key] = r.stop(n, cap)
    by_key = {r.cls.key: r for r in live}
    for order in append_turns({r.cls.key: r.k for r in live}, seed=n):
        for key in order:
            r = by_key[key]
            if r not in live:
                continue
            try:
                r.timed_append()
            except Stopped as cap:
                rows[key] = r.stop(n, cap)
                live.remove(r)
    for r in live:
        r.settle(n)
    measure_reads(live, n)
    for r in live:
        rows[r.cls.key] = r.report(n)
    return [rows[r.cls.key] for r in runs]


#: The reads of each size: (figure, calls per store, seconds per store), in this order
#: (the full loads one after the other: target 1 sets cas-store's fresh-handle load
#: beside json.load's).
READS = (("cold_meta", COLD_READS, 3.0), ("meta", META_READS, 5.0),
         ("fresh_load", FRESH_LOADS, 8.0), ("load", LOAD_READS, 8.0), ("version", 5, 8.0))


def measure_reads(live: list[StoreRun], n: int) -> None:
    """Time every store's reads at size n, one figure at a time, the stores interleaved.

    As with the appends, the stores take turns (three calls each, ``interleaved_reads``):
    a burst of neighbours' load, or a slow hour, then meets every store alike instead of
    whichever was measuring.
    """
    readers = {r.cls.key: r.readers(n) for r in live}
    by_key = {r.cls.key: r for r in live}
    for figure, reps, budget in READS:
        calls = {k: got[figure] for k, got in readers.items() if figure in got}
        if not calls:
            continue

        def check(key: str, result: Any, calls: dict[str, tuple[Any, int]] = calls,
                  figure: str = figure) -> None:
            want = calls[key][1]
            if want >= 0 and len(result) != want:
                raise AssertionError(f"{key}: {figure} returned {len(result)} of {want}")

        timed = interleaved_reads({k: fn for k, (fn, _) in calls.items()}, reps, budget,
                                  check)
        for key, (median, count) in timed.items():
            row = by_key[key].row
            setattr(row, figure, median)
            if hasattr(row, figure + "_reps"):
                setattr(row, figure + "_reps", count)
        # Objects left by one figure's reads would slow the next (the cyclic GC walks them).
        gc.collect()


def run_all(adapters: list[type[Adapter]], sizes: list[int], workdir: Path,
            caps: Caps, keep: bool = False) -> tuple[list[Row], Floor, Workload]:
    """Run every store in turn on the same workload; return all rows."""
    w = Workload()
    w.messages(max(sizes))
    floor = Floor()
    floor.extend(w.messages(max(sizes)))
    # Size-major order, appends interleaved: see measure_size.
    runs = [StoreRun(cls, workdir, w, floor, sizes, caps) for cls in adapters]
    rows: list[Row] = []
    try:
        for r in runs:
            r.start()
        for n in sizes:
            _log(f"N = {n:,}:")
            rows.extend(measure_size(runs, n))
    finally:
        for r in runs:
            r.finish()
            if not keep:
                shutil.rmtree(workdir / r.cls.key, ignore_errors=True)
    return rows, floor, w
