# ruff: noqa: RUF001  (the report is typography: the multiplication sign)
"""LangGraph on cas-store: CasSaver beside SqliteSaver, one thread grown one message a step.

    python -m bench.integrations_bench              # N = 100, 1,000, 10,000
    python -m bench.integrations_bench --sizes 100,1000 --cap-seconds 30

A MessagesState graph whose one node appends the run's message; one ``invoke`` per
message with ``durability="exit"`` (one checkpoint per step, every checkpoint kept, the
savers' default). Both savers get the same messages (bench/workload.py, with fixed ids),
both run SQLite in WAL mode with synchronous=FULL, one after the other in this process.
At each N: bytes on disk (every file of the store, after folding the WAL in), beside the
messages' own JSON (LangChain's dict form as the graph holds them, and the OpenAI-style
dicts they came from), and the per-step latency (median and p95 of the last 100 steps
before N). SqliteSaver rewrites the whole list at every step, so it is grown until
``--cap-seconds`` of stepping or ``--cap-gb`` on disk; past that its figures are
extrapolated from the last measured step (bytes ~ N², latency ~ N) and marked so.
Each size ends with a check: get_state and the newest history entries match the
messages appended.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages, message_to_dict
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.runtime import Runtime

from cas_store import open_store
from cas_store.integrations.langgraph import CasSaver

from .measure import percentile
from .workload import Workload

THREAD = "bench-thread"


@dataclass
class _Incoming:
    message: BaseMessage


def _append(state: MessagesState, runtime: Runtime[_Incoming]) -> dict[str, Any]:
    return {"messages": [runtime.context.message]}


def _graph(saver: Any) -> Any:
    g = StateGraph(MessagesState, context_schema=_Incoming)
    g.add_node("append", _append)
    g.add_edge(START, "append")
    return g.compile(checkpointer=saver)


def _dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@dataclass
class Point:
    n: int
    disk: int
    median_ms: float
    p95_ms: float
    extrapolated: bool = False


@dataclass
class Run:
    label: str
    points: list[Point] = field(default_factory=list)
    stopped_at: int | None = None
    stop_disk: int = 0
    stop_ms: float = 0.0
    seconds: float = 0.0


class _Cas:
    label = "CasSaver (cas-store)"

    def __init__(self, root: Path) -> None:
        self.path = root / "store.db"
        self.open()

    def open(self) -> None:
        self.store = open_store(self.path)
        self.graph = _graph(CasSaver(self.store))

    def disk(self) -> int:
        # Closing folds the WAL into the database file; reopen for the next steps.
        self.store.close()
        size = _dir_bytes(self.path.parent)
        self.open()
        return size

    def close(self) -> None:
        self.store.close()


class _Sqlite:
    label = "SqliteSaver (langgraph-checkpoint-sqlite)"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conn = sqlite3.connect(root / "checkpoints.sqlite", check_same_thread=False)
        saver = SqliteSaver(self.conn)
        saver.setup()
        self.conn.execute("PRAGMA synchronous=FULL")
        self.graph = _graph(saver)

    def disk(self) -> int:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return _dir_bytes(self.root)

    def close(self) -> None:
        self.conn.close()


def _check(graph: Any, expected: list[BaseMessage]) -> None:
    cfg = {"configurable": {"thread_id": THREAD}}
    got = graph.get_state(cfg).values["messages"]
    assert got == expected, "get_state differs from the messages appended"
    for back, snap in enumerate(graph.get_state_history(cfg, limit=3)):
        want = expected[: len(expected) - back]
        assert snap.values["messages"] == want, f"history entry {back} is wrong"


def grow(kind: type[_Cas] | type[_Sqlite], root: Path, messages: list[BaseMessage],
         sizes: list[int], cap_seconds: float, cap_bytes: int) -> Run:
    """Append messages one step at a time, measuring at each size (capped for SqliteSaver)."""
    root.mkdir(parents=True)
    store = kind(root)
    run = Run(store.label)
    cfg = {"configurable": {"thread_id": THREAD}}
    times: list[float] = []
    stepping = 0.0
    t_start = time.perf_counter()
    capped = kind is _Sqlite
    for i, msg in enumerate(messages[: sizes[-1]]):
        t0 = time.perf_counter()
        store.graph.invoke({"messages": []}, cfg, context=_Incoming(msg), durability="exit")
        dt = time.perf_counter() - t0
        times.append(dt)
        stepping += dt
        n = i + 1
        if n in sizes:
            window = times[-100:]
            run.points.append(Point(n, store.disk(), 1000 * percentile(window, 50),
                                    1000 * percentile(window, 95)))
            _check(store.graph, messages[:n])
            print(f"  {store.label}: N={n:,} disk={run.points[-1].disk / 1e6:,.2f} MB "
                  f"step={run.points[-1].median_ms:.2f} ms", flush=True)
        elif capped and n % 100 == 0 and (stepping > cap_seconds or store.disk() > cap_bytes):
            window = times[-100:]
            run.stopped_at, run.stop_disk = n, store.disk()
            run.stop_ms = 1000 * percentile(window, 50)
            print(f"  {store.label}: stopped at N={n:,} ({stepping:.0f} s of steps,"
                  f" {run.stop_disk / 1e9:.2f} GB)", flush=True)
            break
    run.seconds = time.perf_counter() - t_start
    if run.stopped_at is not None:
        _check(store.graph, messages[: run.stopped_at])
        k = run.stopped_at
        for n in sizes:
            if n > k:
                # Every step stores the whole list: bytes grow with N², a step with N.
                run.points.append(Point(n, int(run.stop_disk * (n / k) ** 2),
                                        run.stop_ms * n / k, float("nan"), extrapolated=True))
    store.close()
    return run


def _own_json(messages: list[BaseMessage], raw: list[dict[str, Any]], n: int) -> tuple[int, int]:
    def size(v: Any) -> int:
        return len(json.dumps(v, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode())

    return (sum(size(message_to_dict(m)) for m in messages[:n]),
            sum(size(m) for m in raw[:n]))


def report(runs: list[Run], messages: list[BaseMessage], raw: list[dict[str, Any]],
           sizes: list[int], seconds: float) -> str:
    """Return the markdown section for bench/RESULTS.md."""
    cas, lite = runs
    lines = [
        "## LangGraph: CasSaver beside SqliteSaver",
        "",
        f"`python -m bench.integrations_bench`, {seconds / 60:.1f} minutes, one process. "
        "A MessagesState graph, one node appending the run's message, one `invoke` per "
        "message with `durability=\"exit\"`: one checkpoint per step, every checkpoint kept. "
        "The messages of bench/workload.py (200-2,000 characters, tool calls and results, "
        "fixed ids), the same for both savers; both on SQLite in WAL mode, "
        "synchronous=FULL. Bytes: every file of the store after folding the WAL in. "
        "Latency: median (p95) of the last 100 steps before N. After each N, get_state "
        "and the newest history entries are checked against the messages appended.",
        "",
        "| N | messages' JSON (LangChain / OpenAI dicts) | CasSaver on disk | × JSON |"
        " SqliteSaver on disk | × JSON | CasSaver step | SqliteSaver step |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pc, pl in zip(cas.points, lite.points, strict=True):
        lc, oa = _own_json(messages, raw, pc.n)
        mark = " (extrapolated)" if pl.extrapolated else ""
        lite_ms = (f"{pl.median_ms:,.1f} ms{mark}" if pl.extrapolated
                   else f"{pl.median_ms:,.1f} ms ({pl.p95_ms:,.1f})")
        lines.append(
            f"| {pc.n:,} | {lc / 1e6:,.2f} / {oa / 1e6:,.2f} MB | {pc.disk / 1e6:,.2f} MB | "
            f"{pc.disk / lc:.2f}× / {pc.disk / oa:.2f}× | {pl.disk / 1e6:,.0f} MB{mark} | "
            f"{pl.disk / lc:,.0f}×{mark} | {pc.median_ms:.2f} ms ({pc.p95_ms:.2f}) | "
            f"{lite_ms} |")
    lines.append("")
    if lite.stopped_at is not None:
        lines.append(
            f"SqliteSaver was stopped at N={lite.stopped_at:,} ({lite.stop_disk / 1e9:.2f} GB "
            f"on disk, {lite.stop_ms:.1f} ms a step); the rows past it scale that measured "
            "point (bytes × (N/N_stop)², step × N/N_stop), since each checkpoint holds the "
            "whole message list. They are estimates, not measurements.")
    lines.append(f"Wall time: CasSaver {cas.seconds:.0f} s, SqliteSaver {lite.seconds:.0f} s.")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both savers, print the table, optionally write it into RESULTS.md."""
    p = argparse.ArgumentParser(prog="python -m bench.integrations_bench",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--cap-seconds", type=float, default=150.0,
                   help="SqliteSaver: stop after this many seconds of steps")
    p.add_argument("--cap-gb", type=float, default=5.0, help="SqliteSaver: disk cap")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--write", type=Path,
                   help="put the section into this markdown file (e.g. bench/RESULTS.md)")
    args = p.parse_args(argv)
    sizes = sorted(int(x.replace("_", "")) for x in args.sizes.split(","))
    raw = Workload().messages(sizes[-1])
    messages = convert_to_messages(raw)
    for i, m in enumerate(messages):
        m.id = f"m{i}"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cas-lg-bench-"))
    t0 = time.perf_counter()
    try:
        runs = [grow(_Cas, work / "cas", messages, sizes, args.cap_seconds, 0),
                grow(_Sqlite, work / "sqlite", messages, sizes, args.cap_seconds,
                     int(args.cap_gb * 1e9))]
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = report(runs, messages, raw, sizes, time.perf_counter() - t0)
    print(text)
    if args.write:
        write_section(args.write, text)
    return 0


def write_section(path: Path, text: str) -> None:
    """Put the section into path, replacing an earlier one (``python -m bench`` drops it)."""
    head = text.split("\n", 1)[0]
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if head in old:
        start = old.index(head)
        nxt = old.find("\n## ", start + len(head))
        old = old[:start].rstrip("\n") + ("\n\n" + old[nxt + 1:] if nxt >= 0 else "")
    path.write_text(old.rstrip("\n") + "\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
