"""The import, export and export-dir commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsondir_fixtures import ChatDir, make_chat_dir
from typer.testing import CliRunner

from cas_store import open_store
from cas_store.cli import app

runner = CliRunner()


def run(store: Path, *args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["--store", str(store), *args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture
def chat(tmp_path: Path) -> ChatDir:
    return make_chat_dir(tmp_path / "sessions", sessions=5, long_messages=200)


def test_import_summary_and_skip_lines(store_path: Path, chat: ChatDir) -> None:
    code, out, err = run(store_path, "import", str(chat.path))
    assert code == 0, err
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(chat.broken)
    assert any("truncated.json: not valid JSON" in line for line in skipped)
    assert "imported 10 sessions (9 new, 0 updated, 1 deleted), 0 unchanged" in out
    assert "dedup ratio" in out and "skipped 10 files" in out
    assert "to bring their messages back: cas-store recover\n" in out
    code, out, _ = run(store_path, "import", str(chat.path))
    assert code == 0 and "imported 0 sessions" in out and "10 unchanged: 0 versions" in out


def test_import_json_and_dry_run(store_path: Path, chat: ChatDir) -> None:
    code, out, _ = run(store_path, "import", str(chat.path), "--dry-run", "--json")
    assert code == 0
    dry = json.loads(out)
    assert dry["dry_run"] and not store_path.exists()  # nothing created, not even the store
    code, out, _ = run(store_path, "import", str(chat.path), "--json")
    real = json.loads(out)
    assert code == 0 and real["versions"] == dry["versions"] > 0
    assert len(real["skipped"]) == len(chat.broken)
    assert set(real["suspect"]) == set(chat.wiped)


def test_import_of_a_missing_directory_is_one_line(store_path: Path, tmp_path: Path) -> None:
    code, _, err = run(store_path, "import", str(tmp_path / "nope"))
    assert code == 2 and "is not a directory" in err and "Traceback" not in err


def test_export_to_stdout_and_file(store_path: Path, chat: ChatDir, tmp_path: Path) -> None:
    run(store_path, "import", str(chat.path))
    code, out, _ = run(store_path, "export", "sess-001")
    assert code == 0 and json.loads(out) == chat.live["sess-001"]
    code, out, _ = run(store_path, "export", "wiped-chat", "--seq", "1")
    assert json.loads(out) == chat.bak["wiped-chat"]
    target = tmp_path / "one.json"
    code, out, _ = run(store_path, "export", "sess-002", "-o", str(target))
    assert code == 0 and out == ""
    assert json.loads(target.read_text(encoding="utf-8")) == chat.live["sess-002"]
    code, _, err = run(store_path, "export", "nope")
    assert code == 3 and "no session 'nope'" in err


def test_export_dir(store_path: Path, chat: ChatDir, tmp_path: Path) -> None:
    run(store_path, "import", str(chat.path))
    out_dir = tmp_path / "out"
    code, out, _ = run(store_path, "export-dir", str(out_dir))
    assert code == 0 and "wrote 9 sessions (0 deleted)" in out
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{s}.json" for s in chat.live)
    code, out, _ = run(store_path, "export-dir", str(out_dir), "--include-deleted", "--json")
    assert json.loads(out)["deleted"] == 1
    assert (out_dir / "orphan-chat.json.bak").exists()
    # The exported directory imports into an equal store.
    other = tmp_path / "other.db"
    assert run(other, "import", str(out_dir))[0] == 0
    a, b = open_store(store_path), open_store(other)
    for sid in chat.live:
        assert a.version_state_id(sid) == b.version_state_id(sid)
    a.close()
    b.close()


def test_help_has_examples() -> None:
    for name in ("import", "export", "export-dir"):
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0 and "Example: cas-store " + name in r.stdout
