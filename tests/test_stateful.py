"""The store against a plain model of lists and dicts, driven by random operations."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from servers import PostgresServer

from cas_store import SessionExists, SessionNotFound, merge_patch, open_store

SIDS = ["a", "b", "c"]
_counter = itertools.count()


def fresh(n: int) -> list[dict[str, Any]]:
    return [{"role": "user", "n": next(_counter)} for _ in range(n)]


def cp(a: list[Any], b: list[Any]) -> int:
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return i


class Model:
    """One session: its versions (messages, metadata, op, flags) and whether it is deleted."""

    def __init__(self) -> None:
        self.versions: list[dict[str, Any]] = []
        self.deleted = False

    @property
    def head(self) -> dict[str, Any]:
        return self.versions[-1]

    def add(self, op: str, messages: list[Any], metadata: dict[str, Any], *,
            suspect: bool = False, intentional: bool = False) -> None:
        self.versions.append({"seq": len(self.versions) + 1, "op": op, "messages": messages,
                              "metadata": metadata, "suspect": suspect,
                              "intentional": intentional})

    def recovery(self) -> list[Any] | None:
        """The spec of recovery, on message values (see cas_store/recovery.py)."""
        vs = self.versions
        start = 0
        for i, v in enumerate(vs):
            if v["op"] in ("recover", "restore"):
                start = i + 1
        first = next((i for i in range(max(start, 1), len(vs)) if vs[i]["suspect"]), None)
        if first is None:
            return None
        base = vs[first - 1]["messages"]
        prev, k = base, len(base)
        for v in vs[first:]:
            cur = v["messages"]
            c = cp(prev, cur)
            if v["suspect"] and c == len(cur):
                base, k = base + prev[k:], len(cur)
            elif c < k:
                return None
            prev = cur
        result = base + prev[k:]
        return None if result == prev else result


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
        self.store.save(sid, new, intentional_shrink=intentional)
        if new == old:
            return
        shrank = cp(old, new) < len(old)
        m.add("save", new, m.head["metadata"], suspect=shrank and not intentional,
              intentional=shrank and intentional)

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

    @rule()
    def recover(self) -> None:
        expected = {}
        for sid, m in self.model.items():
            if not m.deleted:
                got = m.recovery()
                if got is not None:
                    expected[sid] = got
        report = self.store.recover()
        assert {a.session_id: a.to_count for a in report.recovered} == {
            s: len(v) for s, v in expected.items()}
        for sid, messages in expected.items():
            m = self.model[sid]
            m.add("recover", messages, m.head["metadata"])

    # --- checks --------------------------------------------------------------------------

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


StoreMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30,
                                          deadline=None)
test_store_matches_model = StoreMachine.TestCase


class PostgresStoreMachine(StoreMachine):
    """The same machine on PostgreSQL, each run in a schema of its own."""

    def __init__(self) -> None:
        assert type(self).fresh_location is not None, "needs the pg_server fixture"
        super().__init__()
        assert self.store.backend.name.startswith("postgresql")


PostgresStoreMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30,
                                                  deadline=None)


@pytest.fixture
def _postgres_machine(pg_server: PostgresServer) -> Iterator[None]:
    PostgresStoreMachine.fresh_location = pg_server.fresh_schema
    yield
    PostgresStoreMachine.fresh_location = None


@pytest.mark.usefixtures("_postgres_machine")
class TestPostgresStoreMatchesModel(PostgresStoreMachine.TestCase):  # type: ignore[name-defined]
    pass
