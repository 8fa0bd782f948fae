"""A hermes-webui session directory: exact round trips, wipes recovered whole, its own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsondir_fixtures import HERMES_FIELDS, HermesDir, make_hermes_dir, write_json
from starlette.testclient import TestClient
from typer.testing import CliRunner

from cas_store import Store, open_store
from cas_store.api import Settings, create_app
from cas_store.cli import app
from cas_store.jsondir import export_dir, export_session, import_json_dir

runner = CliRunner()


@pytest.fixture
def hermes(tmp_path: Path) -> HermesDir:
    return make_hermes_dir(tmp_path / "sessions")


def _keys_before_messages(text: str) -> list[str]:
    """Return the top-level keys a prefix reader sees before the first "messages" key."""
    doc = json.loads(text)
    keys = list(doc)
    return keys[: keys.index("messages")]


def test_fixture_has_hermes_shape(hermes: HermesDir) -> None:
    doc = hermes.live["hermes-plain"]
    keys = list(doc)
    assert len(HERMES_FIELDS) >= 60 and keys[: len(HERMES_FIELDS)] == list(HERMES_FIELDS)
    assert keys[len(HERMES_FIELDS):] == ["message_count", "messages", "context_messages",
                                          "tool_calls", "anchor_activity_scenes"]


def test_round_trip_keeps_values_and_key_order(store: Store, hermes: HermesDir,
                                               tmp_path: Path) -> None:
    report = import_json_dir(store, hermes.path)
    assert report.skipped == []
    out = tmp_path / "out"
    export_dir(store, out)
    for sid, doc in hermes.live.items():
        if sid in hermes.tombstoned:
            continue
        text = (out / f"{sid}.json").read_text(encoding="utf-8")
        back = json.loads(text)
        assert back == doc
        assert list(back) == list(doc), sid  # the order, not only the values
        assert _keys_before_messages(text) == [*HERMES_FIELDS, "message_count"]
        assert list(export_session(store, sid)) == list(doc)
    # The exported directory imports back onto the same states: nothing new.
    again = import_json_dir(store, out)
    assert again.versions == 0


def test_key_order_survives_a_metadata_patch(store: Store, hermes: HermesDir) -> None:
    import_json_dir(store, hermes.path)
    sid = "hermes-plain"
    store.update_metadata(sid, {"pinned": True, "title": "Renamed", "new_field": 1,
                                "draft": None})
    doc = export_session(store, sid)
    want = [k for k in hermes.live[sid] if k != "draft"]
    first_list = want.index("message_count") + 1
    # The new key goes before the lists, so a prefix reader still finds it.
    want.insert(first_list, "new_field")
    assert list(doc) == want
    assert doc["title"] == "Renamed" and doc["pinned"] is True


def test_re_import_is_idempotent(store: Store, hermes: HermesDir) -> None:
    import_json_dir(store, hermes.path)
    again = import_json_dir(store, hermes.path)
    assert again.versions == 0 and again.sessions == 0


def test_wipe_of_three_lists_is_recovered_whole_by_a_plain_recover(store: Store,
                                                                   hermes: HermesDir) -> None:
    report = import_json_dir(store, hermes.path)
    sid = hermes.wiped
    assert sid in report.suspect
    assert hermes.partials not in report.suspect
    full = hermes.bak[sid]
    store.append(sid, [{"role": "user", "content": "typed after the wipe"}])
    # The versions keep the files' old times (2023); no window to give.
    actions = {a.session_id: a for a in store.recover().actions}
    assert actions[sid].action == "recovered"
    doc = export_session(store, sid)
    assert doc["messages"] == [*full["messages"],
                               {"role": "user", "content": "typed after the wipe"}]
    assert doc["context_messages"] == full["context_messages"]
    assert doc["tool_calls"] == full["tool_calls"]
    assert doc["message_count"] == len(doc["messages"]) == 47
    assert list(doc) == list(full)
    assert store.recover().actions == []  # idempotent
    assert not store.list_sessions(query=sid).sessions[0].suspect_shrink


def test_server_start_up_recovers_an_imported_wipe(store_path: Path, hermes: HermesDir) -> None:
    with open_store(store_path) as s:
        import_json_dir(s, hermes.path)
    settings = Settings(store=str(store_path), allowed_hosts=["testserver"])
    with TestClient(create_app(settings)) as client:
        got = client.get(f"/api/sessions/{hermes.wiped}").json()
    assert len(got["messages"]) == 46 and got["metadata"]["message_count"] == 46
    assert got["lists"]["tool_calls"] == hermes.bak[hermes.wiped]["tool_calls"]


def test_duplicate_partials_healed_are_not_suspect(store: Store, hermes: HermesDir) -> None:
    import_json_dir(store, hermes.path)
    sid = hermes.partials
    vs = store.versions(sid)
    assert [(v.message_count, v.suspect_shrink) for v in reversed(vs)] == [(9, False),
                                                                             (7, False)]
    assert store.recover(sid).actions == []
    assert export_session(store, sid) == hermes.live[sid]


def test_tombstoned_sessions_end_deleted_and_are_not_resurrected(store: Store,
                                                                 hermes: HermesDir) -> None:
    store.create("tomb-gone", {"title": "deleted in the UI"}, [{"role": "user"}])
    report = import_json_dir(store, hermes.path)
    assert report.skipped == []
    listed = {s.session_id for s in store.list_sessions(limit=100).sessions}
    assert not listed & set(hermes.tombstoned)
    for sid in hermes.tombstoned:
        assert store.versions(sid)[0].op == "delete"
    # The deleted sessions' history is there to restore.
    assert len(store.load_version(hermes.tomb_live, 1).messages) == 6
    again = import_json_dir(store, hermes.path)
    assert again.versions == 0 and again.sessions_deleted == 0


def test_a_malformed_tombstone_is_reported_and_changes_nothing(store: Store,
                                                               hermes: HermesDir) -> None:
    write_json(hermes.path / "_deleted_webui_sessions.json", {"version": 7, "ids": "x"})
    report = import_json_dir(store, hermes.path)
    assert [Path(s.path).name for s in report.skipped] == ["_deleted_webui_sessions.json"]
    assert store.load_meta(hermes.tomb_live).message_count == 6


def test_own_files_and_temporaries_are_ignored_silently(store: Store, hermes: HermesDir) -> None:
    report = import_json_dir(store, hermes.path)
    assert report.skipped == []
    assert {"_index.json", "_pruned_webui_orphans.json", "_deleted_webui_sessions.json",
            "hermes-plain.json.tmp.4242.140000", "hermes-plain.tmp.4242.140001"
            } <= set(report.ignored)


def test_long_and_dash_first_ids_import(store: Store, hermes: HermesDir) -> None:
    import_json_dir(store, hermes.path)
    for sid in (hermes.long_id, hermes.dash_id, hermes.underscore_id):
        assert export_session(store, sid) == hermes.live[sid]
    assert len(hermes.long_id) == 246
    longest = "-" + "x" * 254  # what hermes accepts: 255 characters, dash first
    store.create(longest, {"title": "t"}, [{"role": "user"}])
    assert store.load(longest).messages == [{"role": "user"}]


def test_cli_takes_dash_first_ids_after_double_dash(store_path: Path, hermes: HermesDir) -> None:
    with open_store(store_path) as s:
        import_json_dir(s, hermes.path)
    r = runner.invoke(app, ["--store", str(store_path), "log", "--", hermes.dash_id])
    assert r.exit_code == 0, r.stderr
    assert "import" in r.stdout
    r = runner.invoke(app, ["--store", str(store_path), "export", "--", hermes.dash_id])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == hermes.live[hermes.dash_id]
    r = runner.invoke(app, ["--store", str(store_path), "recover", "--", hermes.dash_id])
    assert r.exit_code == 0, r.stderr


def test_dry_run_reports_the_wipe_of_lists(store: Store, hermes: HermesDir) -> None:
    dry = import_json_dir(store, hermes.path, dry_run=True)
    real = import_json_dir(store, hermes.path)
    assert set(dry.suspect) == set(real.suspect) == {hermes.wiped}
