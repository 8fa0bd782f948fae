from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import msg, msgs

from cas_store import (
    ANY,
    Conflict,
    InvalidArgument,
    InvalidMessage,
    InvalidMetadata,
    InvalidSessionId,
    SessionExists,
    SessionNotFound,
    Store,
    VersionNotFound,
    merge_patch,
    open_store,
)

# Run on every backend (tests/conftest.py).
pytestmark = pytest.mark.all_backends


def test_the_quick_tour(store: Store) -> None:
    v = store.create("chat-1", metadata={"title": "Trip"},
                     messages=[{"role": "user", "content": "hi"}])
    assert (v.seq, v.op, v.message_count) == (1, "create", 1)
    v = store.append("chat-1", [{"role": "assistant", "content": "hello"}], expected=v.seq)
    assert (v.seq, v.message_count) == (2, 2)
    meta = store.load_meta("chat-1")
    assert meta.metadata == {"title": "Trip"} and meta.message_count == 2
    assert not hasattr(meta, "messages")
    store.update_metadata("chat-1", {"title": "Trip to Rome", "active_stream_id": None})
    s = store.load("chat-1")
    assert s.messages == [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}]
    assert s.metadata == {"title": "Trip to Rome"}
    assert store.messages("chat-1", offset=-1) == [{"role": "assistant", "content": "hello"}]
    v = store.save("chat-1", messages=[], metadata=s.metadata)
    assert v.suspect_shrink and not v.intentional_shrink
    report = store.recover()
    assert [a.action for a in report.actions] == ["recovered"]
    assert store.load("chat-1").messages == s.messages


def test_messages_round_trip_as_equal_json(store: Store) -> None:
    weird = [
        {"role": "user", "content": "héllo 👋 \u0000 \n \"quoted\"", "n": 1.5, "big": 2**70},
        {"role": "assistant", "content": [{"type": "text", "text": "x"}],
         "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": None, "attachments": [{"name": "a.png", "size": 0}],
         "empty": {}, "list": [], "t": True, "f": False, "neg": -0.0, "e": 1e300},
    ]
    store.create("s", {"title": "t"}, weird)
    assert store.load("s").messages == weird


def test_invalid_message_names_its_index_and_writes_nothing(store: Store) -> None:
    store.create("s", {}, msgs(0, 3))
    before = store.versions("s")
    with pytest.raises(InvalidMessage) as exc:
        store.append("s", [msg(3), msg(4), ["not", "an", "object"]])
    assert exc.value.index == 2
    with pytest.raises(InvalidMessage):
        store.save("s", [msg(0), {"x": float("nan")}])
    with pytest.raises(InvalidMessage):
        store.create("t", {}, [msg(0), "text"])
    assert store.versions("s") == before
    assert store.load("s").messages == msgs(0, 3)
    with pytest.raises(SessionNotFound):
        store.load("t")


def test_message_size_limit(store_path: Path) -> None:
    from cas_store import Limits

    s = open_store(store_path, limits=Limits(max_message_bytes=100))
    with pytest.raises(InvalidMessage, match="over the limit"):
        s.create("s", {}, [msg(0), {"content": "x" * 200}])
    s.close()


@pytest.mark.parametrize("sid", ["", ".a", "a/b", "a b", "..", "a" * 256, "é", "a\x00",
                                 "%2F", 5, None])
def test_bad_session_ids(store: Store, sid: object) -> None:
    with pytest.raises(InvalidSessionId):
        store.create(sid, {}, [])  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        store.load(sid)  # type: ignore[arg-type]


def test_good_session_ids(store: Store) -> None:
    for sid in ["a", "A9", "0.x_y-z", "a" * 128]:
        store.create(sid, {}, [])
        assert store.load(sid).messages == []


def test_create_twice_is_refused(store: Store) -> None:
    store.create("s", {}, [])
    with pytest.raises(SessionExists):
        store.create("s", {}, [])


