"""Recovery per list: messages and every named list by one rule, plus derived counts."""

from __future__ import annotations

from support import msg, msgs

from cas_store import Store

DAY = 86400.0


def items(name: str, start: int, stop: int) -> list[dict[str, object]]:
    return [{"list": name, "i": i} for i in range(start, stop)]


def _full(store: Store, sid: str = "s") -> None:
    store.create(sid, {"title": "t", "message_count": 10}, msgs(0, 10),
                 lists={"context_messages": items("ctx", 0, 8),
                        "tool_calls": items("tool", 0, 5)})


def test_a_wipe_of_three_lists_comes_back_whole(store: Store) -> None:
    _full(store)
    v = store.save("s", [], {"title": "t", "message_count": 0},
                   lists={"context_messages": [], "tool_calls": []})
    assert v.suspect_shrink
    store.append("s", [msg(100)])
    [action] = store.recover().actions
    assert action.action == "recovered" and action.to_count == 11
    s = store.load("s")
    assert s.messages == [*msgs(0, 10), msg(100)]
    assert s.lists == {"context_messages": items("ctx", 0, 8), "tool_calls": items("tool", 0, 5)}
    assert s.metadata["message_count"] == 11 == store.load_meta("s").message_count
    assert store.recover().actions == []


def test_a_shrink_of_one_named_list_alone_is_suspect_and_recovered(store: Store) -> None:
    _full(store)
    v = store.save("s", msgs(0, 10), lists={"tool_calls": items("tool", 0, 2)})
    assert v.suspect_shrink
    assert store.list_sessions().sessions[0].suspect_shrink
    store.save("s", msgs(0, 10), lists={"tool_calls": [*items("tool", 0, 2),
                                                       {"list": "tool", "i": 99}]})
    store.recover()
    s = store.load("s")
    assert s.lists["tool_calls"] == [*items("tool", 0, 5), {"list": "tool", "i": 99}]
    assert s.lists["context_messages"] == items("ctx", 0, 8)
    assert s.messages == msgs(0, 10)


def test_each_list_keeps_what_was_added_after_the_wipe(store: Store) -> None:
    _full(store)
    store.save("s", [], lists={"context_messages": [], "tool_calls": []})
    store.save("s", [msg(50)], lists={"context_messages": items("ctx", 50, 52),
                                      "tool_calls": items("tool", 50, 51)})
    store.recover()
    s = store.load("s")
    assert s.messages == [*msgs(0, 10), msg(50)]
    assert s.lists["context_messages"] == [*items("ctx", 0, 8), *items("ctx", 50, 52)]
    assert s.lists["tool_calls"] == [*items("tool", 0, 5), *items("tool", 50, 51)]


def test_a_shrink_that_loses_nothing_is_not_suspect(store: Store) -> None:
    partial = {"role": "assistant", "content": "partial", "_partial": True}
    store.create("s", {}, [*msgs(0, 6), partial, partial, partial],
                 lists={"tool_calls": [*items("tool", 0, 3), {"dup": 1}, {"dup": 1}]})
    v = store.save("s", [*msgs(0, 6), partial], lists={"tool_calls": [*items("tool", 0, 3),
                                                                       {"dup": 1}]})
    assert not v.suspect_shrink and not v.intentional_shrink
    assert not store.list_sessions().sessions[0].suspect_shrink
    assert store.recover().actions == []
    assert store.recover("s").actions == []
    assert len(store.load("s").messages) == 7
    # Reordering loses nothing either; dropping a distinct message does.
    assert not store.save("s", [partial, *msgs(0, 6)]).suspect_shrink
    assert store.save("s", [partial, *msgs(0, 5)]).suspect_shrink


def test_an_unreviewed_shrink_is_recovered_however_old(store: Store) -> None:
    now = [1_000_000.0]
    store.clock = lambda: now[0]
    _full(store)
    store.save("s", [], lists={"tool_calls": []})
    now[0] += 420 * DAY
    assert [a.action for a in store.recover().actions] == ["recovered"]
    s = store.load("s")
    assert s.messages == msgs(0, 10) and len(s.lists["tool_calls"]) == 5


def test_the_window_bounds_only_how_far_back_earlier_shrinks_are_looked_for(
        store: Store) -> None:
    now = [1_000_000.0]
    store.clock = lambda: now[0]
    for sid in ("a", "b"):
        store.create(sid, {}, msgs(0, 10))
        store.save(sid, msgs(0, 5))  # an old wipe
        for i in range(250):  # more than one page of versions, all old
            store.append(sid, [msg(1000 + i)])
        store.save(sid, msgs(0, 5))  # a second wipe, also old
    now[0] += 30 * DAY
    # Both wipes are unreviewed: the newest always counts; the window decides whether
    # recovery reads back past it to the first one.
    store.recover("a", window=DAY)
    assert len(store.load("a").messages) == 5 + 250
    store.recover("b", window=1000 * DAY)
    assert store.load("b").messages == [*msgs(0, 10), *(msg(1000 + i) for i in range(250))]


def test_intentional_shrinks_of_named_lists_are_kept(store: Store) -> None:
    _full(store)
    store.save("s", msgs(0, 10), lists={"tool_calls": []}, intentional_shrink=True)
    assert store.recover().actions == []
    assert "tool_calls" not in store.load("s").lists


def test_a_list_that_cannot_be_replayed_leaves_the_whole_session(store: Store) -> None:
    _full(store)
    store.save("s", [], lists={"tool_calls": []})
    # A rewrite inside the cut part of context_messages: which items are wanted is unclear.
    store.save("s", [], lists={"context_messages": [{"rewritten": True}]},
               intentional_shrink=True)
    [action] = store.recover().actions
    assert action.action == "skipped" and "context_messages" in action.reason
    assert store.load("s").messages == []


def test_message_count_follows_only_when_the_metadata_has_one(store: Store) -> None:
    store.create("s", {"title": "x"}, msgs(0, 4))
    store.save("s", [])
    store.recover()
    assert store.load_meta("s").metadata == {"title": "x"}
    store.create("b", {"message_count": "four"}, msgs(0, 4))
    store.save("b", [])
    store.recover()
    assert store.load_meta("b").metadata == {"message_count": "four"}
