"""``python -m bench``: cas-store beside its baselines; writes bench/RESULTS.md and results.png.

    python -m bench            # N = 100, 1,000, 10,000, 100,000 (about 10-20 minutes)
    python -m bench --quick    # N = 100, 1,000 (a smoke run; writes under bench/.work/)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .adapters import all_adapters
from .measure import proc_io_works
from .report import Results, full_table, headline, machine, markdown, plot, readme_table, targets
from .runner import Caps, run_all

HERE = Path(__file__).resolve().parent


def _with_other_sections(text: str, old: Path) -> str:
    """Return text followed by the sections of old it does not write itself.

    The other benchmarks (integrations, scale-out, feed and search) append their own
    sections to RESULTS.md; a rerun of this one must not drop them.
    """
    if not old.exists():
        return text
    mine = {line for line in text.splitlines() if line.startswith("## ")}
    kept, keep = [], False
    for line in old.read_text().splitlines():
        if line.startswith("## "):
            keep = line not in mine
        if keep:
            kept.append(line)
    return text.rstrip("\n") + ("\n\n" + "\n".join(kept) + "\n" if kept else "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison, print the tables, write the report and the plot."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 100 and 1,000 only")
    p.add_argument("--sizes", help="comma-separated N values (overrides --quick)")
    p.add_argument("--stores", help="comma-separated store keys: cas,raw,openai,json,langgraph")
    p.add_argument("--out", type=Path, help="directory for RESULTS.md and results.png "
                   "(default: bench/, or bench/.work/ for --quick and --sizes)")
    p.add_argument("--workdir", type=Path, help="where the stores live while measured "
                   "(default: a new temporary directory, removed afterwards)")
    p.add_argument("--cap-seconds", type=float, help="time cap for a quadratic store")
    p.add_argument("--cap-gb", type=float, default=5.0, help="disk cap for a quadratic store")
    p.add_argument("--one-by-one", type=int, default=10_000,
                   help="grow one message at a time up to this N, then in batches of 1,000 "
                   "(default 10,000; 100,000 takes about 3x longer)")
    args = p.parse_args(argv)

    if args.sizes:
        sizes = sorted(int(x.replace("_", "")) for x in args.sizes.split(","))
    else:
        sizes = [100, 1_000] if args.quick else [100, 1_000, 10_000, 100_000]
    trial = args.quick or bool(args.sizes)
    caps = Caps(seconds=args.cap_seconds or (40.0 if args.quick else 120.0),
                disk=int(args.cap_gb * 1e9), one_by_one=args.one_by_one)
    adapters = all_adapters()
    if args.stores:
        keys = args.stores.split(",")
        adapters = [a for a in adapters if a.key in keys]
        if "raw" not in keys:
            print("note: without raw append there is no latency floor", file=sys.stderr)
    out = args.out or (HERE / ".work" if trial else HERE)
    out.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cas-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not proc_io_works():
        print("error: /proc/self/io write_bytes does not count this process's writes here; "
              "bytes written per append cannot be measured", file=sys.stderr)
        return 2

    start = time.perf_counter()
    try:
        rows, _floor, _w = run_all(adapters, sizes, workdir, caps)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - start

    res = Results(rows, adapters, sizes)
    info = machine(workdir.parent if args.workdir is None else workdir)
    target = out / "RESULTS.md"
    target.write_text(_with_other_sections(markdown(res, caps, elapsed, trial, info), target))
    plot(res, out / "results.png",
         f"cas-store beside its baselines — {time.strftime('%Y-%m-%d')}, {info['cpu']}")
    if not trial:
        _write_readme_table(readme_table(res, info, caps))
    print("\n".join([*headline(res), "", *targets(res), "", *full_table(res)]))
    print(f"\nwrote {out / 'RESULTS.md'} and {out / 'results.png'} "
          f"({elapsed / 60:.1f} min)", file=sys.stderr)
    return 0


def _write_readme_table(lines: list[str]) -> None:
    """Replace the table between the README's bench-table markers with this run's."""
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench-table: written by `make bench` -->\n", "<!-- /bench-table -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        readme.write_text(head + start + "\n".join(lines) + "\n" + end + tail)


if __name__ == "__main__":
    sys.exit(main())
