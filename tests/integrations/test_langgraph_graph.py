"""CasSaver under real LangGraph graphs: state, history, forks, dedup, cost per step."""

from __future__ import annotations

import asyncio
import operator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

from cas_store import Store, open_store
from cas_store.integrations.langgraph import CasSaver


def chat_graph(checkpointer: Any) -> Any:
    """A MessagesState graph: each invoke adds the user's message and one reply."""

    def reply(state: MessagesState) -> dict[str, Any]:
        n = len(state["messages"])
        return {"messages": [AIMessage(f"reply to {state['messages'][-1].content} ({n})",
                                       id=f"ai-{n}")]}

    g = StateGraph(MessagesState)
    g.add_node("reply", reply)
    g.add_edge(START, "reply")
    g.add_edge("reply", END)
    return g.compile(checkpointer=checkpointer)


def snapshot(s: Any) -> tuple[Any, ...]:
    """What a StateSnapshot says, minus the ids and times that differ between savers."""
    md = {k: v for k, v in (s.metadata or {}).items() if k in ("source", "step")}
    return (s.values, s.next, md, [(t.name, t.result) for t in s.tasks])


def history(graph: Any, cfg: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [snapshot(s) for s in graph.get_state_history(cfg)]


@pytest.fixture
def saver(store: Store) -> CasSaver:
    return CasSaver(store)


def test_state_and_history_match_in_memory_saver_at_every_step(saver: CasSaver) -> None:
    ours, ref = chat_graph(saver), chat_graph(InMemorySaver())
    cfg = {"configurable": {"thread_id": "t1"}}
    for i in range(6):
        msg = {"messages": [HumanMessage(f"hello {i}", id=f"h-{i}")]}
        out_ours, out_ref = ours.invoke(msg, cfg), ref.invoke(msg, cfg)
        assert out_ours == out_ref
        assert snapshot(ours.get_state(cfg)) == snapshot(ref.get_state(cfg))
        assert history(ours, cfg) == history(ref, cfg)
    assert len(ours.get_state(cfg).values["messages"]) == 12
    # The second turn saw the first.
    assert ours.get_state(cfg).values["messages"][3].content == "reply to hello 1 (3)"


def test_a_fresh_saver_on_the_same_store_continues_the_thread(store_path: Path) -> None:
    with open_store(store_path) as s1:
        g = chat_graph(CasSaver(s1))
        cfg = {"configurable": {"thread_id": "t"}}
        g.invoke({"messages": [HumanMessage("one", id="h1")]}, cfg)
    with open_store(store_path) as s2:
        g = chat_graph(CasSaver(s2))
        g.invoke({"messages": [HumanMessage("two", id="h2")]}, cfg)
        msgs = g.get_state(cfg).values["messages"]
    assert [m.content for m in msgs] == ["one", "reply to one (1)", "two", "reply to two (3)"]


def test_fork_from_an_old_checkpoint(saver: CasSaver) -> None:
    ours, ref = chat_graph(saver), chat_graph(InMemorySaver())
    for g in (ours, ref):
        cfg = {"configurable": {"thread_id": "t"}}
        for i in range(3):
            g.invoke({"messages": [HumanMessage(f"m{i}", id=f"h{i}")]}, cfg)
        # Go back to the state after the first turn and take another path.
        old = next(s for s in g.get_state_history(cfg) if len(s.values.get("messages", [])) == 2)
        forked = g.update_state(old.config, {"messages": [HumanMessage("other", id="hx")]})
        g.invoke({"messages": [HumanMessage("next", id="hn")]}, forked)
    cfg = {"configurable": {"thread_id": "t"}}
    msgs = ours.get_state(cfg).values["messages"]
    assert [m.content for m in msgs] == ["m0", "reply to m0 (1)", "other", "next",
                                         "reply to next (4)"]
    assert msgs == ref.get_state(cfg).values["messages"]
    assert history(ours, cfg) == history(ref, cfg)
    # The branch left behind is still there, whole.
    old_tip = [s for s in ours.get_state_history(cfg) if len(s.values.get("messages", [])) == 6]
    assert [m.content for m in old_tip[0].values["messages"]][-1] == "reply to m2 (5)"


def test_remove_message_is_an_intentional_shrink(saver: CasSaver, store: Store) -> None:
    g = chat_graph(saver)
    cfg = {"configurable": {"thread_id": "t"}}
    g.invoke({"messages": [HumanMessage("a", id="h1")]}, cfg)
    g.update_state(cfg, {"messages": [RemoveMessage(id="h1")]})
    assert [m.id for m in g.get_state(cfg).values["messages"]] == ["ai-1"]
    sid = saver._sids("t", "")[0]
    head = store.versions(sid, limit=1)[0]
    assert head.intentional_shrink and not head.suspect_shrink


def test_same_messages_in_two_threads_are_stored_once(saver: CasSaver, store: Store) -> None:
    g = chat_graph(saver)
    for t in ("a", "b"):
        g.invoke({"messages": [HumanMessage("same", id="h")]}, {"configurable": {"thread_id": t}})
    # Two threads, 3 checkpoints each, the same two messages: 2 message chunks.
    chunks = {}
    for t in ("a", "b"):
        for m in store.messages(saver._sids(t, "")[0]):
            chunks[str(m)] = m
    assert len(chunks) == 2
    added = []
    for t in ("a", "b"):
        before = store.stats().objects["chunk"]
        g.invoke({"messages": [HumanMessage("again", id="h2")]}, {"configurable": {"thread_id": t}})
        added.append(store.stats().objects["chunk"] - before)
    # Thread b's turn stores the same records as a's but not its two messages again.
    assert added[1] <= added[0] - 2, added


def test_a_step_writes_o1_bytes_whatever_the_thread_length(saver: CasSaver, store: Store) -> None:
    g = chat_graph(saver)
    cfg = {"configurable": {"thread_id": "long"}}
    growth = []
    for i in range(120):
        before = store.stats().stored_bytes
        g.invoke({"messages": [HumanMessage(f"message number {i} " + "x" * 200, id=f"h{i}")]},
                 cfg)
        growth.append(store.stats().stored_bytes - before)
    early, late = sum(growth[10:30]) / 20, sum(growth[100:120]) / 20
    assert late < early * 1.5 + 200, (early, late)
    assert len(g.get_state(cfg).values["messages"]) == 240


class Counted(TypedDict):
    messages: Annotated[list[Any], operator.add]
    notes: list[str]
    count: int


def test_other_channels_and_a_second_message_channel(saver: CasSaver) -> None:
    def step(state: Counted) -> dict[str, Any]:
        n = state.get("count", 0) + 1
        return {"messages": [AIMessage(f"m{n}", id=f"m{n}")], "count": n,
                "notes": [*state.get("notes", []), f"n{n}"]}

    def route(state: Counted) -> str:
        return "step" if state["count"] < 5 else END

    g = StateGraph(Counted)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_conditional_edges("step", route)
    ours = g.compile(checkpointer=saver)
    ref = g.compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "c"}}
    assert ours.invoke({"messages": [], "count": 0}, cfg) == ref.invoke(
        {"messages": [], "count": 0}, cfg)
    assert history(ours, cfg) == history(ref, cfg)


