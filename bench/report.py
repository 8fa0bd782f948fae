"""The markdown table, the target verdicts and the log-log plot."""

# ruff: noqa: RUF001  (the report is typography: multiplication sign, dashes, minus)

from __future__ import annotations

import datetime as dt
import os
import platform
import sqlite3
from importlib import metadata as md
from pathlib import Path

from .adapters.base import Adapter
from .runner import (
    BATCH,
    COLD_READS,
    FRESH_LOADS,
    LOAD_READS,
    META_READS,
    SAMPLES,
    Caps,
    Row,
)
from .workload import SEED, SYSTEM_EVERY

PACKAGES = ("cas-store", "langgraph", "langgraph-checkpoint-sqlite", "openai-agents",
            "zstandard", "matplotlib")


def machine(workdir: Path) -> dict[str, str]:
    """Return what the figures depend on: CPU, cores, memory, disk, versions."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024 // 1024
    except OSError:
        mem = 0
    fs = "?"
    try:
        with open("/proc/mounts") as f:
            best = ""
            for line in f:
                dev, mnt, kind = line.split()[:3]
                if str(workdir.resolve()).startswith(mnt) and len(mnt) >= len(best):
                    best, fs = mnt, f"{kind} on {dev}"
    except OSError:
        pass
    versions = []
    for p in PACKAGES:
        try:
            versions.append(f"{p} {md.version(p)}")
        except md.PackageNotFoundError:
            versions.append(f"{p} (not installed)")
    try:
        import subprocess

        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "cas_store"],
                               capture_output=True, text=True, check=True).stdout.strip()
        commit = f"cas-store at commit {head}" + (" plus uncommitted engine changes"
                                                   if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        commit = "cas-store (no git checkout)"
    return {
        "commit": commit,
        "cpu": f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM",
        "os": f"{platform.system()} {platform.release()}, {fs}",
        "python": f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
        "packages": ", ".join(versions),
    }


def _ms(x: float | None) -> str:
    if x is None:
        return "–"
    v = x * 1e3
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:,.0f}"


def _kb(x: float) -> str:
    return f"{x / 1024:.1f}" if x < 1024 * 100 else f"{x / 1024:,.0f}"


def _mb(x: float) -> str:
    return f"{x / 1e6:.2f}" if x < 1e8 else f"{x / 1e6:,.0f}"


def _first(json_row: Row) -> float:
    """Return the whole-JSON file's load on a fresh open (its repeat load where not measured).

    The first-load figure of another store is set beside it: both timed in the same turns
    of the interleaved reads, so a slow spell of the machine meets both.
    """
    return json_row.fresh_load or json_row.load or 0.0


def _ratio(x: float) -> str:
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×" if x < 100 else f"{x:,.0f}×"


class Results:
    """Rows indexed by store and N, with the floors."""

    def __init__(self, rows: list[Row], adapters: list[type[Adapter]], sizes: list[int]) -> None:
        self.rows = rows
        self.adapters = adapters
        self.sizes = sizes
        self.by = {(r.store, r.n): r for r in rows}

    def get(self, store: str, n: int) -> Row | None:
        """Return the measured row of store at n, or None if it was stopped or not run."""
        r = self.by.get((store, n))
        return r if r is not None and not r.stopped else None

    def stopped(self, store: str, n: int) -> str:
        """Return the reason store has no row at n ("" if it has one)."""
        r = self.by.get((store, n))
        return r.stopped if r is not None else "not run"


def headline(res: Results) -> list[str]:
    """Return the ratio tables: append latency against raw append, disk against zstd."""
    out = []
    ns = res.sizes
    head = "| store | " + " | ".join(f"N={n:,}" for n in ns) + " |"
    sep = "|---|" + "---:|" * len(ns)
    out += ["**Append latency, median, as a multiple of raw append's** (lower is better; "
            "1× is the floor)", "", head, sep]
    for a in res.adapters:
        cells = []
        for n in ns:
            r, base = res.get(a.key, n), res.get("raw", n)
            cells.append(_ratio(r.p50 / base.p50) if r and base else _short(res.stopped(a.key, n)))
        out.append(f"| {a.label} | " + " | ".join(cells) + " |")
    out += ["", "**Bytes on disk at the end, as a multiple of the messages' own compressed "
            "size** (zstd level 3, each message alone)", "", head, sep]
    for a in res.adapters:
        cells = []
        for n in ns:
            r = res.get(a.key, n)
            cells.append(_ratio(r.disk / r.floor) if r else _short(res.stopped(a.key, n)))
        out.append(f"| {a.label}{'' if a.versions else ' (keeps no versions)'} | "
                   + " | ".join(cells) + " |")
    out += ["", "**Bytes written per append** (KiB, /proc/self/io write_bytes)", "", head, sep]
    for a in res.adapters:
        cells = []
        for n in ns:
            r = res.get(a.key, n)
            cells.append(_kb(r.written) if r else _short(res.stopped(a.key, n)))
        out.append(f"| {a.label} | " + " | ".join(cells) + " |")
    return out


def _short(reason: str) -> str:
    return reason.split(" (")[0] if reason else "–"


def full_table(res: Results) -> list[str]:
    """Return every figure of every store at every N."""
    out = [
        "| store | N | how N was reached | timed appends | append p50 ms | append p95 ms "
        "| p50 × raw | written/append KiB (write_bytes) | write() KiB/append | disk MB "
        "| disk ÷ zstd floor | disk open ÷ closed | full load ms | fresh-handle load ms "
        "| load peak RSS MB | metadata read ms | cold metadata read ms | old version (N/2) ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in res.sizes:
        base = res.get("raw", n)
        for a in res.adapters:
            r = res.get(a.key, n)
            if r is None:
                out.append(f"| {a.label} | {n:,} | {res.stopped(a.key, n)} |"
                           + " |" * 15)
                continue
            out.append(
                f"| {a.label} | {n:,} | {r.reached} | {r.samples} | {_ms(r.p50)} | {_ms(r.p95)} "
                f"| {_ratio(r.p50 / base.p50) if base else '–'} | {_kb(r.written)} "
                f"| {_kb(r.wchar)} | {_mb(r.disk)} | {_ratio(r.disk / r.floor)} "
                f"| {_ratio(r.open_disk / r.disk) if r.disk else '–'} "
                f"| {_ms(r.load)} | {_ms(r.fresh_load)} "
                f"| {_mb(r.load_rss) if r.load_rss is not None else '–'} "
                f"| {_ms(r.meta)} | {_ms(r.cold_meta)} "
                f"| {_ms(r.version) if a.versions else '–'} |")
    return out


def _spread(values: list[float]) -> float:
    return max(values) / min(values) if values else 0.0


def targets(res: Results) -> list[str]:
    """Return the issue's targets with met/missed and by how much."""
    cas = {n: r for n in res.sizes if (r := res.get("cas", n))}
    ns = list(cas)
    if not ns:
        return ["cas-store was not measured."]
    out: list[str] = []

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    def each(vals: dict[int, float]) -> str:
        return ", ".join(f"{_ratio(v)} at {n:,}" for n, v in vals.items())

    js = {n: r for n in ns if (r := res.get("json", n))}
    oa = {n: r for n in ns if (r := res.get("openai", n))}
    load = {n: cas[n].load / js[n].load for n in ns
            if n >= 1000 and n in js and cas[n].load and js[n].load}
    # A fresh handle beside json.load of the file opened anew, timed in the same turns.
    fresh = {n: cas[n].fresh_load / _first(js[n]) for n in ns
             if n >= 1000 and n in js and cas[n].fresh_load and _first(js[n])}
    repeat_ok = bool(load) and max(load.values()) <= 1.0
    fresh_ok = bool(fresh) and max(fresh.values()) <= 1.0
    out.append("1. Full load ≤ 1.0× json.load of the whole-session file, N = 1,000 to "
               "100,000: " + (verdict(True) if repeat_ok and fresh_ok else
                              "**met on repeat loads only**" if repeat_ok else verdict(False))
               + f" (repeat loads on an open store: {each(load)}; the first load on a "
               f"fresh handle, open and close included, beside json.load of the file "
               f"opened anew: {each(fresh)}).")
    app = {n: cas[n].p50 / oa[n].p50 for n in ns if n in oa}
    out.append(f"2. Append p50 ≤ 0.8× SQLiteSession's, N = 100 to 100,000: "
               f"{verdict(bool(app) and max(app.values()) <= 0.8)} ({each(app)}).")
    disk = {n: cas[n].disk / cas[n].floor for n in ns}
    out.append(f"3. Bytes on disk, every version kept, ≤ 1.0× the per-message zstd floor: "
               f"{verdict(max(disk.values()) <= 1.0)} ({each(disk)}; SQLiteSession, which "
               "keeps no versions: " + each({n: oa[n].disk / oa[n].floor for n in oa}) + ").")
    opened = {n: cas[n].open_disk / cas[n].disk for n in ns if cas[n].disk}
    out.append(f"4. Disk while the store is open ≤ 1.5× its closed size: "
               f"{verdict(max(opened.values()) <= 1.5)} ({each(opened)}; SQLiteSession: "
               + each({n: oa[n].open_disk / oa[n].disk for n in oa if oa[n].disk}) + ").")
    cold = {n: cas[n].cold_meta / oa[n].cold_meta for n in ns
            if n in oa and cas[n].cold_meta and oa[n].cold_meta}
    out.append(f"5. Metadata read, first call on a fresh handle, ≤ 1× SQLiteSession's raw SQL "
               f"on a fresh connection: {verdict(bool(cold) and max(cold.values()) <= 1.0)} "
               f"({each(cold)}).")
    top = max(ns)
    if top in js and cas[top].load_rss and js[top].load_rss:
        mem = cas[top].load_rss / js[top].load_rss  # type: ignore[operator]
        out.append(f"6. Peak memory of a full load of {top:,} messages ≤ 1.5× json.load's: "
                   f"{verdict(mem <= 1.5)} ({_mb(cas[top].load_rss or 0)} MB against "
                   f"{_mb(js[top].load_rss or 0)} MB, {_ratio(mem)}).")
    return out


