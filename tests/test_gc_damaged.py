"""GC never sweeps a damaged store: it deletes nothing and names the sessions affected.

The scenario of the audit: one leaf page deleted, then ``gc --grace 0`` swept exactly the
chunks a repair would need. Now the mark's first pass finds the damage before anything
is deleted; ``force`` is the only way past, and its dry run says what it would lose.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cas_store import StoreDamaged, open_store
from cas_store.cli import app
from cas_store.gc import gc, report_lines
from cas_store.objects import Kind

runner = CliRunner()


def _objects(path: Path) -> dict[bytes, int]:
    with sqlite3.connect(path) as con:
        return dict(con.execute("SELECT oid, kind FROM objects").fetchall())


def _versions(path: Path) -> int:
    with sqlite3.connect(path) as con:
        return int(con.execute("SELECT count(*) FROM versions").fetchone()[0])


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, bytes]:
    """A store with garbage to sweep and one leaf page of session "a" deleted."""
    path = tmp_path / "s.db"
    with open_store(path) as s:
        s.create("a", {"title": "A"}, [{"i": i, "pad": "x" * 30} for i in range(300)])
        before = {o for o, k in _objects(path).items() if k == Kind.PAGE}
        s.create("b", {}, [{"b": i} for i in range(5)])
        s.create("gone", {}, [{"g": 1}])
        s.save("gone", [{"g": 2}], intentional_shrink=True)  # leaves garbage once pruned
        for i in range(3):
            s.append("b", [{"b": 100 + i}])
    # A leaf page (height 0) of "a": its chunks are then unreachable, not garbage.
    with sqlite3.connect(path) as con:
        leaf = next(o for o in sorted(before) if con.execute(
            "SELECT 1 FROM objects WHERE oid = ?", (o,)).fetchone())
        con.execute("DELETE FROM objects WHERE oid = ?", (leaf,))
    time.sleep(0.002)
    return path, leaf


def test_gc_refuses_to_sweep_a_damaged_store(damaged: tuple[Path, bytes]) -> None:
    path, leaf = damaged
    objects, versions = _objects(path), _versions(path)
    with open_store(path) as s, pytest.raises(StoreDamaged) as exc:
        gc(s, grace=0, keep_last=1)
    assert exc.value.sessions == ["a"]
    assert leaf.hex() in exc.value.objects
    assert "nothing was deleted" in str(exc.value) and "fsck" in str(exc.value)
    # Nothing at all: no object, and no version either (retention waits too).
    assert _objects(path) == objects and _versions(path) == versions


def _with_garbage(tmp_path: Path) -> tuple[Path, bytes]:
    """A store with garbage to sweep; returns it and the manifest of session "a"."""
    path = tmp_path / "s.db"
    with open_store(path) as s:
        s.create("a", {}, [{"i": i} for i in range(3)])
        s.create("b", {}, [{"j": 1}])
        s.save("b", [], intentional_shrink=True)
        return path, bytes.fromhex(s.load_meta("a").manifest)


@pytest.mark.parametrize("damage", [
    "UPDATE objects SET data = x'00' WHERE oid = ?",
    # GC marks objects by row number (SQLite checks none): a negative one must be damage
    # that refuses the sweep, never index the mark bitmap from its end (which marked some
    # other object live, or raised IndexError).
    "UPDATE objects SET rowid = -7 WHERE oid = ?",
], ids=["unreadable", "negative-row-number"])
def test_an_unreadable_object_is_damage_too(tmp_path: Path, damage: str) -> None:
    path, man = _with_garbage(tmp_path)
    with sqlite3.connect(path) as con:
        con.execute(damage, (man,))
    time.sleep(0.002)
    objects = _objects(path)
    with open_store(path) as s:
        with pytest.raises(StoreDamaged) as exc:
            gc(s, grace=0)
        assert exc.value.sessions == ["a"] and exc.value.objects == [man.hex()]
        assert _objects(path) == objects
        report = gc(s, grace=0, force=True)
    assert report.forced and report.damaged_sessions == ("a",)
    assert report.objects_swept > 0


def test_force_dry_run_says_what_it_would_lose_then_force_sweeps(
        damaged: tuple[Path, bytes]) -> None:
    path, _ = damaged
    objects = _objects(path)
    with open_store(path) as s:
        dry = gc(s, grace=0, keep_last=1, dry_run=True, force=True)
        assert _objects(path) == objects
        assert dry.forced and dry.damaged_sessions == ("a",) and dry.missing == 1
        # The chunks under the deleted page are unreachable now: the sweep would take them.
        assert dry.objects_swept > 0
        lines = report_lines(dry)
        assert any(line.startswith("forced: would lose") and "objects" in line
                   for line in lines), lines
        assert any("sessions affected: a" in line for line in lines), lines
        real = gc(s, grace=0, keep_last=1, force=True)
    assert (real.objects_swept, real.versions_pruned) == (dry.objects_swept,
                                                          dry.versions_pruned)
    assert len(_objects(path)) == len(objects) - real.objects_swept


def test_a_clean_store_is_swept_as_before(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as s:
        s.create("a", {}, [{"i": 1}])
        s.save("a", [{"i": 2}], intentional_shrink=True)
        time.sleep(0.002)
        report = gc(s, grace=0, keep_last=1)
    assert not report.forced and report.missing == 0 and report.damaged_sessions == ()
    assert report.versions_pruned == 1 and report.objects_swept >= 1


# --- the command line ----------------------------------------------------------------------


def run(path: Path, *args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["--store", str(path), "gc", *args])
    return r.exit_code, r.stdout, r.stderr


def test_cli_gc_on_a_damaged_store_exits_6_and_names_the_sessions(
        damaged: tuple[Path, bytes]) -> None:
    path, leaf = damaged
    objects = _objects(path)
    code, out, err = run(path, "--grace", "0")
    assert code == 6, (out, err)
    assert "sessions affected: a" in err and "fsck" in err and "--force" in err
    assert "nothing was deleted" in err
    assert _objects(path) == objects
    code, out, err = run(path, "--grace", "0", "--json")
    assert code == 6
    body: dict[str, Any] = json.loads(out)["error"]
    assert body["code"] == "store_damaged" and body["sessions"] == ["a"]
    assert leaf.hex() in body["objects"]


def test_cli_gc_force(damaged: tuple[Path, bytes]) -> None:
    path, _ = damaged
    objects = _objects(path)
    code, out, _ = run(path, "--grace", "0", "--force", "--dry-run")
    assert code == 0
    assert "forced: would lose" in out and "sessions affected: a" in out
    assert _objects(path) == objects
    code, out, _ = run(path, "--grace", "0", "--force")
    assert code == 0 and "forced: lost" in out
    assert len(_objects(path)) < len(objects)


def test_sweep_figures_add_up_over_many_batches(tmp_path: Path) -> None:
    # Over 500 garbage objects: several delete batches, each adding to the figures.
    path = tmp_path / "s.db"
    with open_store(path) as s:
        s.create("a", {}, [{"i": i, "pad": "y" * (i % 50)} for i in range(1300)])
        s.save("a", [{"kept": 1}], intentional_shrink=True)
        time.sleep(0.002)
        with sqlite3.connect(path) as con:
            total = con.execute("SELECT count(*) FROM objects").fetchone()[0]
        calls: list[tuple[str, int, int | None]] = []
        dry = gc(s, grace=0, keep_last=1, dry_run=True,
                 progress=lambda phase, done, of: calls.append((phase, done, of)))
        with sqlite3.connect(path) as con:
            before = dict(con.execute("SELECT oid, length(data) FROM objects").fetchall())
        real = gc(s, grace=0, keep_last=1)
        with sqlite3.connect(path) as con:
            after = {r[0] for r in con.execute("SELECT oid FROM objects")}
    gone = set(before) - after
    assert real.objects_swept == dry.objects_swept == len(gone) > 1000
    assert real.bytes_swept == dry.bytes_swept == sum(before[o] for o in gone)
    sweep = [(done, of) for phase, done, of in calls if phase == "sweep"]
    assert sweep[-1] == (total, total)
    dones = [d for d, _ in sweep]
    assert dones == sorted(dones) and len(sweep) >= 3 and all(of == total for _, of in sweep)
    assert sweep[0][0] >= 500 and all(d <= total for d in dones)  # objects scanned so far


def test_sweep_progress_ends_at_the_total_also_when_the_grace_spares_objects(
        tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as s:
        s.create("a", {}, [{"i": 1}])
        calls: list[tuple[str, int, int | None]] = []
        gc(s, progress=lambda phase, done, of: calls.append((phase, done, of)))  # 1h grace
        total = sum(s.stats().objects.values())
    assert [c for c in calls if c[0] == "sweep"][-1] == ("sweep", total, total)


def test_an_impossibly_large_row_number_is_damage_not_a_2_tib_bitmap(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as s:
        s.create("a", {}, [{"i": i} for i in range(3)])
        man = bytes.fromhex(s.load_meta("a").manifest)
    with sqlite3.connect(path) as con:
        con.execute("UPDATE objects SET rowid = ? WHERE oid = ?", (2**44, man))
    with open_store(path) as s, pytest.raises(StoreDamaged) as exc:
        gc(s, grace=0, dry_run=True)
    assert exc.value.objects == [man.hex()]


def test_a_chain_of_bases_that_comes_back_to_itself_is_damage_not_a_recursion(
        tmp_path: Path) -> None:
    # Only a damaged id index reads one id as another; then a delta's base can read as
    # the delta itself. Naming the sessions a damaged store affects must end (it recursed
    # until Python's limit) and name that session.
    path = tmp_path / "s.db"
    with open_store(path) as s:
        s.create("a", {}, [{"i": i} for i in range(3)])
        base = bytes.fromhex(s.load_meta("a").manifest)
        s.append("a", [{"i": 3}])
        delta = bytes.fromhex(s.load_meta("a").manifest)
        s.create("b", {}, [{"j": 1}])
        lost = bytes.fromhex(s.load_meta("b").manifest)
    with sqlite3.connect(path) as con:
        con.execute("UPDATE objects SET data = (SELECT data FROM objects WHERE oid = ?)"
                    " WHERE oid = ?", (delta, base))
        con.execute("DELETE FROM objects WHERE oid = ?", (lost,))
    with open_store(path) as s, pytest.raises(StoreDamaged) as exc:
        gc(s, grace=0, dry_run=True)
    assert exc.value.sessions == ["a", "b"]
