"""CasSession: the SDK run for real, SQLiteSession's behaviour, races, and history."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import threading
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner
from agents.memory.session import Session
from agents.memory.session_settings import SessionSettings
from agents.testing import ScriptedModel, assistant_message

from cas_store import Store, open_store
from cas_store.integrations.openai_agents import CasSession


def items(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"item {i}"}
            for i in range(start, start + n)]


def test_it_is_a_session(store: Store) -> None:
    assert isinstance(CasSession("s", store), Session)


def test_runner_over_several_turns_sees_earlier_turns(store: Store) -> None:
    model = ScriptedModel([
        [assistant_message("Paris.", item_id="m1")],
        [assistant_message("About two million.", item_id="m2")],
        [assistant_message("You asked about Paris.", item_id="m3")],
    ])
    agent = Agent(name="guide", instructions="Answer briefly.", model=model)
    session = CasSession("conv-1", store)

    async def run() -> list[str]:
        outs = []
        for question in ("Capital of France?", "Its population?", "What did I ask first?"):
            result = await Runner.run(agent, question, session=session)
            outs.append(result.final_output)
        return outs

    assert asyncio.run(run()) == ["Paris.", "About two million.", "You asked about Paris."]
    # The second call's input carried the first turn: the question and the answer.
    second = str(model.calls[1].input)
    assert "Capital of France?" in second and "Paris." in second
    third = str(model.calls[2].input)
    assert "Its population?" in third and "About two million." in third
    stored = asyncio.run(session.get_items())
    assert [i.get("role") for i in stored] == ["user", "assistant"] * 3
    # Each turn is a version; the first turn's state is still readable.
    assert len(session.versions()) >= 3
    first = session.versions()[-1].seq
    assert session.get_items_at(first)[0]["content"] == "Capital of France?"


# --- the SDK's own SQLiteSession tests, ported --------------------------------------------


def test_basic_add_get_and_order(store: Store) -> None:
    s = CasSession("basic", store)

    async def run() -> None:
        await s.add_items(items(2))
        await s.add_items(items(2, 2))
        got = await s.get_items()
        assert [i["content"] for i in got] == ["item 0", "item 1", "item 2", "item 3"]

    asyncio.run(run())


def test_get_items_limit(store: Store) -> None:
    s = CasSession("limits", store)

    async def run() -> None:
        await s.add_items(items(6))
        assert [i["content"] for i in await s.get_items(limit=2)] == ["item 4", "item 5"]
        assert [i["content"] for i in await s.get_items(limit=1)] == ["item 5"]
        assert len(await s.get_items(limit=10)) == 6
        assert await s.get_items(limit=0) == []

    asyncio.run(run())


def test_session_settings_limit_is_the_default(store: Store) -> None:
    s = CasSession("settings", store, session_settings=SessionSettings(limit=3))

    async def run() -> None:
        await s.add_items(items(5))
        assert [i["content"] for i in await s.get_items()] == ["item 2", "item 3", "item 4"]
        assert len(await s.get_items(limit=5)) == 5

    asyncio.run(run())


def test_empty_session(store: Store) -> None:
    s = CasSession("empty", store)

    async def run() -> None:
        assert await s.get_items() == []
        assert await s.get_items(limit=3) == []
        assert await s.pop_item() is None
        await s.clear_session()
        await s.add_items([])
        assert await s.get_items() == []

    asyncio.run(run())
    assert s.versions() == []


def test_pop_item(store: Store) -> None:
    s = CasSession("pop", store)

    async def run() -> None:
        await s.add_items(items(3))
        assert (await s.pop_item())["content"] == "item 2"
        assert [i["content"] for i in await s.get_items()] == ["item 0", "item 1"]
        assert (await s.pop_item())["content"] == "item 1"
        assert (await s.pop_item())["content"] == "item 0"
        assert await s.pop_item() is None

    asyncio.run(run())
    # Every pop was a version, flagged intentional, never suspect.
    pops = [v for v in s.versions() if v.op == "rewind"]
    assert len(pops) == 3
    assert all(v.intentional_shrink and not v.suspect_shrink for v in pops)


def test_clear_session_is_an_intentional_version(store: Store) -> None:
    s = CasSession("clear", store)

    async def run() -> None:
        await s.add_items(items(4))
        await s.clear_session()
        assert await s.get_items() == []
        await s.add_items(items(1, 10))
        assert [i["content"] for i in await s.get_items()] == ["item 10"]

    asyncio.run(run())
    cleared = s.versions()[1]
    assert cleared.message_count == 0 and cleared.intentional_shrink
    assert not cleared.suspect_shrink
    assert len(s.get_items_at(cleared.seq - 1)) == 4


def test_sessions_are_isolated(store: Store) -> None:
    a, b = CasSession("a", store), CasSession("b", store)

    async def run() -> None:
        await a.add_items(items(2))
        await b.add_items(items(1, 5))
        assert len(await a.get_items()) == 2
        assert [i["content"] for i in await b.get_items()] == ["item 5"]

    asyncio.run(run())


def test_unusual_session_ids(store: Store) -> None:
    s = CasSession("user@example.com / chat #1", store)
    asyncio.run(s.add_items(items(1)))
    assert asyncio.run(CasSession("user@example.com / chat #1", store).get_items()) == items(1)
    assert asyncio.run(CasSession("user@example.com / chat #2", store).get_items()) == []


# --- races --------------------------------------------------------------------------------


def test_concurrent_pops_remove_different_items(store_path: Path) -> None:
    with open_store(store_path) as store:
        asyncio.run(CasSession("race", store).add_items(items(40)))
    popped: list[Any] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def popper() -> None:
        with open_store(store_path) as st:
            s = CasSession("race", st)
            barrier.wait()
            for _ in range(5):
                got = asyncio.run(s.pop_item())
                with lock:
                    popped.append(got)

    threads = [threading.Thread(target=popper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open_store(store_path) as store:
        left = asyncio.run(CasSession("race", store).get_items())
    contents = [p["content"] for p in popped]
    assert len(set(contents)) == 20
    everything = sorted(i["content"] for i in items(40))
    assert sorted(contents + [i["content"] for i in left]) == everything
    assert [i["content"] for i in left] == [f"item {i}" for i in range(20)]


def _adder(path: str, who: int, n: int) -> None:
    with open_store(path) as store:
        s = CasSession("shared", store)
        for i in range(n):
            asyncio.run(s.add_items([{"role": "user", "content": f"p{who}-{i}"}]))


@pytest.mark.slow
def test_two_processes_adding_lose_nothing(store_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_adder, args=(str(store_path), w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with open_store(store_path) as store:
        got = [i["content"] for i in asyncio.run(CasSession("shared", store).get_items())]
    assert len(got) == 80
    for w in range(2):
        mine = [c for c in got if c.startswith(f"p{w}-")]
        assert mine == [f"p{w}-{i}" for i in range(40)]  # in order per writer


# --- beyond SQLiteSession ----------------------------------------------------------------


def test_branch_from_turn_and_at_a_version(store: Store) -> None:
    s = CasSession("main", store)
    for turn in range(3):
        asyncio.run(s.add_items([{"role": "user", "content": f"q{turn}"},
                                 {"role": "assistant", "content": f"a{turn}"}]))
    b = s.branch_from_turn(2, "alt")
    assert [i["content"] for i in asyncio.run(b.get_items())] == ["q0", "a0"]
    asyncio.run(b.add_items([{"role": "user", "content": "q1 asked differently"}]))
    assert len(asyncio.run(s.get_items())) == 6  # the original is untouched
    at_first = s.versions()[-1].seq
    c = s.branch("early", seq=at_first)
    assert [i["content"] for i in asyncio.run(c.get_items())] == ["q0", "a0"]
    with pytest.raises(ValueError):
        s.branch_from_turn(7, "nope")


def test_scan_items_and_restore(store: Store) -> None:
    s = CasSession("scan", store)
    asyncio.run(s.add_items([{"role": "user", "content": "Where is the Louvre?"},
                             {"role": "assistant", "content": "In Paris."}]))
    assert [i for i, _ in s.scan_items("paris")] == [1]
    before = s.versions()[0].seq
    asyncio.run(s.clear_session())
    s.restore(before)
    assert len(asyncio.run(s.get_items())) == 2
