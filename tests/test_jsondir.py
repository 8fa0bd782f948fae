"""Import and export of JSON session directories (cas_store.jsondir)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from jsondir_fixtures import ChatDir, make_chat_dir, write_json

from cas_store import Store, errors, open_store
from cas_store import jsondir as J
from cas_store.jsondir import (
    LIST_FIELD_MIN_BYTES,
    epoch_seconds,
    export_dir,
    export_session,
    import_json_dir,
    marks_intentional_shrink,
    read_document,
    split_document,
)

NOW = time.time()


@pytest.fixture
def chat(tmp_path: Path) -> ChatDir:
    return make_chat_dir(tmp_path / "sessions", long_messages=1200)


def versions(store: Store, sid: str) -> list[tuple[str, int, bool, bool]]:
    return [(v.op, v.message_count, v.suspect_shrink, v.intentional_shrink)
            for v in reversed(store.versions(sid))]


def test_round_trip_value_by_value(store: Store, chat: ChatDir, tmp_path: Path) -> None:
    report = import_json_dir(store, chat.path)
    assert report.sessions_created == len(chat.live)
    assert report.sessions_deleted == len(chat.orphans)
    for sid, doc in chat.live.items():
        got = export_session(store, sid)
        assert got.keys() == doc.keys(), sid
        for key, value in doc.items():
            assert got[key] == value, f"{sid}.{key}"
        # The streamed writer gives the same value as the in-memory export.
        assert json.loads(_write(store, sid)) == doc
    out = tmp_path / "out"
    rep = export_dir(store, out, include_deleted=True)
    assert rep.sessions == len(chat.live) + len(chat.orphans) and rep.deleted == 1
    for sid, doc in chat.live.items():
        assert json.loads((out / f"{sid}.json").read_text(encoding="utf-8")) == doc
    for sid in chat.orphans:
        assert not (out / f"{sid}.json").exists()
        assert json.loads((out / f"{sid}.json.bak").read_text()) == chat.bak[sid]
    assert not list(out.glob(".*tmp"))  # no temporary files left behind


def _write(store: Store, sid: str, seq: int | None = None) -> str:
    import io

    buf = io.StringIO()
    J.write_session(store, sid, buf, seq=seq)
    return buf.getvalue()


def test_export_dir_reimports_to_the_same_states(store: Store, chat: ChatDir,
                                                 tmp_path: Path) -> None:
    import_json_dir(store, chat.path)
    export_dir(store, tmp_path / "out", include_deleted=True)
    other = open_store(tmp_path / "other.db")
    import_json_dir(other, tmp_path / "out")
    for sid in [*chat.live, *chat.orphans]:
        assert other.versions(sid)[0].manifest == store.versions(sid)[0].manifest, sid
    assert [s.session_id for s in other.list_sessions(limit=100).sessions] == \
        [s.session_id for s in store.list_sessions(limit=100).sessions]
    other.close()


def test_broken_files_are_skipped_one_line_each(store: Store, chat: ChatDir) -> None:
    lines: list[J.SkippedFile] = []
    report = import_json_dir(store, chat.path, on_skip=lines.append)
    assert lines == report.skipped
    by_name = {Path(s.path).name: s.reason for s in report.skipped}
    assert by_name.keys() == chat.broken.keys()
    for name, expected in chat.broken.items():
        assert expected in by_name[name], (name, by_name[name])
        assert "\n" not in by_name[name]
    listed = {s.session_id for s in store.list_sessions(limit=1000,
                                                         include_deleted=True).sessions}
    assert listed == set(chat.live) | set(chat.orphans)
    assert sorted(report.ignored) == ["_index.json", "notes.txt", "sess-000.json.tmp"]


def test_rerun_is_idempotent(store: Store, chat: ChatDir) -> None:
    first = import_json_dir(store, chat.path)
    stats = store.stats()
    heads = {sid: store.versions(sid)[0].seq for sid in [*chat.live, *chat.orphans]}
    again = import_json_dir(store, chat.path)
    assert again.versions == 0 and again.sessions == 0
    assert again.sessions_unchanged == first.sessions
    assert store.stats().versions == stats.versions
    assert store.stats().objects == stats.objects
    assert {sid: store.versions(sid)[0].seq for sid in heads} == heads


def test_dry_run_writes_nothing_and_predicts_the_run(store: Store, chat: ChatDir) -> None:
    dry = import_json_dir(store, chat.path, dry_run=True)
    assert store.stats().versions == 0 and store.stats().objects["chunk"] == 0
    real = import_json_dir(store, chat.path)
    for key in ("sessions_created", "sessions_deleted", "versions", "messages", "files"):
        assert getattr(dry, key) == getattr(real, key), key
    assert len(dry.skipped) == len(real.skipped)
    assert sorted(dry.suspect) == sorted(real.suspect)
    assert dry.dedup_ratio is None and dry.bytes_stored == 0


def test_summary_figures(store: Store, chat: ChatDir) -> None:
    report = import_json_dir(store, chat.path)
    files = [p for p in chat.path.iterdir() if p.name.endswith((".json", ".json.bak"))
             and p.name not in chat.broken and p.name != "_index.json"]
    assert report.files == len(files)
    assert report.bytes_in == sum(p.stat().st_size for p in files)
    assert report.messages == sum(v.message_count for sid in [*chat.live, *chat.orphans]
                                  for v in store.versions(sid) if v.op == "import")
    assert 0 < report.bytes_stored < report.bytes_in
    # bak-same and the wiped files share chunks with their backups: some dedup.
    assert report.dedup_ratio is not None and report.dedup_ratio >= 1.0
    assert json.loads(json.dumps(report.to_json()))["versions"] == report.versions


def test_wiped_file_arrives_with_history_and_recovers(store: Store, chat: ChatDir) -> None:
    report = import_json_dir(store, chat.path)
    sid = "wiped-chat"
    assert versions(store, sid) == [("import", 300, False, False), ("import", 0, True, False)]
    assert set(report.suspect) == set(chat.wiped)
    # A plain recover: the shrink keeps the file's old time, but nobody reviewed it.
    action = store.recover().actions[0]
    assert action.session_id == sid and action.action == "recovered" and action.to_count == 300
    recovered = export_session(store, sid)
    assert recovered["messages"] == chat.bak[sid]["messages"]
    # The newest metadata is kept: the two cleared fields stay cleared.
    assert "stream_state" not in recovered and "pending_tool_call" not in recovered


def test_stale_marker_does_not_make_a_wipe_intentional(store: Store, chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    sid = chat.stale_marker[0]
    assert versions(store, sid)[-1] == ("import", 0, True, False)


def test_marked_shrink_is_intentional_and_kept(store: Store, chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    sid = chat.intentional[0]
    assert versions(store, sid) == [("import", 60, False, False), ("import", 20, False, True)]
    assert store.recover(sid, window=1e10).actions == []
    assert len(store.load(sid).messages) == 20


def test_backup_equal_to_live_file_is_one_version(store: Store, chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    assert versions(store, "bak-same") == [("import", 15, False, False)]


def test_orphaned_backup_is_a_deleted_session(store: Store, chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    sid = chat.orphans[0]
    with pytest.raises(errors.SessionNotFound):
        store.load(sid)
    assert [v.op for v in reversed(store.versions(sid))] == ["import", "delete"]
    assert export_session(store, sid, seq=1) == chat.bak[sid]
    store.restore(sid, 1)
    assert export_session(store, sid) == chat.bak[sid]


def test_times_come_from_the_files(store: Store, chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    doc = chat.live["sess-001"]
    meta = store.load_meta("sess-001")
    assert meta.created_at == doc["created_at"] and meta.updated_at == doc["updated_at"]
    assert store.versions("sess-001")[0].created_at == doc["updated_at"]
    old, new = reversed(store.versions("wiped-chat"))
    assert old.created_at == chat.bak["wiped-chat"]["updated_at"]
    assert new.created_at == chat.live["wiped-chat"]["updated_at"]
    assert store.load_meta("wiped-chat").created_at == chat.live["wiped-chat"]["created_at"]


def test_big_list_fields_are_named_lists_small_ones_metadata(store: Store,
                                                             chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    meta = store.load_meta("sess-001")
    doc = chat.live["sess-001"]
    expected = {k for k, v in doc.items() if k != "messages" and isinstance(v, list)
                and len(json.dumps(v, separators=(",", ":"), ensure_ascii=False,
                                   sort_keys=True).encode()) >= LIST_FIELD_MIN_BYTES}
    assert {"context_messages", "anchor_activity_scenes"} <= expected
    assert set(meta.list_counts) == expected
    assert meta.list_counts["anchor_activity_scenes"] == 40
    for key in ("tags", "empty_list_field", "settings", "title"):
        assert key in meta.metadata
    for key in meta.list_counts:
        assert key not in meta.metadata
    # A metadata update rewrites neither the lists nor the messages.
    before = store.stats()
    store.update_metadata("sess-001", {"title": "renamed", "stream_state": None})
    after = store.stats()
    assert after.objects["chunk"] == before.objects["chunk"]
    assert after.objects["page"] == before.objects["page"]
    assert after.payload_bytes - before.payload_bytes < 8192
    assert export_session(store, "sess-001")["anchor_activity_scenes"] == \
        chat.live["sess-001"]["anchor_activity_scenes"]


def test_list_rule_threshold_and_names() -> None:
    small = ["x" * 10] * 3
    big = ["y" * 100] * 60
    doc = {"messages": [], "small": small, "big": big, "bad name": big, "empty": []}
    meta, messages, lists = split_document(doc)
    assert messages == [] and lists == {"big": big}
    assert meta == {"small": small, "bad name": big, "empty": []}
    exact = ["z" * (LIST_FIELD_MIN_BYTES - 4)]  # '["' + ... + '"]' is exactly the threshold
    assert split_document({"messages": [], "f": exact})[2] == {"f": exact}
    below = ["z" * (LIST_FIELD_MIN_BYTES - 5)]
    assert split_document({"messages": [], "f": below})[2] == {}


def test_changed_file_adds_one_version_and_drops_vanished_lists(store: Store,
                                                                chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    sid = "sess-001"
    doc = json.loads((chat.path / f"{sid}.json").read_text())
    doc["messages"].append({"role": "user", "content": "one more ✓"})
    doc["title"] = "Changed"
    del doc["context_messages"]
    doc["tool_calls"] = []
    write_json(chat.path / f"{sid}.json", doc)
    report = import_json_dir(store, chat.path)
    assert report.versions == 1 and report.sessions_updated == 1
    # Items of the two lists are gone: suspect, like any save that loses content.
    assert versions(store, sid)[-1][:3] == ("import", len(doc["messages"]), True)
    assert export_session(store, sid) == doc
    assert list(export_session(store, sid)) == list(doc)
    assert set(store.load_meta(sid).list_counts) == {"anchor_activity_scenes"}
    assert store.list_sessions(query="Changed").sessions[0].session_id == sid


def test_wipe_between_imports_is_suspect_and_recoverable(store: Store, chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    sid = "sess-002"
    full = chat.live[sid]
    longer = dict(full, messages=[*full["messages"], {"role": "user", "content": "new"}],
                  updated_at=full["updated_at"] + 10)
    write_json(chat.path / f"{sid}.json.bak", longer)
    write_json(chat.path / f"{sid}.json", dict(longer, messages=[],
                                                updated_at=full["updated_at"] + 20))
    report = import_json_dir(store, chat.path)
    # The backup (newer than the store's head) arrives first, then the wipe.
    assert [v[:3] for v in versions(store, sid)] == [
        ("import", len(full["messages"]), False),
        ("import", len(full["messages"]) + 1, False),
        ("import", 0, True)]
    assert set(report.suspect) == {sid}
    store.recover(sid)
    assert store.load(sid).messages == longer["messages"]


def test_live_file_appearing_for_a_deleted_session_revives_it(store: Store, chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    sid = chat.orphans[0]
    doc = dict(chat.bak[sid], title="back again")
    write_json(chat.path / f"{sid}.json", doc)
    import_json_dir(store, chat.path)
    assert export_session(store, sid) == doc
    assert import_json_dir(store, chat.path).versions == 0


def test_broken_live_file_skips_its_backup_too(store: Store, tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.json").write_text("{nope")
    write_json(d / "a.json.bak", {"messages": [{"role": "user", "content": "hi"}]})
    report = import_json_dir(store, d)
    assert [Path(s.path).name for s in report.skipped] == ["a.json", "a.json.bak"]
    assert "live file a.json was skipped" in report.skipped[1].reason
    with pytest.raises(errors.SessionNotFound):
        store.versions("a")


def test_broken_backup_alone_is_skipped(store: Store, tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    write_json(d / "a.json", {"messages": [{"role": "user", "content": "hi"}]})
    (d / "a.json.bak").write_text("[")
    report = import_json_dir(store, d)
    assert [Path(s.path).name for s in report.skipped] == ["a.json.bak"]
    assert versions(store, "a") == [("import", 1, False, False)]


def test_invalid_live_file_leaves_nothing_of_its_backup(store: Store, tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    write_json(d / "a.json.bak", {"messages": [{"role": "user"}]})
    write_json(d / "a.json", {"messages": [{"role": "user"}, 42]})
    report = import_json_dir(store, d)
    assert [Path(s.path).name for s in report.skipped] == ["a.json", "a.json.bak"]
    assert "messages[1]" in report.skipped[0].reason
    with pytest.raises(errors.SessionNotFound):
        store.versions("a")


def test_failure_inside_a_session_rolls_back_the_batch(store: Store, chat: ChatDir,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = Store.save

    def failing_save(self: Store, sid: str, *a: Any, **k: Any) -> Any:
        if sid == "wiped-chat":
            raise errors.StorageError("disk full")
        return real_save(self, sid, *a, **k)

    monkeypatch.setattr(Store, "save", failing_save)
    with pytest.raises(errors.StorageError):
        import_json_dir(store, chat.path)
    # The backup version of wiped-chat was committed inside the batch: rolled back too.
    with pytest.raises(errors.SessionNotFound):
        store.versions("wiped-chat")
    monkeypatch.undo()
    report = import_json_dir(store, chat.path)
    assert versions(store, "wiped-chat") == [("import", 300, False, False),
                                             ("import", 0, True, False)]
    assert report.sessions_created + report.sessions_unchanged == len(chat.live)


def test_missing_directory_is_not_found(store: Store, tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound):
        import_json_dir(store, tmp_path / "nope")


# --- pieces ---------------------------------------------------------------------------------


def test_epoch_seconds() -> None:
    assert epoch_seconds(1_700_000_000) == 1_700_000_000.0
    assert epoch_seconds(1_700_000_000_500) == 1_700_000_000.5
    assert epoch_seconds("2024-01-02T03:04:05Z") == 1704164645.0
    assert epoch_seconds("2024-01-02T03:04:05") == 1704164645.0
    for bad in (None, True, -1, 0, float("nan"), "yesterday", [1], {}):
        assert epoch_seconds(bad) is None


def test_marker_rule() -> None:
    assert marks_intentional_shrink({"truncation_watermark": 20}, None)
    assert marks_intentional_shrink({"clear_generation": 3}, {"clear_generation": 2})
    assert not marks_intentional_shrink({"clear_generation": 2}, {"clear_generation": 2})
    assert marks_intentional_shrink({"intentional_shrink_generation": "g7"}, {})
    for empty in (None, "", [], {}, False):
        assert not marks_intentional_shrink({"truncation_watermark": empty}, None)
    assert not marks_intentional_shrink({"other": 1}, None)


def test_session_file_names() -> None:
    assert J.session_id_of("a.json") == ("a", False)
    assert J.session_id_of("a.json.bak") == ("a", True)
    assert J.session_id_of("_index.json") is None
    assert J.session_id_of("a.json.tmp") is None
    assert J.session_id_of("a.txt") is None


def _same_doc(a: J._Doc, b: J._Doc) -> None:
    assert a.metadata == b.metadata
    assert list(a.messages) == list(b.messages)
    assert {k: list(v) for k, v in a.lists.items()} == {k: list(v) for k, v in b.lists.items()}
    assert a.message_count == b.message_count and a.list_bytes == b.list_bytes


@pytest.mark.parametrize("chunk", [3, 64, 1 << 20])
def test_streaming_parser_agrees_with_json_loads(chat: ChatDir, chunk: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J._Reader, "CHUNK", chunk)
    for path in sorted(chat.path.iterdir()):
        if J.session_id_of(path.name) is None:
            continue
        try:
            whole = read_document(path, stream=False)
        except J.DocumentError:
            with pytest.raises(J.DocumentError):
                read_document(path, stream=True)
            continue
        _same_doc(read_document(path, stream=True), whole)


@pytest.mark.parametrize("text", [
    '{"messages": [1, 23, 456, 7.5e3, -0.25, true, null]}',
    '{"a": 12345, "messages": [], "b": [1, 2], "c": {"d": [3]}}',
    '  {  "messages" : [ {"x": "é ✓ \\u00e9 \\"q\\" ,]}"} ] }  \n',
    '{"messages": [{"k": 1}], "messages": [{"k": 2}]}',
])
def test_streaming_parser_edge_cases(tmp_path: Path, text: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J._Reader, "CHUNK", 2)
    p = tmp_path / "s.json"
    p.write_text(text, encoding="utf-8")
    doc = json.loads(text)
    streamed = read_document(p, stream=True)
    assert streamed.metadata == {k: v for k, v in doc.items() if k != "messages"}
    # Duplicate keys: the last wins in both parsers.
    assert list(streamed.messages) == doc["messages"]


@pytest.mark.parametrize("text,reason", [
    ('{"messages": [1, 2', "not valid JSON"),
    ('{"messages": [1, 2]} x', "extra data"),
    ('{"messages": [1 2]}', "not valid JSON"),
    ('{"messages": []', "not valid JSON"),
    ('"just a string"', "not a JSON object"),
    ("", "not valid JSON"),
    ('{"a": 1}', "no 'messages' field"),
    ('{"messages": "no"}', "'messages' is a str"),
    ('{messages: []}', "not valid JSON"),
])
def test_streaming_parser_rejects(tmp_path: Path, text: str, reason: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J._Reader, "CHUNK", 4)
    p = tmp_path / "s.json"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(J.DocumentError, match=reason):
        read_document(p, stream=True)


def test_streamed_import_equals_whole_import(tmp_path: Path, chat: ChatDir,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    whole = open_store(tmp_path / "whole.db")
    import_json_dir(whole, chat.path)
    monkeypatch.setattr(J.reader, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(J._Reader, "CHUNK", 4096)
    streamed = open_store(tmp_path / "streamed.db")
    report = import_json_dir(streamed, chat.path)
    assert {Path(s.path).name for s in report.skipped} == set(chat.broken)
    for sid in [*chat.live, *chat.orphans]:
        assert streamed.versions(sid)[0].manifest == whole.versions(sid)[0].manifest, sid
        assert [v.manifest for v in streamed.versions(sid)] == \
            [v.manifest for v in whole.versions(sid)]
    whole.close()
    streamed.close()


def test_streamed_file_invalid_late_is_skipped_whole(store: Store, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(J.reader, "STREAM_MIN_BYTES", 0)
    d = tmp_path / "d"
    d.mkdir()
    msgs: list[Any] = [{"role": "user", "content": f"m{i}"} for i in range(3000)]
    msgs.append("not an object")
    write_json(d / "big.json", {"title": "t", "messages": msgs})
    report = import_json_dir(store, d)
    assert "messages[3000]" in report.skipped[0].reason
    with pytest.raises(errors.SessionNotFound):
        store.versions("big")


def test_rerun_keeps_changes_made_in_the_store_since(store: Store, chat: ChatDir) -> None:
    import_json_dir(store, chat.path)
    sid = "sess-003"
    store.append(sid, [{"role": "user", "content": "written through the store"}])
    store.update_metadata(sid, {"title": "renamed in the store"})
    head = store.versions(sid)[0].seq
    report = import_json_dir(store, chat.path)
    assert report.versions == 0 and store.versions(sid)[0].seq == head
    assert store.load(sid).messages[-1]["content"] == "written through the store"


def test_streamed_import_holds_a_few_times_the_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    from jsondir_fixtures import write_big_session

    d = tmp_path / "in"
    d.mkdir()
    size = write_big_session(d / "big.json", 6 * 1024 * 1024)
    peaks = {}
    for streamed in (False, True):
        monkeypatch.setattr(J.reader, "STREAM_MIN_BYTES", 0 if streamed else 1 << 40)
        s = open_store(tmp_path / f"{streamed}.db")
        tracemalloc.start()
        try:
            report = import_json_dir(s, d)
            peaks[streamed] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert report.versions == 1 and not report.skipped
        s.close()
    # Python allocations: the whole parse holds ~7x the file, the streamed one ~3x.
    assert peaks[True] < 4 * size < peaks[False]
