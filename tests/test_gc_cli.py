"""The ``cas-store gc`` command: options, durations, output, exit statuses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cas_store import open_store
from cas_store.cli import app
from cas_store.gc import parse_duration

runner = CliRunner()


def msg(i: int | str) -> dict[str, str]:
    return {"role": "user", "content": f"message {i}"}


@pytest.fixture
def garbage(tmp_path: Path) -> Path:
    path = tmp_path / "s.db"
    s = open_store(path)
    s.create("a", {"title": "A"}, [msg(i) for i in range(40)])
    for k in range(5):
        s.append("a", [msg(f"n{k}")])
    s.rewind("a", 2)
    s.create("gone", {}, [msg("gone")], at=time.time() - 90 * 86400)
    s.delete("gone", at=time.time() - 60 * 86400)
    s.close()
    time.sleep(0.002)
    return path


def run(store: Path, *args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["--store", str(store), "gc", *args])
    return r.exit_code, r.stdout, r.stderr


def test_dry_run_then_real_run_print_the_same_figures(garbage: Path) -> None:
    code, dry, _ = run(garbage, "--keep-last", "1", "--grace", "0", "--dry-run")
    assert code == 0
    assert "would go" in dry and "1 deleted sessions expired" in dry
    code, real, _ = run(garbage, "--keep-last", "1", "--grace", "0")
    assert code == 0
    assert real.replace("went", "would go") == dry
    s = open_store(garbage)
    assert len(s.versions("a")) == 1 and s.fsck().ok
    s.close()


def test_json_report(garbage: Path) -> None:
    code, out, _ = run(garbage, "--keep-within", "1h", "--grace", "0s", "--json")
    assert code == 0
    report = json.loads(out)
    # Every version of "a" is recent: only the expired session goes (chunk, meta, manifest).
    assert (report["versions_pruned"], report["sessions_dropped"]) == (2, 1)
    assert report["objects_swept"] == 3 and report["bytes_swept"] > 0


def test_default_grace_spares_fresh_garbage(garbage: Path) -> None:
    code, out, _ = run(garbage, "--keep-last", "1", "--json")
    assert code == 0
    assert json.loads(out)["objects_swept"] == 0
    assert json.loads(out)["versions_pruned"] > 0


@pytest.mark.parametrize("args", [["--keep-within", "3y"], ["--grace", "-1h"],
                                  ["--deleted-retention", "soon"]])
def test_bad_duration_is_one_line_and_exit_2(garbage: Path, args: list[str]) -> None:
    code, _, err = run(garbage, *args)
    assert code == 2
    assert "bad duration" in err and len(err.strip().splitlines()) == 1


def test_missing_store(tmp_path: Path) -> None:
    code, _, err = run(tmp_path / "nope.db")
    assert code == 3 and "no store" in err


def test_help_ends_with_example() -> None:
    r = runner.invoke(app, ["gc", "--help"])
    assert r.exit_code == 0
    assert "Example: cas-store gc" in r.stdout
    for option in ("--keep-last", "--keep-within", "--deleted-retention", "--grace",
                   "--dry-run", "--json"):
        assert option in r.stdout


def test_parse_duration() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90m") == 5400
    assert parse_duration("45s") == 45
    assert parse_duration("0") == 0
    for bad in ("", "d", "-1d", "1y", "nan", "inf"):
        with pytest.raises(ValueError, match="bad duration"):
            parse_duration(bad)


def test_gc_explains_what_delta_manifests_keep(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with open_store(path) as s:
        s.create("a", {}, [msg(i) for i in range(3)])
        for k in range(4):
            s.append("a", [msg(f"d{k}")])  # each a delta manifest on the one before
    code, out, _ = run(path, "--keep-last", "1", "--grace", "0", "--dry-run")
    assert code == 0
    assert "kept: 4 manifests of pruned versions" in out and "delta manifests" in out
    code, out, _ = run(path, "--keep-last", "1", "--grace", "0", "--json")
    report = json.loads(out)
    assert report["versions_pruned"] == 4 and report["delta_bases_kept"] == 4
    with open_store(path) as s:
        assert [m["content"] for m in s.load("a").messages][-1] == "message d3"
        # A save writes a full manifest: the head no longer needs the chain.
        s.save("a", [*s.load("a").messages, msg("fresh")])
    code, out, _ = run(path, "--keep-last", "1", "--grace", "0")
    assert code == 0 and "kept:" not in out