def test_append_with_stale_expected_conflicts(store: Store) -> None:
    v1 = store.create("s", {}, [msg(0)])
    store.append("s", [msg(1)])
    with pytest.raises(Conflict) as exc:
        store.append("s", [msg(2)], expected=v1.seq)
    assert exc.value.current == 2
    with pytest.raises(Conflict):
        store.save("s", [msg(9)], expected=v1.seq)
    with pytest.raises(Conflict):
        store.update_metadata("s", {"a": 1}, expected=v1.seq)
    store.update_metadata("s", {"a": 1})  # no expected: rebases on the head
    assert store.load("s").messages == msgs(0, 2)
    assert store.load_meta("s").metadata == {"a": 1}


def test_append_nothing_is_a_no_op(store: Store) -> None:
    v = store.create("s", {}, [msg(0)])
    assert store.append("s", []).seq == v.seq


def test_save_identical_state_adds_no_version(store: Store) -> None:
    store.create("s", {"t": 1}, msgs(0, 3))
    v = store.save("s", msgs(0, 3), {"t": 1})
    assert v.seq == 1
    assert store.update_metadata("s", {}).seq == 1


def test_save_flags_shrinks(store: Store) -> None:
    store.create("s", {}, msgs(0, 5))
    grow = store.save("s", msgs(0, 6))
    assert not grow.suspect_shrink and not grow.intentional_shrink
    edited = store.save("s", [*msgs(0, 5), msg(99)])  # same count, different last message
    assert edited.suspect_shrink
    intended = store.save("s", msgs(0, 2), intentional_shrink=True)
    assert intended.intentional_shrink and not intended.suspect_shrink
    assert [v.op for v in store.versions("s")] == ["save", "save", "save", "create"]


def test_metadata_only_load_reads_no_chunk_or_page(store: Store, store_path: Path) -> None:
    store.create("s", {"title": "long"}, msgs(0, 1000))
    for i in range(1000, 1005):
        store.append("s", [msg(i)])  # the head is a delta manifest now
    cold = open_store(store_path)  # nothing cached: every object read is counted
    meta = cold.load_meta("s")
    assert meta.message_count == 1005
    assert cold.reads["chunk"] == 0 and cold.reads["page"] == 0
    assert cold.reads["meta"] == 1
    assert cold.reads["manifest"] == 1, "a delta carries the metadata id and the counts"
    cold.reads.clear()
    cold.update_metadata("s", {"active_stream_id": None, "pending": None})
    assert cold.reads["chunk"] == 0 and cold.reads["page"] == 0
    cold.close()


def test_metadata_update_writes_no_chunk_or_page(store: Store) -> None:
    store.create("s", {"title": "x"}, msgs(0, 1000))
    before = store.stats().objects
    store.update_metadata("s", {"title": "y"})
    after = store.stats().objects
    assert after["chunk"] == before["chunk"] and after["page"] == before["page"]
    assert after["meta"] == before["meta"] + 1 and after["manifest"] == before["manifest"] + 1


def test_merge_patch_follows_rfc_7396() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": [1]}, {"a": [2]}) == {"a": [2]}
    assert merge_patch({"a": 1}, {"b": {"c": None}}) == {"a": 1, "b": {}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}  # not modified


def test_metadata_patch_must_be_object(store: Store) -> None:
    store.create("s", {}, [])
    with pytest.raises(InvalidMetadata):
        store.update_metadata("s", ["x"])  # type: ignore[arg-type]
    with pytest.raises(InvalidMetadata):
        store.create("t", ["x"], [])  # type: ignore[arg-type]


def test_rewind(store: Store) -> None:
    store.create("s", {}, msgs(0, 100))
    v = store.rewind("s", 98, [msg(500)])
    assert v.op == "rewind" and v.intentional_shrink and not v.suspect_shrink
    assert store.load("s").messages == [*msgs(0, 98), msg(500)]
    v2 = store.rewind("s", 99, [msg(501)])  # replace a streamed partial with the final one
    assert store.load("s").messages == [*msgs(0, 98), msg(500), msg(501)]
    assert not v2.intentional_shrink  # nothing was dropped
    with pytest.raises(InvalidArgument):
        store.rewind("s", 1000)
    with pytest.raises(InvalidArgument):
        store.rewind("s", -1)


