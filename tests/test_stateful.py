"""The store against a plain model of lists and dicts, driven by random operations."""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from servers import PostgresServer

from cas_store import SessionExists, SessionNotFound, merge_patch, open_store

SIDS = ["a", "b", "c"]
_counter = itertools.count()
#: What the recover rule expected, over a run (the test checks real recoveries are common).
RECOVERS: Counter[str] = Counter()


def fresh(n: int) -> list[dict[str, Any]]:
    return [{"role": "user", "n": next(_counter)} for _ in range(n)]


def cp(a: list[Any], b: list[Any]) -> int:
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Owed:
    """What recovery owes a session after an accidental cut, stated from its promise.

    The user means ``truth = owed + head[k:]``: every message of the larger version
    (and of any later accidental cut) that was lost, then whatever the session has
    become since at its end. ``clear`` goes False once a change touched messages the cut
    had already dropped, or the shrink rewrote instead of cut: the promise then is
    that recovery leaves the session alone (it cannot know what the user wants).
    """

    owed: list[Any]
    k: int
    clear: bool = True

    def truth(self, head: list[Any]) -> list[Any]:
        return self.owed + head[self.k:]


class Model:
    """One session: its versions (messages, metadata, op, flags), whether it is deleted,
    and what recovery owes it."""

    def __init__(self) -> None:
        self.versions: list[dict[str, Any]] = []
        self.deleted = False
        self.owed: Owed | None = None

    @property
    def head(self) -> dict[str, Any]:
        return self.versions[-1]

    def add(self, op: str, messages: list[Any], metadata: dict[str, Any], *,
            suspect: bool = False, intentional: bool = False) -> None:
        old = self.versions[-1]["messages"] if self.versions else []
        self.versions.append({"seq": len(self.versions) + 1, "op": op, "messages": messages,
                              "metadata": metadata, "suspect": suspect,
                              "intentional": intentional})
        if op in ("create", "fork"):
            self.owed = None  # a new life owes nothing of the old one
        elif op in ("restore", "recover"):
            self.owed = None  # a state chosen on purpose
        elif messages != old:
            self.changed(old, messages, suspect)

    def changed(self, old: list[Any], new: list[Any], accident: bool) -> None:
        """Apply the promise to one change of the message list."""
        cut = accident and new == old[: len(new)]
        o = self.owed
        if o is None:
            if accident:
                # A cut owes every message of the larger version; a rewrite is not guessed.
                self.owed = Owed(old, len(new), clear=cut)
            return
        if not o.clear:
            return
        if cut:
            # Another accident: still owed everything, now from a shorter head.
            self.owed = Owed(o.truth(old), len(new))
        elif cp(old, new) >= o.k:
            # A change at the end, after what was kept of the larger version (an append,
            # or a deliberate edit there): kept as it is, never undone.
            pass
        else:
            o.clear = False

    def expected_recovery(self) -> list[Any] | None:
        """The messages recovery must bring, None if it must leave the session alone."""
        if self.deleted or self.owed is None or not self.owed.clear:
            return None
        return self.owed.truth(self.head["messages"])


def shrink_flags(old: list[Any], new: list[Any], intentional: bool,
                 got_suspect: bool) -> tuple[bool, bool]:
    """Return (suspect, intentional) a save from old to new must record.

    A shrink that drops messages absent from the new list is suspect unless intentional.
    One whose dropped messages all reappear in the new list (only the reuse of the save
    rule makes one) is suspect under one rule set and not under another: take the store's
    word for it, the oracle below then follows that flag.
    """
    c = cp(old, new)
    shrank = c < len(old)
    if not shrank:
        return False, False
    if intentional:
        return False, True
    dropped = old[c:]
    if all(m in new for m in dropped):
        return got_suspect, False
    return True, False


