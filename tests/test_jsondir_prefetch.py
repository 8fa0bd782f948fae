"""Imports prepared by worker processes give exactly what a one-process import gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsondir_fixtures import make_bulk_dir

from cas_store import jsondir as J
from cas_store import open_store


def _import(directory: Path, db: Path) -> tuple[J.ImportReport, dict[str, object]]:
    store = open_store(db)
    report = J.import_json_dir(store, directory)
    sessions = {s.session_id: store.load(s.session_id).to_json()
                for s in store.list_sessions(limit=1000).sessions}
    for s in sessions.values():
        assert isinstance(s, dict)
        for volatile in ("created_at", "updated_at", "seq", "manifest"):
            s.pop(volatile, None)
    store.close()
    return report, sessions


def test_worker_prepared_import_equals_a_single_process_import(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    n = J.PREFETCH_MIN_SESSIONS + 10
    make_bulk_dir(src, n, 7)
    (src / "broken.json").write_text("{not json")
    (src / "bad-message.json").write_text(json.dumps({"title": "x", "messages": [1, 2]}))
    (src / "with-list.json").write_text(json.dumps(
        {"title": "l", "messages": [{"role": "user", "content": "hi"}],
         "context_messages": [{"role": "system", "content": "c" * 100}] * 60}))
    with_workers, sessions_a = _import(src, tmp_path / "a.db")
    monkeypatch.setattr(J.importer, "PREFETCH_MIN_SESSIONS", 10**9)
    alone, sessions_b = _import(src, tmp_path / "b.db")
    assert sessions_a == sessions_b
    assert len(sessions_a) == n + 1
    assert sorted((s.path, s.reason) for s in with_workers.skipped) == sorted(
        (s.path, s.reason) for s in alone.skipped)
    assert {Path(s.path).name for s in with_workers.skipped} == {"broken.json",
                                                                 "bad-message.json"}
    assert with_workers.versions == alone.versions