def test_byte_totals_follow_every_edit(store: Store) -> None:
    from cas_store.objects import canonical_json

    def size(ms: list[dict[str, object]]) -> int:
        return sum(len(canonical_json(m)) for m in ms)

    current = msgs(0, 40)
    v = store.create("s", {}, current)
    assert v.bytes == size(current)
    current = [*current[:37], msg(900)]
    assert store.rewind("s", 37, [msg(900)]).bytes == size(current)
    current = current[:5]
    assert store.rewind("s", 5).bytes == size(current)
    current = [*current, *msgs(50, 70)]
    assert store.append("s", msgs(50, 70)).bytes == size(current)
    assert store.load_meta("s").bytes == size(current)


def test_messages_slices(store: Store) -> None:
    store.create("s", {}, msgs(0, 500))
    assert store.messages("s") == msgs(0, 500)
    assert store.messages("s", offset=-50) == msgs(450, 500)
    assert store.messages("s", offset=10, limit=5) == msgs(10, 15)
    assert store.messages("s", offset=495, limit=50) == msgs(495, 500)
    assert store.messages("s", offset=-1000, limit=2) == msgs(0, 2)
    assert store.messages("s", offset=600) == []
    store.reads.clear()
    store.messages("s", offset=-20)
    assert store.reads["chunk"] == 20
    assert store.reads["page"] <= 4


def test_versions_restore_fork_delete(store: Store) -> None:
    store.create("s", {"title": "a"}, msgs(0, 3))
    store.append("s", msgs(3, 5))
    store.save("s", [], intentional_shrink=True)
    assert [v.seq for v in store.versions("s")] == [3, 2, 1]
    assert [v.seq for v in store.versions("s", limit=2)] == [3, 2]
    assert [v.seq for v in store.versions("s", before=3)] == [2, 1]
    assert store.load_version("s", 2).messages == msgs(0, 5)
    assert store.version("s", 1).message_count == 3
    r = store.restore("s", 2)
    assert (r.seq, r.op, r.message_count) == (4, "restore", 5)
    assert store.load("s").messages == msgs(0, 5)
    f = store.fork("s", "s2", seq=1)
    assert (f.session_id, f.seq, f.op) == ("s2", 1, "fork")
    assert store.load("s2").messages == msgs(0, 3)
    gen = store.fork("s")
    assert store.load(gen.session_id).messages == msgs(0, 5)
    d = store.delete("s")
    assert d.op == "delete"
    with pytest.raises(SessionNotFound):
        store.load("s")
    with pytest.raises(SessionNotFound):
        store.append("s", [msg(1)])
    assert "s" not in [x.session_id for x in store.list_sessions().sessions]
    assert store.load_version("s", 2).messages == msgs(0, 5)  # history stays browsable
    back = store.restore("s", 4)
    assert back.seq == 6
    assert store.load("s").messages == msgs(0, 5)
    with pytest.raises(VersionNotFound):
        store.restore("s", 99)


def test_create_after_delete_continues_the_log(store: Store) -> None:
    store.create("s", {}, msgs(0, 2))
    store.delete("s")
    v = store.create("s", {"new": True}, [])
    assert v.seq == 3
    assert store.load_version("s", 1).messages == msgs(0, 2)


def test_fork_refuses_existing_target(store: Store) -> None:
    store.create("a", {}, [])
    store.create("b", {}, [])
    with pytest.raises(SessionExists):
        store.fork("a", "b")


def test_fork_shares_every_object(store: Store) -> None:
    store.create("a", {"title": "x"}, msgs(0, 300))
    before = store.stats()
    store.fork("a", "b")
    after = store.stats()
    assert after.objects == before.objects


def test_dedup_across_sessions(store: Store) -> None:
    store.create("a", {}, msgs(0, 100))
    chunks = store.stats().objects["chunk"]
    store.create("b", {}, msgs(0, 100))
    assert store.stats().objects["chunk"] == chunks