class StoreMachine(RuleBasedStateMachine):
    #: Names a fresh PostgreSQL store per run when set (PostgresStoreMachine); else SQLite.
    fresh_location: Callable[[], str] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        make = type(self).fresh_location
        self.store = open_store(make() if make else Path(self.tmp.name) / "s.db")
        self.model: dict[str, Model] = {}

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    def live(self, sid: str) -> bool:
        return sid in self.model and not self.model[sid].deleted

    # --- rules ---------------------------------------------------------------------------

    @rule(sid=st.sampled_from(SIDS), n=st.integers(0, 40), title=st.text(max_size=5))
    def create(self, sid: str, n: int, title: str) -> None:
        messages, meta = fresh(n), {"title": title}
        if self.live(sid):
            with pytest.raises(SessionExists):
                self.store.create(sid, meta, messages)
            return
        self.store.create(sid, meta, messages)
        self.model.setdefault(sid, Model()).add("create", messages, meta)
        self.model[sid].deleted = False

    @rule(sid=st.sampled_from(SIDS), n=st.integers(1, 40))
    def append(self, sid: str, n: int) -> None:
        messages = fresh(n)
        if not self.live(sid):
            with pytest.raises(SessionNotFound):
                self.store.append(sid, messages)
            return
        self.store.append(sid, messages)
        m = self.model[sid]
        m.add("append", m.head["messages"] + messages, m.head["metadata"])

    @rule(sid=st.sampled_from(SIDS), keep=st.floats(0, 1), n=st.integers(0, 20),
          intentional=st.booleans(), reuse=st.booleans())
    def save(self, sid: str, keep: float, n: int, intentional: bool, reuse: bool) -> None:
        if not self.live(sid):
            return
        m = self.model[sid]
        old = m.head["messages"]
        new = old[: int(len(old) * keep)] + (old[len(old) // 2 :][:n] if reuse else fresh(n))
        v = self.store.save(sid, new, intentional_shrink=intentional)
        if new == old:
            return
        suspect, deliberate = shrink_flags(old, new, intentional, v.suspect_shrink)
        m.add("save", new, m.head["metadata"], suspect=suspect, intentional=deliberate)

    @precondition(lambda self: any(self.live(s) and self.model[s].head["messages"]
                                   for s in SIDS))
    @rule(data=st.data(), keep=st.floats(0, 1), metadata_only=st.booleans(),
          then=st.integers(0, 5))
    def wipe(self, data: st.DataObject, keep: float, metadata_only: bool, then: int) -> None:
        """An accident: a metadata-only style save that sends [], or a cut to a prefix,
        maybe followed by appends (the session goes on after the wipe)."""
        sid = data.draw(st.sampled_from([s for s in SIDS if self.live(s)
                                         and self.model[s].head["messages"]]))
        m = self.model[sid]
        old = m.head["messages"]
        new = [] if metadata_only else old[: min(int(len(old) * keep), len(old) - 1)]
        meta = dict(m.head["metadata"]) if metadata_only else None
        v = self.store.save(sid, new, meta)
        assert v.suspect_shrink  # distinct messages were dropped
        m.add("save", new, m.head["metadata"], suspect=True)
        if then:
            more = fresh(then)
            self.store.append(sid, more)
            m.add("append", new + more, m.head["metadata"])

    @rule(sid=st.sampled_from(SIDS), keep=st.floats(0, 1), n=st.integers(0, 3))
    def rewind(self, sid: str, keep: float, n: int) -> None:
        if not self.live(sid):
            return
        m = self.model[sid]
        old = m.head["messages"]
        k = int(len(old) * keep)
        add = fresh(n)
        self.store.rewind(sid, k, add)
        new = old[:k] + add
        if new == old:
            return
        m.add("rewind", new, m.head["metadata"], intentional=cp(old, new) < len(old))

    @rule(sid=st.sampled_from(SIDS),
          patch=st.dictionaries(st.sampled_from(["title", "x", "y"]),
                                st.one_of(st.none(), st.integers(0, 3), st.text(max_size=3)),
                                max_size=3))
    def update_metadata(self, sid: str, patch: dict[str, Any]) -> None:
        if not self.live(sid):
            with pytest.raises(SessionNotFound):
                self.store.update_metadata(sid, patch)
            return
        self.store.update_metadata(sid, patch)
        m = self.model[sid]
        merged = merge_patch(m.head["metadata"], patch)
        if merged != m.head["metadata"]:
            m.add("update_metadata", m.head["messages"], merged)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))
        m = self.model[sid]
        seq = data.draw(st.integers(1, len(m.versions)))
        self.store.restore(sid, seq)
        target = m.versions[seq - 1]
        old = m.head["messages"]
        shrank = (not m.deleted) and cp(old, target["messages"]) < len(old)
        m.add("restore", target["messages"], target["metadata"], intentional=shrank)
        m.deleted = False

    @precondition(lambda self: any(self.live(s) for s in SIDS))
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        src = data.draw(st.sampled_from([s for s in SIDS if self.live(s)]))
        dst = data.draw(st.sampled_from(SIDS))
        if self.live(dst):
            with pytest.raises(SessionExists):
                self.store.fork(src, dst)
            return
        self.store.fork(src, dst)
        head = self.model[src].head
        self.model.setdefault(dst, Model()).add("fork", head["messages"], head["metadata"])
        self.model[dst].deleted = False

    @rule(sid=st.sampled_from(SIDS))
    def delete(self, sid: str) -> None:
        if not self.live(sid):
            with pytest.raises(SessionNotFound):
                self.store.delete(sid)
            return
        self.store.delete(sid)
        m = self.model[sid]
        m.add("delete", m.head["messages"], m.head["metadata"])
        m.deleted = True

    def owed(self) -> tuple[dict[str, list[Any]], set[str]]:
        """Return what recovery must bring back per session, and the sessions it must skip."""
        expected = {}
        for sid, m in self.model.items():
            got = m.expected_recovery()
            if got is not None:
                expected[sid] = got
        left_alone = {sid for sid, m in self.model.items()
                      if not m.deleted and m.owed is not None and not m.owed.clear}
        return expected, left_alone

    @precondition(lambda self: any(m.owed is not None and not m.deleted
                                   for m in self.model.values()))
    @rule()
    def recover(self) -> None:
        expected, left_alone = self.owed()
        kind = "recovery" if expected else "skip"
        RECOVERS[kind] += 1
        event(f"recover expects: {kind}")
        heads = {sid: self.store.load(sid).messages for sid in left_alone}
        report = self.store.recover()
        assert {a.session_id: a.to_count for a in report.recovered} == {
            s: len(v) for s, v in expected.items()}
        assert {a.session_id for a in report.actions if a.action == "skipped"} == left_alone
        for sid in left_alone:  # left alone means unchanged
            assert self.store.load(sid).messages == heads[sid]
        for sid, messages in expected.items():
            assert self.store.load(sid).messages == messages
            m = self.model[sid]
            m.add("recover", messages, m.head["metadata"])

    # --- checks --------------------------------------------------------------------------

    @invariant()
    def recovery_would_keep_the_promise(self) -> None:
        # After every step, a dry run says what recovery would do; it must match what is
        # owed (this also checks that nothing is recovered where nothing was lost).
        expected, left_alone = self.owed()
        report = self.store.recover(dry_run=True)
        assert {a.session_id: a.to_count for a in report.actions
                if a.action == "would_recover"} == {s: len(v) for s, v in expected.items()}
        assert {a.session_id for a in report.actions if a.action == "skipped"} == left_alone

    @invariant()
    def matches_model(self) -> None:
        for sid, m in self.model.items():
            got = [(v.seq, v.op, v.message_count, v.suspect_shrink, v.intentional_shrink)
                   for v in reversed(self.store.versions(sid))]
            want = [(v["seq"], v["op"], len(v["messages"]), v["suspect"], v["intentional"])
                    for v in m.versions]
            assert got == want
            if m.deleted:
                with pytest.raises(SessionNotFound):
                    self.store.load(sid)
            else:
                s = self.store.load(sid)
                assert s.messages == m.head["messages"]
                assert s.metadata == m.head["metadata"]
            first = self.store.load_version(sid, 1)
            assert first.messages == m.versions[0]["messages"]
        listed = {s.session_id for s in self.store.list_sessions(limit=100).sessions}
        assert listed == {sid for sid in self.model if self.live(sid)}