def readme_table(res: Results, info: dict[str, str], caps: Caps) -> list[str]:
    """Return the README's benchmark table (ratios at each N, from this run)."""
    ns = res.sizes
    out = [f"Run on {dt.date.today().isoformat()}, {info['cpu']} (a shared virtual machine: "
           "read the ratios, not the times). At N messages:", "",
           "| | " + " | ".join(f"N={n:,}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]

    def row(label: str, fn: object) -> None:
        cells = []
        for n in ns:
            try:
                v = fn(n)  # type: ignore[operator]
            except (AttributeError, TypeError, ZeroDivisionError):
                v = None
            cells.append(v if isinstance(v, str) else "–" if v is None else _ratio(v))
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    def g(key: str, n: int) -> Row:
        r = res.get(key, n)
        if r is None:
            raise AttributeError
        return r

    row("append median ÷ SQLiteSession's: cas-store, every version kept",
        lambda n: g("cas", n).p50 / g("openai", n).p50)
    row("append median ÷ raw append: cas-store / SQLiteSession",
        lambda n: f"{_ratio(g('cas', n).p50 / g('raw', n).p50)} / "
                  f"{_ratio(g('openai', n).p50 / g('raw', n).p50)}")
    row("full load ÷ json.load of the whole file, repeat loads on an open store: "
        "cas-store / SQLiteSession",
        lambda n: f"{_ratio(g('cas', n).load / g('json', n).load)} / "
                  f"{_ratio(g('openai', n).load / g('json', n).load)}")
    row("… the first load on a fresh handle (open, load, close; beside the file opened "
        "anew): cas-store / SQLiteSession",
        lambda n: f"{_ratio(g('cas', n).fresh_load / _first(g('json', n)))} / "
                  f"{_ratio(g('openai', n).fresh_load / _first(g('json', n)))}")
    row("bytes on disk ÷ compressed messages: cas-store, every version kept",
        lambda n: g("cas", n).disk / g("cas", n).floor)
    row("… SQLiteSession / whole-JSON file, no versions",
        lambda n: f"{_ratio(g('openai', n).disk / g('openai', n).floor)} / "
                  f"{_ratio(g('json', n).disk / g('json', n).floor)}")
    row("disk while open ÷ closed: cas-store / SQLiteSession",
        lambda n: f"{_ratio(g('cas', n).open_disk / g('cas', n).disk)} / "
                  f"{_ratio(g('openai', n).open_disk / g('openai', n).disk)}")
    row("cold metadata read ÷ SQLiteSession's raw SQL",
        lambda n: g("cas", n).cold_meta / g("openai", n).cold_meta)
    row("load peak memory ÷ json.load's",
        lambda n: g("cas", n).load_rss / g("json", n).load_rss)
    row("LangGraph SqliteSaver, append ÷ raw append",
        lambda n: g("langgraph", n).p50 / g("raw", n).p50 if res.get("langgraph", n)
        else _short(res.stopped("langgraph", n)))
    top = max(ns)
    if top > caps.one_by_one:
        out += ["", f"Every store grew one message at a time (one version each for cas-store) "
                f"to N={caps.one_by_one:,}; past that, in batches of {BATCH:,} (so at "
                f"N={top:,} cas-store holds about "
                f"{caps.one_by_one + (top - caps.one_by_one) // BATCH + SAMPLES:,} versions), "
                "then the last 200 appends one at a time, timed."]
    return out


def methods(adapters: list[type[Adapter]], caps: Caps) -> list[str]:
    """Return how each store was driven: durability, reads, growth."""
    out = ["| store | durability of every append | metadata read | full load "
           "| old version | versions kept |", "|---|---|---|---|---|---|"]
    for a in adapters:
        out.append(f"| {a.label} | {a.durability} | {a.meta_read} | {a.full_read} "
                   f"| {a.version_read or '–'} | {'every one' if a.versions else 'none'} |")
    return out


def markdown(res: Results, caps: Caps, elapsed: float, quick: bool,
             info: dict[str, str]) -> str:
    """Return RESULTS.md."""
    today = dt.date.today().isoformat()
    lines = [
        "# Benchmarks: cas-store beside the stores a chat server would use instead",
        "",
        f"Run on {today}{' (quick run)' if quick else ''} with `python -m bench`, "
        f"{elapsed / 60:.1f} minutes, one process; at each N the stores' timed appends "
        "take turns (one append of each store a round, in a new shuffled order each round).",
        "",
        f"- Machine: {info['cpu']}; {info['os']}; a shared virtual machine, so absolute "
        "times are noisy: read the ratios.",
        f"- {info['python']}; {info['packages']}; {info['commit']}.",
        "- Same durability for every store: each append is on disk before the call returns "
        "(fsync, or SQLite synchronous=FULL in WAL mode). Table below.",
        "- Workload: one conversation, OpenAI-style chat messages of 200-2,000 characters of "
        "varied text (users, assistants, ~1 in 5 assistant turns a tool call followed by its "
        f"JSON result, one 1,500-character system prompt repeated every {SYSTEM_EVERY} "
        f"messages), fixed seed {SEED}: every store gets the same messages.",
        "- Floors: append latency against *raw append* (one JSON line written and fsynced); "
        "bytes on disk against the messages' own compressed size (sum over messages of "
        "zstd level 3 of each message's canonical JSON, compressed alone).",
        "- Bytes written per append: the growth of this process's /proc/self/io `write_bytes` "
        "(bytes sent towards the disk, all threads, counted in 4 KiB pages) over the timed "
        "appends, divided by their number; the same method for every store. `write()` bytes "
        "(`wchar`) beside it.",
        f"- Growth: each store grows one conversation one message at a time (one durable "
        f"write, and for cas-store one version, per message) up to N={caps.one_by_one:,}, "
        f"timing the last {SAMPLES} appends before each N (N/2 at N=100)"
        + (f"; past N={caps.one_by_one:,} they grow in batches of {BATCH:,} (one durable "
           f"write, and for cas-store one version, per batch) to N−{SAMPLES}, so at "
           f"N={max(res.sizes):,} cas-store holds about "
           f"{caps.one_by_one + (max(res.sizes) - caps.one_by_one) // BATCH + SAMPLES:,} "
           "versions, fewer than messages" if max(res.sizes) > caps.one_by_one else "")
        + ". The whole-JSON "
        "file is written whole on every save anyway, so it is reached by one save of the "
        "first messages and then timed appends (fewer than "
        f"{SAMPLES} where they would take over 30 s). LangGraph is grown one message at a time "
        f"until {caps.seconds:.0f} s of appending or {caps.disk / 1e9:.0f} GB on disk, then "
        "reported as stopped — never extrapolated.",
        "- Bytes on disk: every file of the store after closing it (SQLite folds its WAL into "
        "the database on close); *disk open*: the same files just before closing, after the "
        f"timed appends. Reads run after reopening, the stores' calls interleaved as the "
        "appends are (figure by figure, each store in turn for three calls in a row, each "
        "result dropped outside the timing), so a slow spell of the machine meets every "
        "store alike; each "
        f"is the median of up to {META_READS} "
        f"(metadata) or {LOAD_READS} (loads) calls on one open handle; a store may keep "
        "what it decoded for the next load (cas-store does: docs/design.md, \"Repeat "
        f"loads\"). *Fresh-handle load*: a handle opened, one full load, closed (median "
        f"of {FRESH_LOADS}; a file is read whole either way). *Cold metadata read*: a fresh handle "
        f"opened, one metadata read, closed (median of {COLD_READS}); SQLiteSession's is its "
        "get_items(limit=1) query "
        "as raw SQL on a fresh sqlite3 connection. *Load peak RSS*: growth of ru_maxrss over a "
        "full load in a fresh interpreter (imports excluded).",
        "",
        "## Headline",
        "",
        *headline(res),
        "",
        "## Targets (from the issue)",
        "",
        *targets(res),
        "",
        "## Every figure",
        "",
        *full_table(res),
        "",
        "## How each store is driven",
        "",
        *methods(res.adapters, caps),
        "",
        "![append cost and bytes on disk against N](results.png)",
        "",
    ]
    return "\n".join(lines)


COLORS = {"cas": "#d62728", "raw": "#7f7f7f", "openai": "#1f77b4", "json": "#ff7f0e",
          "langgraph": "#2ca02c"}


def plot(res: Results, path: Path, title: str) -> None:
    """Draw results.png: append p50, bytes written per append and bytes on disk, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    panels = [
        ("append latency, median (ms)", lambda r: r.p50 * 1e3),
        ("bytes written per append (KiB)", lambda r: r.written / 1024),
        ("bytes on disk at N (MB)", lambda r: r.disk / 1e6),
    ]
    for ax, (label, fn) in zip(axes, panels, strict=True):
        for a in res.adapters:
            pts = [(n, fn(r)) for n in res.sizes if (r := res.get(a.key, n))]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", color=COLORS.get(a.key), label=a.label,
                        linewidth=2.4 if a.key == "cas" else 1.5)
            stop = next((r for r in res.rows if r.store == a.key and r.stopped), None)
            if stop and label.startswith("bytes on disk") and stop.disk:
                n_stop = int(stop.extra.get("count", stop.n))
                ax.plot([n_stop], [stop.disk / 1e6], marker="X", markersize=11,
                        color=COLORS.get(a.key), linestyle="none")
                ax.annotate(f"stopped at N={n_stop:,}", (n_stop, stop.disk / 1e6),
                            textcoords="offset points", xytext=(6, -12), fontsize=8,
                            color=COLORS.get(a.key))
        if label.startswith("bytes on disk"):
            floor = [(n, r.floor / 1e6) for n in res.sizes if (r := res.get("cas", n))]
            if floor:
                xs, ys = zip(*floor, strict=True)
                ax.plot(xs, ys, linestyle="--", color="black",
                        label="floor: messages zstd-compressed")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("messages in the conversation (N)")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.25)
    axes[2].legend(fontsize=8, loc="lower right")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