def test_async_graph_with_a_subgraph_matches_in_memory_saver(saver: CasSaver) -> None:
    def inner_reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"inner {len(state['messages'])}",
                                       id=f"in-{len(state['messages'])}")]}

    sub = StateGraph(MessagesState)
    sub.add_node("inner", inner_reply)
    sub.add_edge(START, "inner")
    sub_app = sub.compile()

    def build(cp: Any) -> Any:
        g = StateGraph(MessagesState)
        g.add_node("sub", sub_app)
        g.add_edge(START, "sub")
        return g.compile(checkpointer=cp)

    async def run(app: Any) -> tuple[Any, list[Any]]:
        cfg = {"configurable": {"thread_id": "async"}}
        for i in range(3):
            await app.ainvoke({"messages": [HumanMessage(f"q{i}", id=f"q{i}")]}, cfg)
        hist = [snapshot(s) async for s in app.aget_state_history(cfg)]
        return (await app.aget_state(cfg)).values, hist

    ours_values, ours_hist = asyncio.run(run(build(saver)))
    ref_values, ref_hist = asyncio.run(run(build(InMemorySaver())))
    assert ours_values == ref_values and len(ours_values["messages"]) == 6
    assert ours_hist == ref_hist
    # The subgraph's checkpoints went to their own namespaces, and list(None) sees them.
    namespaces = {t.config["configurable"]["checkpoint_ns"] for t in saver.list(None)}
    assert "" in namespaces and len(namespaces) > 1


def test_runs_do_not_open_a_connection_each(saver: CasSaver, store: Store) -> None:
    # LangGraph starts threads per run; the saver's calls run on its own few threads, so
    # the backend's per-thread SQLite connections stay few however many runs there are.
    g = chat_graph(saver)
    cfg = {"configurable": {"thread_id": "many"}}
    for i in range(30):
        g.invoke({"messages": [HumanMessage(f"m{i}", id=f"h{i}")]}, cfg)
    assert len(store.backend._all) <= 6  # type: ignore[attr-defined]


def test_fsck_and_gc_after_forks_prunes_and_copies(saver: CasSaver, store: Store) -> None:
    from cas_store import gc

    g = chat_graph(saver)
    cfg = {"configurable": {"thread_id": "g"}}
    for i in range(4):
        g.invoke({"messages": [HumanMessage(f"m{i}", id=f"h{i}")]}, cfg)
    old = next(s for s in g.get_state_history(cfg) if len(s.values.get("messages", [])) == 2)
    g.invoke({"messages": [HumanMessage("fork", id="hf")]}, old.config)
    before = history(g, cfg)
    saver.copy_thread("g", "g2")
    saver.prune(["g"])
    assert store.fsck().ok
    # Nothing is older than the grace period: a sweep of everything unreferenced (grace 0)
    # must leave every checkpoint LangGraph can still reach whole.
    gc(store, grace=0.0)
    assert store.fsck().ok
    want = g.get_state({"configurable": {"thread_id": "g2"}}).values["messages"]
    assert [m.content for m in want][-2:] == ["fork", "reply to fork (3)"]
    assert history(g, {"configurable": {"thread_id": "g2"}}) == before
    assert len(list(g.get_state_history(cfg))) == 1
    assert g.get_state(cfg).values["messages"] == want