@contextlib.contextmanager
def _without_local_constants() -> Iterator[None]:
    # Hypothesis's own hook (private: a rename makes this test error, never pass quietly).
    from hypothesis.internal.conjecture import providers
    from hypothesis.internal.constants_ast import Constants

    providers.CONSTANTS_CACHE.cache.clear()
    try:
        with mock.patch.object(providers, "_get_local_constants", Constants):
            yield
    finally:
        providers.CONSTANTS_CACHE.cache.clear()


def run_machine(machine: type[StoreMachine]) -> None:
    RECOVERS.clear()
    # derandomize: the same examples every run, so the share of real recoveries checked
    # below is a fixed property of the rules, not luck (it ranged 0-100% across seeds).
    # Hypothesis also draws now and then from the constants of every local module this
    # process has imported (cas_store's among them): which ones depends on the tests run
    # before in the process and changes with any edit of the code, and one draw that
    # differs sends the whole run elsewhere (9 real recoveries instead of 33, seen). The
    # run is made without them, so it is the same run in any process and after any edit.
    with _without_local_constants():
        run_state_machine_as_test(machine, settings=settings(
            max_examples=100, stateful_step_count=30, deadline=None, derandomize=True,
            database=None))
    # The oracle is only worth as much as the recoveries it checks: many of the recover
    # calls must expect a real one (the rest expect recovery to leave it alone).
    # (Before the wipe rules existed, 0 of 895 recover calls expected one.)
    calls = sum(RECOVERS.values())
    assert calls and RECOVERS["recovery"] >= 15, RECOVERS


def test_store_matches_model() -> None:
    run_machine(StoreMachine)


class PostgresStoreMachine(StoreMachine):
    """The same machine on PostgreSQL, each run in a schema of its own."""

    def __init__(self) -> None:
        assert type(self).fresh_location is not None, "needs the pg_server fixture"
        super().__init__()
        assert self.store.backend.name.startswith("postgresql")


def test_postgres_store_matches_model(pg_server: PostgresServer) -> None:
    PostgresStoreMachine.fresh_location = pg_server.fresh_schema
    try:
        run_machine(PostgresStoreMachine)
    finally:
        PostgresStoreMachine.fresh_location = None
