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
from .runner import BATCH, ONE_BY_ONE_MAX, SAMPLES, Caps, Row
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
        "| disk ÷ zstd floor | full load ms | metadata read ms | old version (N/2) ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in res.sizes:
        base = res.get("raw", n)
        for a in res.adapters:
            r = res.get(a.key, n)
            if r is None:
                out.append(f"| {a.label} | {n:,} | {res.stopped(a.key, n)} |"
                           + " |" * 11)
                continue
            out.append(
                f"| {a.label} | {n:,} | {r.reached} | {r.samples} | {_ms(r.p50)} | {_ms(r.p95)} "
                f"| {_ratio(r.p50 / base.p50) if base else '–'} | {_kb(r.written)} "
                f"| {_kb(r.wchar)} | {_mb(r.disk)} | {_ratio(r.disk / r.floor)} "
                f"| {_ms(r.load)} | {_ms(r.meta)} | {_ms(r.version) if a.versions else '–'} |")
    return out


def _spread(values: list[float]) -> float:
    return max(values) / min(values) if values else 0.0


def targets(res: Results) -> list[str]:
    """Return the issue's targets with met/missed, by how much, and why where missed."""
    cas = {n: r for n in res.sizes if (r := res.get("cas", n))}
    ns = list(cas)
    if not ns:
        return ["cas-store was not measured."]
    out: list[str] = []

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    # 1. append latency
    oa = {n: r for n in ns if (r := res.get("openai", n))}
    raw = {n: r for n in ns if (r := res.get("raw", n))}
    vs_oa = {n: cas[n].p50 / oa[n].p50 for n in ns if n in oa}
    vs_raw = {n: cas[n].p50 / raw[n].p50 for n in ns if n in raw}
    # The machine's speed drifts between sizes (raw append's own median moves too), so
    # flatness is judged on the ratio to the floor measured in the same minutes.
    spread = _spread(list(vs_raw.values()))
    ok1 = all(v <= 1.0 for v in vs_oa.values())
    ok2 = all(v <= 3.0 for v in vs_raw.values())
    ok3 = spread <= 1.5
    out.append(f"1. Append no slower than SQLiteSession at every N: {verdict(ok1)} (cas-store "
               "p50 ÷ SQLiteSession p50: "
               + ", ".join(f"{_ratio(v)} at {n:,}" for n, v in vs_oa.items()) + ").")
    out.append("   Within 3× of raw append at every N: "
               f"{verdict(ok2)} (" + ", ".join(f"{_ratio(v)} at {n:,}"
                                                 for n, v in vs_raw.items()) + ").")
    out.append(f"   Flat in N: {verdict(ok3)} (largest ÷ smallest of those ratios over N: "
               f"{spread:.2f}, flat taken as ≤ 1.5; medians "
               + ", ".join(f"{_ms(cas[n].p50)} ms" for n in ns) + ").")
    if not (ok1 and ok2):
        out.append("   Why: a cas-store append is one SQLite write transaction that reads the "
                   "head and manifest, hashes and compresses the message, and writes the chunk, "
                   "a new manifest, the version-log row and the head (plus a page every few "
                   "appends), then syncs the WAL; SQLiteSession inserts one row and keeps no "
                   "version, raw append writes one line. Both SQLite stores pay the same "
                   "fsync; the gap is CPU and extra rows per append.")
    # 2. bytes on disk
    n10 = 10_000 if 10_000 in ns else max(ns)
    r = cas[n10]
    ratio = r.disk / r.floor
    per_msg = {n: cas[n].disk / n for n in ns}
    # Only sizes grown one version per message count: beyond, batches hold fewer versions.
    one_by_one = [n for n in ns if 1000 <= n <= ONE_BY_ONE_MAX]
    lin = _spread([per_msg[n] for n in one_by_one]) if len(one_by_one) > 1 else 1.0
    out.append(f"2. Bytes on disk at N={n10:,} with every version kept, at most 2× the "
               f"compressed messages: {verdict(ratio <= 2.0)} ({_mb(r.disk)} MB = "
               f"{_ratio(ratio)} the floor of {_mb(r.floor)} MB).")
    out.append(f"   Linear in N: {verdict(lin <= 1.5)} (bytes on disk per message: "
               + ", ".join(f"{per_msg[n]:,.0f} B at {n:,}" for n in ns)
               + f"; judged on 1,000 to {ONE_BY_ONE_MAX:,}, where every message is a "
               "version).")
    lg_stop = res.stopped("langgraph", n10)
    lg = res.get("langgraph", n10)
    if lg_stop:
        out.append(f"   LangGraph keeping every checkpoint: {lg_stop}.")
    elif lg:
        out.append(f"   LangGraph keeping every checkpoint: {_ratio(lg.disk / lg.floor)} "
                   "the floor.")
    if ratio > 2.0:
        out.append("   Why: each version costs the store a manifest, a version-log row and "
                   "its share of pages and SQLite b-tree overhead besides the message "
                   "itself; at ~0.5 KB per compressed message that fixed cost is of the same "
                   "order as the message.")
    # 3. metadata read
    metas = {n: m for n in ns if (m := cas[n].meta)}
    oa_meta = {n: m for n in oa if (m := oa[n].meta)}
    mspread = _spread(list(metas.values()))
    vs = {n: metas[n] / oa_meta[n] for n in metas if n in oa_meta}
    out.append(f"3. Metadata read flat in N: {verdict(mspread <= 1.5)} (largest ÷ smallest "
               f"median: {mspread:.2f}); no slower than SQLiteSession's cheapest read "
               f"(get_items(limit=1)): {verdict(all(v <= 1 for v in vs.values()))} ("
               + ", ".join(f"{_ratio(v)} at {n:,}" for n, v in vs.items()) + ").")
    # 4. full load
    js = res.get("json", n10)
    if js and js.load and r.load:
        lr = r.load / js.load
        out.append(f"4. Full load of {n10:,} messages no slower than parsing the whole-JSON "
                   f"file: {verdict(lr <= 1.0)} ({_ms(r.load)} ms against {_ms(js.load)} ms, "
                   f"{_ratio(lr)}).")
        if lr > 1.0:
            out.append("   Why: json.load is one C pass over one buffer; cas-store looks up "
                       "each message as its own object in the index, decompresses each "
                       "zstd frame on its own (≈4 µs a message: the per-frame entropy "
                       "tables) and then parses, so it pays three passes where the file "
                       "pays one. Worker threads overlap the fetch and decompression with "
                       "the parse, which halves the gap on 2 cores but cannot close it.")
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
        "take turns (one append of each store in turn).",
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
        f"- Growth: each store grows one conversation one message at a time, timing the last "
        f"{SAMPLES} appends before each N (N/2 at N=100). Beyond N={ONE_BY_ONE_MAX:,} the "
        f"stores that can append many messages at once grow in batches of {BATCH:,} (one "
        f"durable write, and for cas-store one version, per batch) to N−{SAMPLES}, so at "
        "N=100,000 cas-store holds fewer versions than messages (about "
        f"{ONE_BY_ONE_MAX + (100_000 - ONE_BY_ONE_MAX) // BATCH + SAMPLES:,}). The whole-JSON "
        "file is written whole on every save anyway, so it is reached by one save of the "
        "first messages and then timed appends (fewer than "
        f"{SAMPLES} where they would take over 30 s). LangGraph is grown one message at a time "
        f"until {caps.seconds:.0f} s of appending or {caps.disk / 1e9:.0f} GB on disk, then "
        "reported as stopped — never extrapolated.",
        "- Bytes on disk: every file of the store after closing it (SQLite folds its WAL into "
        "the database on close). Reads run after reopening; each is the median of up to 30 "
        "(metadata) or 5 (loads) calls.",
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
