"""The bench's interleaved appends and reads (bench/measure.py): turns, counts, checks, budgets.

The ratios the bench reports rest on every store's appends and reads being spread over the same
span of time; these tests pin the order and the counts that promise it.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bench.measure import append_turns, interleaved_reads


def _calls(order: list[str], keys: str) -> dict[str, Any]:
    def call(k: str) -> Any:
        def run() -> list[str]:
            order.append(k)
            return [k]
        return run
    return {k: call(k) for k in keys}


def test_stores_take_turns_of_three_calls_and_each_gets_its_count() -> None:
    order: list[str] = []
    checked: list[tuple[str, Any]] = []
    got = interleaved_reads(_calls(order, "abc"), 9, 60.0,
                            lambda k, r: checked.append((k, r)))
    assert {k: n for k, (_, n) in got.items()} == {"a": 9, "b": 9, "c": 9}
    assert all(median >= 0 for median, _ in got.values())
    # Turns of three in a row, every store once a round, each round starting further on.
    turns = [order[i : i + 3] for i in range(0, len(order), 3)]
    assert all(len(set(t)) == 1 for t in turns)
    rounds = [[t[0] for t in turns[i : i + 3]] for i in range(0, len(turns), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({r[0] for r in rounds}) == 3
    assert checked == [(k, [k]) for k in order]


def test_a_store_out_of_budget_stops_while_the_others_go_on() -> None:
    order: list[str] = []
    calls = _calls(order, "ab")
    got = interleaved_reads(calls, 6, 0.0, lambda k, r: None)
    # Out of budget after its first call, each store is still called once.
    assert got["a"][1] == 1 and got["b"][1] == 1
    got = interleaved_reads(calls, 4, 60.0, lambda k, r: None, burst=1)
    assert got["a"][1] == 4 and got["b"][1] == 4


def test_a_failed_check_stops_the_reads() -> None:
    def check(k: str, r: Any) -> None:
        if k == "b":
            raise AssertionError("b returned too little")

    with pytest.raises(AssertionError, match="too little"):
        interleaved_reads(_calls([], "ab"), 3, 60.0, check)


def test_append_turns_give_each_store_its_count_and_every_neighbour() -> None:
    counts = {"a": 200, "b": 200, "c": 200, "d": 50}
    rounds = list(append_turns(counts, seed=7))
    flat = [k for r in rounds for k in r]
    assert {k: flat.count(k) for k in counts} == counts
    assert all(len(set(r)) == len(r) for r in rounds)  # each store once a round
    # No store always follows the same one: each is preceded by every other store.
    before: dict[str, set[str]] = {k: set() for k in counts}
    for prev, k in itertools.pairwise(flat):
        before[k].add(prev)
    assert all(before[k] >= set(counts) - {k} for k in counts)
    assert rounds == list(append_turns(counts, seed=7))  # a run can be repeated
    assert rounds != list(append_turns(counts, seed=8))