def test_diff(store: Store) -> None:
    store.create("s", {"title": "a", "x": 1}, msgs(0, 5))
    store.save("s", [*msgs(0, 3), msg(10), msg(11)], {"title": "b", "y": 2},
               intentional_shrink=True)
    d = store.diff("s", 1, 2)
    assert d.common_prefix == 3
    assert d.removed == msgs(3, 5)
    assert d.added == [msg(10), msg(11)]
    assert d.metadata_changes == {"title": {"from": "a", "to": "b"},
                                  "x": {"from": 1, "to": None}, "y": {"from": None, "to": 2}}


def test_list_sessions_newest_first_with_cursor_and_query(store: Store) -> None:
    clock = iter(range(1000, 2000))
    store.clock = lambda: float(next(clock))
    for i in range(25):
        store.create(f"s{i:02d}", {"title": f"Trip {i}" if i % 2 else f"Work {i}"},
                     msgs(0, i))
    page = store.list_sessions(limit=10)
    assert [s.session_id for s in page.sessions] == [f"s{i:02d}" for i in range(24, 14, -1)]
    seen = [s.session_id for s in page.sessions]
    while page.next_cursor:
        page = store.list_sessions(limit=10, cursor=page.next_cursor)
        seen += [s.session_id for s in page.sessions]
    assert seen == [f"s{i:02d}" for i in range(24, -1, -1)]
    trips = store.list_sessions(limit=100, query="trip").sessions
    assert {s.session_id for s in trips} == {f"s{i:02d}" for i in range(1, 25, 2)}
    assert store.list_sessions(query="100%_").sessions == []
    store.reads.clear()
    s = store.list_sessions(limit=5).sessions[0]
    assert sum(store.reads.values()) == 0  # no manifest, meta or chunk read
    assert s.message_count == 24 and s.title == "Work 24"
    with pytest.raises(InvalidArgument):
        store.list_sessions(cursor="garbage!")
    with pytest.raises(InvalidArgument):
        store.list_sessions(limit=0)


def test_explicit_timestamps(store: Store) -> None:
    v = store.create("s", {}, [], at=1234.5)
    assert v.created_at == 1234.5
    assert store.load_meta("s").created_at == 1234.5
    store.append("s", [msg(0)], at=2000.0)
    assert store.load_meta("s").updated_at == 2000.0


def test_extra_named_lists(store: Store) -> None:
    store.create("s", {"title": "x"}, msgs(0, 3), lists={"context_messages": [1, "two", {"3": 3}]})
    assert store.load_meta("s").list_counts == {"context_messages": 3}
    assert store.load("s").lists == {"context_messages": [1, "two", {"3": 3}]}
    before = store.stats().objects
    store.update_metadata("s", {"title": "y"})
    assert store.stats().objects["chunk"] == before["chunk"]
    store.save("s", msgs(0, 4))  # lists not given: kept
    assert store.load("s").lists == {"context_messages": [1, "two", {"3": 3}]}
    store.save("s", msgs(0, 4), lists={"context_messages": []})
    assert store.load("s").lists == {}
    with pytest.raises(InvalidArgument):
        store.save("s", [], lists={"messages": []})
    with pytest.raises(InvalidArgument):
        store.save("s", [], lists={"bad name!": []})


def test_store_reopens_with_everything(store_path: Path) -> None:
    s = open_store(store_path)
    s.create("s", {"a": 1}, msgs(0, 50))
    s.append("s", msgs(50, 60))
    s.close()
    s = open_store(store_path)
    assert s.load("s").messages == msgs(0, 60)
    assert [v.seq for v in s.versions("s")] == [2, 1]
    s.close()


def test_expected_must_be_an_int(store: Store) -> None:
    store.create("s", {}, [])
    with pytest.raises(InvalidArgument):
        store.append("s", [msg(0)], expected="1")  # type: ignore[arg-type]
    assert store.append("s", [msg(0)], expected=ANY).seq == 2


def test_opening_a_file_that_is_not_a_store_fails_cleanly(tmp_path: Path) -> None:
    from cas_store import StorageError

    bad = tmp_path / "not-a-db"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(StorageError):
        open_store(bad)
