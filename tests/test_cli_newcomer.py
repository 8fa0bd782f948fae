"""The command line as a newcomer meets it: options where people type them, headers,
plain help, readable figures and hints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from support import msgs
from typer.testing import CliRunner

from cas_store import open_store
from cas_store.backends.sqlite import SYNCHRONOUS_MODES
from cas_store.cli import Durability, app, hoist_global_options

runner = CliRunner()


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real entry point (main(), as the installed script does)."""
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("CAS_STORE", None)
    return subprocess.run([sys.executable, "-c", "from cas_store.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


@pytest.fixture
def wiped(store_path: Path) -> Path:
    with open_store(store_path) as s:
        s.create("chat-1", {"title": "Trip"}, msgs(0, 4))
        s.save("chat-1", [])
        s.append("chat-1", [{"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    return store_path


def test_store_and_synchronous_are_accepted_after_the_command(wiped: Path) -> None:
    r = cli("ls", "--store", str(wiped), "--synchronous", "normal")
    assert r.returncode == 0, r.stderr
    assert "chat-1" in r.stdout
    r = cli("log", f"--store={wiped}", "chat-1")
    assert r.returncode == 0 and "append" in r.stdout


def test_hoisting_stops_at_double_dash_and_keeps_values() -> None:
    assert hoist_global_options(["show", "-s", "x.db", "--", "-s"]) == [
        "-s", "x.db", "show", "--", "-s"]
    assert hoist_global_options(["--store", "a.db", "ls", "-n", "3"]) == [
        "--store", "a.db", "ls", "-n", "3"]
    assert hoist_global_options(["serve", "--port", "1", "--synchronous=EXTRA"]) == [
        "--synchronous=EXTRA", "serve", "--port", "1"]


def test_ls_and_log_print_a_header_row_in_a_pipe(wiped: Path) -> None:
    r = cli("--store", str(wiped), "ls")
    assert r.stdout.splitlines()[0].split("\t") == [
        "session", "title", "messages", "seq", "updated", "flags"]
    r = cli("--store", str(wiped), "log", "chat-1")
    assert r.stdout.splitlines()[0].split("\t")[:4] == ["seq", "when", "op", "messages"]
    assert len(r.stdout.splitlines()) == 1 + 3


def test_show_names_an_unresolved_suspect_shrink_and_the_tool_calls(wiped: Path) -> None:
    r = cli("--store", str(wiped), "show", "chat-1")
    assert r.returncode == 0, r.stderr
    assert "tool call weather(" in r.stdout and '"city": "Rome"' in r.stdout
    assert "(answers call_1)" in r.stdout
    assert "version 2 dropped messages (4 → 0)" in r.stderr
    assert "cas-store recover -- chat-1" in r.stderr
    assert cli("--store", str(wiped), "recover").returncode == 0
    r = cli("--store", str(wiped), "show", "chat-1")
    assert "dropped" not in r.stderr  # resolved by the recovery


def test_help_has_examples_no_bool_metavars_and_whole_sentences() -> None:
    group = typer.main.get_command(app)
    names = [None, *group.commands]  # type: ignore[attr-defined]
    for name in names:
        r = runner.invoke(app, [*([name] if name else []), "--help"])
        assert r.exit_code == 0, r.stderr
        assert "<bool>" not in r.stdout, name
        if name:
            assert "Example" in r.stdout, name
    r = cli("import", "--help")
    # The docstring's hard wraps are joined: the phrase stays on one line at 100 columns.
    assert "so a wiped file can be recovered" in r.stdout


def test_synchronous_lists_every_value_and_a_bad_one_is_a_usage_error(wiped: Path) -> None:
    assert {d.value for d in Durability} == set(SYNCHRONOUS_MODES)
    r = cli("--help")
    for mode in SYNCHRONOUS_MODES:
        assert mode in r.stdout
    r = cli("--store", str(wiped), "--synchronous", "sometimes", "ls")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_stats_is_a_table(wiped: Path) -> None:
    r = cli("--store", str(wiped), "stats")
    lines = r.stdout.splitlines()
    assert lines[0] == "figure\tvalue"
    assert "{" not in r.stdout
    assert any(line.startswith("sessions\t1") for line in lines)


def test_plurals(store_path: Path) -> None:
    with open_store(store_path) as s:
        s.create("one", {}, msgs(0, 1))
        s.append("one", msgs(1, 2))
    r = runner.invoke(app, ["--store", str(store_path), "diff", "one", "1", "2"])
    assert "1 message in common" in r.stdout, r.stdout
    r = runner.invoke(app, ["--store", str(store_path), "restore", "one", "1"])
    assert "(1 message)" in r.stdout


def test_a_missing_store_says_how_one_is_created(tmp_path: Path) -> None:
    r = cli("--store", str(tmp_path / "none.db"), "ls")
    assert r.returncode == 3
    assert "cas-store import" in r.stderr and "cas-store serve" in r.stderr
    assert not (tmp_path / "none.db").exists()
