"""A damaged database file (truncated, garbage or zeroed pages, a broken header), repeated:
``cas-store fsck`` reports SQLite's integrity check and the sessions it can still read and
exits 6; no command prints a traceback; the API answers 500 ``corrupt_store`` and goes on.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cas_store import open_store
from cas_store.cli import app

Record = Callable[[str, Any], None]
TRIALS = int(os.environ.get("CAS_DAMAGE_TRIALS", "5"))
FIGURES: Counter[str] = Counter()


def process(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    """Run the real ``cas-store`` executable."""
    exe = Path(sys.executable).with_name("cas-store")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_STORE")}
    return subprocess.run([str(exe), "--store", str(store), *args], capture_output=True,
                          text=True, timeout=120, env=env)


runner = CliRunner()


def cli(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    """Run a command in this process (fast); an exception escaping it fails the test."""
    r = runner.invoke(app, ["--store", str(store), *args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"{args} raised {r.exception!r}") from r.exception
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "store.db"
    rng = random.Random(1)
    with open_store(path, synchronous="NORMAL") as store:
        for i in range(40):
            store.create(f"s{i:02d}", {"title": f"chat {i}"},
                         [{"role": "user", "content": rng.randbytes(900).hex()}
                          for _ in range(4)])
            store.append(f"s{i:02d}", [{"role": "assistant", "content": f"ok {i}"}])
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path


def page_size(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:18], "big") or 65536


def truncate(path: Path, rng: random.Random) -> str:
    size = path.stat().st_size
    keep = rng.randrange(size // 4, size * 3 // 4) // page_size(path) * page_size(path)
    with path.open("r+b") as f:
        f.truncate(keep)
    return f"truncated to {keep} of {size} bytes"


def garbage_pages(path: Path, rng: random.Random) -> str:
    ps = page_size(path)
    pages = path.stat().st_size // ps
    chosen = rng.sample(range(2, pages), k=min(pages - 2, rng.randint(1, 6)))
    with path.open("r+b") as f:
        for p in chosen:
            f.seek(p * ps)
            f.write(rng.randbytes(ps))
    return f"random bytes over pages {sorted(chosen)}"


def zeroed_pages(path: Path, rng: random.Random) -> str:
    ps = page_size(path)
    pages = path.stat().st_size // ps
    start = rng.randrange(2, pages - 3)
    with path.open("r+b") as f:
        f.seek(start * ps)
        f.write(b"\0" * ps * 3)
    return f"pages {start}-{start + 2} zeroed"


def broken_header(path: Path, rng: random.Random) -> str:
    with path.open("r+b") as f:
        f.write(rng.randbytes(100))
    return "the 100-byte header overwritten"


DAMAGE = {"truncated": truncate, "garbage_pages": garbage_pages, "zeroed_pages": zeroed_pages,
          "broken_header": broken_header}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_fsck_on_a_damaged_file_reports_and_exits_6(pristine: Path, tmp_path: Path,
                                                    kind: str) -> None:
    for trial in range(TRIALS):
        rng = random.Random(f"{kind}-{trial}")
        path = tmp_path / f"{kind}-{trial}.db"
        shutil.copy(pristine, path)
        how = DAMAGE[kind](path, rng)
        # The real executable on the first trial of each kind, in-process after that.
        proc = (process if trial == 0 else cli)("fsck", store=path)
        FIGURES["fsck_runs"] += 1
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, (how, out[-2000:])
        assert proc.returncode == 6, (how, proc.returncode, out[-2000:])
        if kind == "broken_header":
            # Not a database any more: nothing to read, one line naming the damage.
            assert "damaged" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
            FIGURES[f"trials_{kind}"] += 1
            continue
        assert "corrupt_store" in proc.stdout, (how, out[-2000:])
        assert "sessions still load" in proc.stdout, (how, out[-2000:])
        report = json.loads(cli("fsck", "--json", store=path).stdout)
        kinds = Counter(p["kind"] for p in report["problems"])
        assert not report["ok"] and kinds["corrupt_store"] >= 1, (how, report)
        if kinds["readable_sessions"]:
            readable = next(p for p in report["problems"] if p["kind"] == "readable_sessions")
            # Each session named readable really loads.
            for a in readable["affects"][:5]:
                shown = cli("show", a["session_id"], "--json", store=path)
                assert shown.returncode == 0, (how, shown.stderr)
                FIGURES["readable_sessions_checked"] += 1
            FIGURES["readable_sessions"] += len(readable["affects"])
        FIGURES["unreadable_sessions"] += kinds["unreadable_session"]
        # The other commands: one line and exit 6 (or work), never a traceback.
        for args in (["ls"], ["stats"], ["log", "s00"], ["show", "s39"], ["recover"]):
            other = cli(*args, store=path)
            assert "Traceback" not in other.stdout + other.stderr, (how, args, other.stderr)
            assert other.returncode in (0, 3, 6), (how, args, other.returncode, other.stderr)
            FIGURES["other_commands"] += 1
        FIGURES[f"trials_{kind}"] += 1


def test_fsck_of_a_sound_file_is_clean(pristine: Path, tmp_path: Path) -> None:
    path = tmp_path / "sound.db"
    shutil.copy(pristine, path)
    proc = cli("fsck", store=path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout


def test_report_figures(record_property: Record) -> None:
    """Records what the damage trials did (runs after them in this module)."""
    record_property("what", "damaged database file (truncated, garbage/zeroed pages, broken"
                    " header), fsck and other commands")
    for key, value in sorted(FIGURES.items()):
        record_property(key, value)
