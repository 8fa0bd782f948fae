from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import msgs
from typer.testing import CliRunner

from cas_store import open_store
from cas_store.cli import app

runner = CliRunner()


@pytest.fixture
def prepared(store_path: Path) -> Path:
    s = open_store(store_path)
    s.create("chat-1", {"title": "Trip"}, msgs(0, 5))
    s.append("chat-1", msgs(5, 6))
    s.save("chat-1", [])
    s.create("chat-2", {"title": "Work"}, msgs(0, 2))
    s.close()
    return store_path


def run(store: Path, *args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["--store", str(store), *args])
    return r.exit_code, r.stdout, r.stderr


def test_every_command_has_help() -> None:
    import typer.main

    group = typer.main.get_command(app)
    assert group.commands  # type: ignore[attr-defined]
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        assert cmd.help and "Example" in cmd.help, f"{name} lacks help with an example"
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0 and "Usage" in r.stdout


def test_ls_log_show_diff(prepared: Path) -> None:
    code, out, _ = run(prepared, "ls")
    assert code == 0 and "chat-1\tTrip\t0\t3" in out and "SUSPECT" in out
    code, out, _ = run(prepared, "ls", "--json")
    assert [s["session_id"] for s in json.loads(out)] == ["chat-2", "chat-1"]
    code, out, _ = run(prepared, "log", "chat-1", "--json")
    assert [(v["seq"], v["op"], v["suspect_shrink"]) for v in json.loads(out)] == [
        (3, "save", True), (2, "append", False), (1, "create", False)]
    code, out, _ = run(prepared, "show", "chat-1@2", "--json")
    assert json.loads(out)["messages"] == msgs(0, 6)
    code, out, _ = run(prepared, "show", "chat-1@2")
    assert code == 0 and "message 5" in out
    code, out, _ = run(prepared, "show", "chat-1", "--meta", "--json")
    assert json.loads(out)["message_count"] == 0
    code, out, _ = run(prepared, "diff", "chat-1", "2", "3", "--json")
    assert len(json.loads(out)["removed"]) == 6


def test_recover_restore_fsck_stats(prepared: Path) -> None:
    code, out, _ = run(prepared, "recover", "--dry-run")
    assert code == 0 and "would recover 0 → 6" in out
    code, out, _ = run(prepared, "recover", "--json")
    assert json.loads(out)["actions"][0]["to_count"] == 6
    code, out, _ = run(prepared, "restore", "chat-1", "1")
    assert code == 0 and "restored as version 5" in out
    code, out, _ = run(prepared, "fsck")
    assert code == 0 and out.strip().endswith("ok")
    code, out, _ = run(prepared, "stats", "--json")
    assert json.loads(out)["sessions"] == 2


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["show", "nope"], 3, "no session 'nope'"),
        (["show", "bad id"], 5, "invalid session id"),
        (["show", "chat-1@x"], 2, "bad version"),
        (["show", "chat-1@99"], 3, "no version 99"),
        (["restore", "chat-1", "99"], 3, "no version 99"),
        (["restore", "chat-1", "1", "--expected", "1"], 4, "is at version 3"),
    ],
)
def test_user_mistakes_are_one_line(prepared: Path, args: list[str], code: int,
                                    text: str) -> None:
    got, out, err = run(prepared, *args)
    assert got == code
    assert text in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = run(tmp_path / "nothing.db", "ls")
    assert code == 3 and "no store at" in err


def test_fsck_exit_status_on_corruption(prepared: Path) -> None:
    import sqlite3

    with sqlite3.connect(prepared) as con:
        con.execute("UPDATE objects SET data = X'00' WHERE rowid = 1")
    code, out, _ = run(prepared, "fsck")
    assert code == 6 and "corrupt" in out


def test_real_process_prints_no_traceback(prepared: Path) -> None:
    env = {**os.environ, "CAS_STORE": str(prepared)}
    r = subprocess.run([sys.executable, "-m", "cas_store.cli", "show", "nope"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 3
    assert r.stderr.strip() == "error: no session 'nope'"


HUGE = "99999999999999999999"


@pytest.mark.parametrize("args", [
    ["show", f"chat-1@{HUGE}"],
    ["show", "chat-1@0"],
    ["show", f"chat-1@{HUGE}", "--meta"],
    ["diff", "chat-1", "1", HUGE],
    ["diff", "chat-1", HUGE, "1"],
    ["restore", "chat-1", HUGE],
    ["restore", "chat-1", "1", "--expected", HUGE],
    ["export", "chat-1", "--seq", HUGE],
    ["log", "chat-1", "-n", HUGE],
    ["log", "chat-1", "-n", "0"],
    ["ls", "-n", HUGE],
])
def test_huge_numbers_are_one_line_and_exit_5(prepared: Path, args: list[str]) -> None:
    code, out, err = run(prepared, *args)
    assert code == 5, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out
    s = open_store(prepared)
    assert len(s.versions("chat-1")) == 3  # nothing was written
    s.close()


def test_a_missing_object_exits_6_naming_object_and_session(prepared: Path) -> None:
    import sqlite3

    s = open_store(prepared)
    head = s.load_meta("chat-2")
    s.close()
    with sqlite3.connect(prepared) as con:
        con.execute("DELETE FROM objects WHERE kind = 1")  # every chunk
    code, out, err = run(prepared, "show", "chat-2")
    assert code == 6, (out, err)
    assert "missing" in err and "'chat-2'" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run(prepared, "show", "chat-2", "--meta")
    assert code == 0 and f"@ {head.seq}" in out


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          *argv: str) -> tuple[int, str]:
    from cas_store import cli

    monkeypatch.setattr(sys, "argv", ["cas-store", *argv])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
        prepared: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from cas_store import Store

    def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something broke")

    monkeypatch.setattr(Store, "stats", bug)
    code, err = _main(monkeypatch, capsys, "--store", str(prepared), "stats")
    assert code == 1
    assert err.strip().splitlines() == [
        "error: unexpected RuntimeError: something broke (run with --debug to see the"
        " traceback)"]
    code, err = _main(monkeypatch, capsys, "--store", str(prepared), "--debug", "stats")
    assert code == 1
    assert "Traceback" in err and "RuntimeError: something broke" in err
