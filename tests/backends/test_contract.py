"""The backend contract: one class of tests run unchanged on every backend (conftest.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cas_store import Conflict, StorageError, Store, VersionNotFound, gc
from cas_store.backends import (
    Backend,
    Commit,
    HeadRow,
    IndexUpdate,
    LogEntry,
    ObjectWrite,
    Retry,
    SearchTerm,
    open_backend,
    summary_matches,
)
from cas_store.backends.base import HIT_END, HIT_START
from cas_store.objects import Kind, Oid, canonical_json, compress, object_id
from cas_store.search import reindex


def obj(text: str, kind: Kind = Kind.CHUNK) -> ObjectWrite:
    payload = text.encode()
    return ObjectWrite(object_id(kind, payload), kind, len(payload), compress(payload))


def known(o: ObjectWrite) -> ObjectWrite:
    """The same object as a commit that found it stored already names it (no bytes)."""
    return ObjectWrite(o.oid, o.kind, o.size, None)


def change(sid: str, expected: int, objects: list[ObjectWrite], *, at: float = 1000.0,
           title: str = "", deleted: bool = False, suspect: bool = False,
           requires: tuple[tuple[str, int, Oid], ...] = (),
           summary: dict[str, Any] | None = None, index: IndexUpdate | None = None,
           op: str = "append", count: int | None = None) -> Commit:
    manifest = objects[0].oid if objects else object_id(Kind.MANIFEST, f"{sid}{expected}".encode())
    seq = expected + 1
    count = seq if count is None else count  # the head's message count
    entry = LogEntry(sid, seq, manifest, at, op, count, 10 * seq, suspect_shrink=suspect)
    head = HeadRow(sid, seq, manifest, count, 10 * seq, title, at, at, deleted, suspect,
                   summary or {})
    return Commit(expected, objects, entry, head, requires, index)


class TestBackendContract:
    # --- objects ---------------------------------------------------------------------------

    def test_objects_round_trip(self, backend: Backend) -> None:
        a, b = obj("alpha"), obj("beta", Kind.META)
        backend.commit(change("s", 0, [a, b]))
        frames = backend.get_frames([a.oid, b.oid, obj("absent").oid])
        assert frames == {a.oid: (Kind.CHUNK, a.frame), b.oid: (Kind.META, b.frame)}
        assert backend.missing([a.oid, obj("absent").oid]) == {obj("absent").oid}
        assert backend.sizes([a.oid, b.oid]) == {a.oid: a.size, b.oid: b.size}
        infos = {i.oid: i for i in backend.iter_objects()}
        assert set(infos) == {a.oid, b.oid}
        assert infos[a.oid].kind is Kind.CHUNK and infos[a.oid].stored_size == len(a.frame or b"")
        totals = backend.object_totals()
        assert totals[Kind.CHUNK][0] == 1 and totals[Kind.META][1] == b.size

    def test_ordinals_are_unique_small_and_stable(self, backend: Backend) -> None:
        objs = [obj(f"o{i}") for i in range(50)]
        backend.commit(change("s", 0, objs))
        ords = backend.ordinals([o.oid for o in objs])
        assert len(set(ords.values())) == 50
        assert all(0 <= n < 10_000 for n in ords.values())
        listed = list(backend.iter_ordinals(time.time() + 3600))
        assert [n for n, _, _ in listed] == sorted(ords.values())
        assert {oid: n for n, oid, _ in listed} == ords
        assert backend.ordinals([o.oid for o in objs]) == ords

    def test_many_objects_in_one_commit(self, backend: Backend) -> None:
        objs = [obj(f"many {i}") for i in range(2500)]  # more than one query's batch
        backend.commit(change("s", 0, objs))
        assert backend.missing(o.oid for o in objs) == set()
        assert len(backend.get_frames([o.oid for o in objs])) == 2500

    # --- compare-and-swap --------------------------------------------------------------------

    def test_stale_expected_conflicts_and_writes_nothing(self, backend: Backend) -> None:
        backend.commit(change("s", 0, [obj("one")]))
        with pytest.raises(Conflict) as info:
            backend.commit(change("s", 0, [obj("two")]))
        assert info.value.current == 1
        assert backend.missing([obj("two").oid]) == {obj("two").oid}
        assert [e.seq for e in backend.versions("s")] == [1]

    def test_racing_commits_exactly_one_wins(self, opener: Callable[[], Backend]) -> None:
        backends = [opener() for _ in range(4)]
        backends[0].commit(change("s", 0, [obj("base")]))
        for round_ in range(8):
            expected = backends[0].head("s").seq  # type: ignore[union-attr]
            barrier = threading.Barrier(len(backends))
            results: list[str] = []

            def race(k: int, b: Backend, expected: int = expected, round_: int = round_,
                     barrier: threading.Barrier = barrier, results: list[str] = results) -> None:
                barrier.wait()
                try:
                    b.commit(change("s", expected, [obj(f"r{round_} w{k}")]))
                    results.append("won")
                except Conflict:
                    results.append("lost")

            threads = [threading.Thread(target=race, args=(k, b)) for k, b in enumerate(backends)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results) == ["lost", "lost", "lost", "won"]
            assert backends[1].head("s").seq == expected + 1  # type: ignore[union-attr]
        assert [e.seq for e in backends[2].versions("s", ascending=True)] == list(range(1, 10))

    def test_racing_creates_exactly_one_wins(self, opener: Callable[[], Backend]) -> None:
        backends = [opener() for _ in range(4)]
        barrier = threading.Barrier(4)
        results: list[str] = []

        def create(k: int) -> None:
            barrier.wait()
            try:
                backends[k].commit(change("new", 0, [obj(f"creator {k}")]))
                results.append("won")
            except Conflict:
                results.append("lost")

        threads = [threading.Thread(target=create, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["lost", "lost", "lost", "won"]
        assert len(backends[0].versions("new")) == 1

    def test_requires_a_version_that_still_exists(self, backend: Backend) -> None:
        a = obj("a")
        backend.commit(change("s", 0, [a]))
        backend.commit(change("s", 1, [obj("b")]))
        v1 = backend.version("s", 1)
        assert v1 is not None
        backend.commit(change("f", 0, [known(a)], requires=(("s", 1, v1.manifest),)))
        assert backend.prune_versions("s", [1]) == 1
        with pytest.raises(VersionNotFound):
            backend.commit(change("g", 0, [known(a)], requires=(("s", 1, v1.manifest),)))
        assert backend.head("g") is None

    # --- version log and heads ---------------------------------------------------------------

    def test_version_log(self, backend: Backend) -> None:
        for i in range(5):
            backend.commit(change("s", i, [obj(f"v{i}")], at=100.0 + i))
        assert [e.seq for e in backend.versions("s")] == [5, 4, 3, 2, 1]
        assert [e.seq for e in backend.versions("s", ascending=True, limit=2)] == [1, 2]
        assert [e.seq for e in backend.versions("s", before=4, limit=2)] == [3, 2]
        entry = backend.version("s", 3)
        assert entry is not None and entry.created_at == 102.0 and entry.message_count == 3
        assert backend.version("s", 9) is None
        assert backend.count_versions() == 5
        # Pruning never removes the head.
        assert backend.prune_versions("s", [1, 2, 5]) == 2
        assert [e.seq for e in backend.versions("s")] == [5, 4, 3]

    def test_flags_and_suspects(self, backend: Backend) -> None:
        backend.commit(change("s", 0, [obj("x")]))
        backend.commit(change("s", 1, [obj("y")], suspect=True))
        assert backend.version("s", 2).suspect_shrink  # type: ignore[union-attr]
        assert not backend.version("s", 1).suspect_shrink  # type: ignore[union-attr]
        assert backend.suspect_sessions() == ["s"]
        backend.commit(change("s", 2, [obj("z")]))
        assert backend.suspect_sessions() == []

    def test_session_list_order_cursor_query_deleted(self, backend: Backend) -> None:
        for i, sid in enumerate(["b", "a", "c", "d"]):
            backend.commit(change(sid, 0, [obj(sid)], at=float(10 if sid in "ab" else 20 + i),
                                  title=f"Title {sid.upper()}", deleted=sid == "d"))
        heads = backend.list_heads(limit=10)
        assert [h.sid for h in heads] == ["c", "a", "b"]
        assert [h.sid for h in backend.list_heads(limit=10, include_deleted=True)] == [
            "d", "c", "a", "b"]
        page = backend.list_heads(limit=2)
        rest = backend.list_heads(limit=2, after=(page[-1].updated_at, page[-1].sid))
        assert [h.sid for h in page + rest] == ["c", "a", "b"]
        assert [h.sid for h in backend.list_heads(limit=10, query="title c")] == ["c"]
        assert backend.list_heads(limit=10, query="%") == []
        assert sorted(h.sid for h in backend.iter_heads()) == ["a", "b", "c", "d"]

    # --- summary beside the head -----------------------------------------------------------

    SUMMARIES: dict[str, dict[str, Any]] = {
        "a": {"pinned": True, "project_id": "p1", "input_tokens": 10, "model": "m-ü"},
        "b": {"archived": True, "project_id": "p1", "input_tokens": 10.0},
        "c": {"archived": False, "project_id": "p2", "pinned": 1},
        "d": {},
        "e": {"archived": 0, "pinned": "", "project_id": None, "input_tokens": True},
        "f": {"archived": "yes", "pinned": False, "input_tokens": 0},
    }

    def test_summary_is_kept_beside_the_head(self, backend: Backend) -> None:
        for i, (sid, summary) in enumerate(self.SUMMARIES.items()):
            backend.commit(change(sid, 0, [obj(sid)], at=float(i), summary=summary))
        for sid, summary in self.SUMMARIES.items():
            assert dict(backend.head(sid).summary) == summary  # type: ignore[union-attr]
        listed = {h.sid: dict(h.summary) for h in backend.list_heads(limit=10)}
        assert listed == self.SUMMARIES
        assert {h.sid: dict(h.summary) for h in backend.iter_heads()} == self.SUMMARIES
        # The next commit replaces the summary whole.
        backend.commit(change("a", 1, [obj("a2")], at=9.0, summary={"archived": True}))
        assert dict(backend.head("a").summary) == {"archived": True}  # type: ignore[union-attr]

    @pytest.mark.parametrize("where", [
        {"archived": False}, {"archived": True}, {"pinned": True}, {"pinned": False},
        {"project_id": "p1"}, {"project_id": None}, {"input_tokens": 10},
        {"input_tokens": 0}, {"input_tokens": True}, {"input_tokens": 1},
        {"project_id": "p1", "archived": False}, {"model": "m-ü"}, {"model": "m"},
        {"archived": "yes"}, {"absent": None}, {"absent": True},
    ])
    def test_where_filters_follow_summary_matches(self, backend: Backend,
                                                  where: dict[str, Any]) -> None:
        for i, (sid, summary) in enumerate(self.SUMMARIES.items()):
            backend.commit(change(sid, 0, [obj(sid)], at=float(i), summary=summary))
        want = [sid for sid in reversed(self.SUMMARIES)
                if summary_matches(self.SUMMARIES[sid], where)]
        assert [h.sid for h in backend.list_heads(limit=10, where=where)] == want
        # The same filter a page at a time, after a cursor.
        page = backend.list_heads(limit=1, where=where)
        seen = [h.sid for h in page]
        while page:
            page = backend.list_heads(limit=1, where=where,
                                      after=(page[-1].updated_at, page[-1].sid))
            seen += [h.sid for h in page]
        assert seen == want

    def test_drop_session_checks_the_head(self, backend: Backend) -> None:
        backend.commit(change("s", 0, [obj("x")]))
        backend.commit(change("s", 1, [obj("y")]))
        assert not backend.drop_session("s", 1)
        assert backend.drop_session("s", 2)
        assert backend.head("s") is None and backend.versions("s") == []
        backend.commit(change("s", 0, [obj("again")]))  # the id is free again
        assert backend.head("s").seq == 1  # type: ignore[union-attr]

    def test_batch_commits_together_and_a_conflict_rolls_back_only_itself(
            self, backend: Backend) -> None:
        with backend.batch():
            backend.commit(change("a", 0, [obj("a1")]))
            with pytest.raises(Conflict):
                backend.commit(change("a", 0, [obj("a-lost")]))
            backend.commit(change("b", 0, [obj("b1")]))
        assert backend.head("a").seq == 1 and backend.head("b").seq == 1  # type: ignore[union-attr]
        assert backend.missing([obj("a-lost").oid]) == {obj("a-lost").oid}
        with pytest.raises(RuntimeError), backend.batch():
            backend.commit(change("c", 0, [obj("c1")]))
            raise RuntimeError("abandon")
        assert backend.head("c") is None

    def test_snapshot_sees_one_state(self, opener: Callable[[], Backend]) -> None:
        reader, writer = opener(), opener()
        writer.commit(change("s", 0, [obj("x")]))
        with reader.snapshot():
            before = reader.head("s")
            writer.commit(change("s", 1, [obj("y")]))
            assert reader.head("s") == before
            assert [e.seq for e in reader.versions("s")] == [1]
        assert reader.head("s").seq == 2  # type: ignore[union-attr]

    # --- change feed ---------------------------------------------------------------------------

    def test_feed_cursors_follow_commit_order_under_concurrent_writers(
            self, opener: Callable[[], Backend]) -> None:
        writers, rounds = 4, 15
        reader = opener()
        backends = [opener() for _ in range(writers)]
        errors: list[BaseException] = []
        done = threading.Event()
        seen: list[int] = []

        def write(k: int) -> None:
            try:
                for i in range(rounds):
                    backends[k].commit(change(f"w{k}", i, [obj(f"w{k} {i}")]))
                    if k == 0:  # and a loser of a race, whose cursor must not leave a gap
                        with pytest.raises(Conflict):
                            backends[k].commit(change(f"w{k}", i, [obj(f"lost {i}")]))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        def read() -> None:
            # A reader that sees cursor N must see every cursor below it: what it reads
            # after its last cursor always continues the sequence without a hole.
            try:
                while not done.is_set() or reader.last_cursor() > (seen[-1] if seen else 0):
                    for e in reader.changes(seen[-1] if seen else 0, limit=7):
                        assert e.cursor == (seen[-1] if seen else 0) + 1, (e.cursor, seen[-3:])
                        seen.append(e.cursor)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
        watcher = threading.Thread(target=read)
        watcher.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        watcher.join()
        assert errors == []
        total = writers * rounds
        assert seen == list(range(1, total + 1))
        assert reader.last_cursor() == total
        feed = reader.changes(0, limit=total + 10)
        assert [e.cursor for e in feed] == list(range(1, total + 1))
        for k in range(writers):
            mine = [e for e in feed if e.sid == f"w{k}"]
            assert [e.seq for e in mine] == list(range(1, rounds + 1))
            assert [e.cursor for e in reader.versions(f"w{k}", ascending=True)] == [
                e.cursor for e in mine]

    def test_changes_after_a_cursor_per_session_and_pruned(self, backend: Backend) -> None:
        assert backend.last_cursor() == 0 and backend.changes(0) == []
        for i in range(3):
            for sid in ("a", "b"):
                backend.commit(change(sid, i, [obj(f"{sid}{i}")]))
        assert backend.last_cursor() == 6
        every = backend.changes(0)
        assert [(e.sid, e.seq) for e in every] == [
            ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)]
        assert [e.cursor for e in every] == [1, 2, 3, 4, 5, 6]
        assert [e.cursor for e in backend.changes(2, limit=3)] == [3, 4, 5]
        assert [(e.seq, e.cursor) for e in backend.changes(1, sid="b")] == [
            (1, 2), (2, 4), (3, 6)]
        assert [e.seq for e in backend.changes(4, sid="b")] == [3]
        assert backend.changes(6) == []
        assert backend.version("a", 2).cursor == 3  # type: ignore[union-attr]
        # Pruned and dropped entries leave the feed; the counter never goes back.
        assert backend.prune_versions("a", [1, 2]) == 2
        assert backend.drop_session("b", 3)
        assert [(e.sid, e.seq) for e in backend.changes(0)] == [("a", 3)]
        backend.commit(change("b", 0, [obj("b again")]))
        assert [e.cursor for e in backend.changes(5)] == [7]
        assert backend.last_cursor() == 7

    def test_watch_wakes_on_another_connections_commit(
            self, opener: Callable[[], Backend]) -> None:
        watching, writer = opener(), opener()
        watch = watching.watch()
        try:
            assert not watch.wait(0.2)  # nothing committed yet
            timer = threading.Timer(0.3, lambda: writer.commit(change("s", 0, [obj("x")])))
            timer.start()
            try:
                assert watch.wait(30)
            finally:
                timer.join()
            for i in range(1, 4):  # several commits before the next wait: one wake-up
                writer.commit(change("s", i, [obj(f"y{i}")]))
            assert watch.wait(30)
            watch.wait(0.3)  # a watch may wake once more for commits already seen
            assert not watch.wait(0.3)
            assert watching.changes(0)[-1].seq == 4
        finally:
            watch.close()

    # --- search index --------------------------------------------------------------------------

    def test_search_hits_phrases_prefixes_unicode_and_snippets(self, location: str) -> None:
        store = Store(open_backend(location))
        try:
            assert store.backend.supports_search
            store.create("s", {}, [u("how do I deploy the app"), a("use blue green deploys"),
                                   u("Привет, мир"), u("café crème"), u("Ελληνικά γράμματα"),
                                   u("the green and blue idea"), u("kafka kafka kafka")])
            store.create("t", {}, [u("kafka once"), a("use blue green deploys")])
            assert sorted(found(store, "green")) == [("s", 1, 1), ("s", 5, 1), ("t", 1, 1)]
            assert sorted(found(store, '"blue green"')) == [("s", 1, 1), ("t", 1, 1)]
            assert sorted(found(store, "deploy")) == [("s", 0, 1)]  # whole words
            assert sorted(found(store, "deplo*")) == [("s", 0, 1), ("s", 1, 1), ("t", 1, 1)]
            assert sorted(found(store, '"green deplo"*')) == [("s", 1, 1), ("t", 1, 1)]
            assert found(store, "мир") == [("s", 2, 1)]
            assert found(store, "CAFE") == [("s", 3, 1)]  # case and diacritics folded
            assert found(store, "ΓΡΆΜΜΑΤΑ") == [("s", 4, 1)]
            assert found(store, "blue idea") == [("s", 5, 1)]  # every term must match
            assert found(store, "kafka")[0] == ("s", 6, 1)  # the denser match first
            assert found(store, "nowhere") == []
            [hit] = store.search('"green and"').hits
            assert hit.role == "user"
            assert hit.snippet_text == "the green and blue idea"
            assert marked(hit.snippet) == ["green", "and"]
            long = " ".join(f"w{i}" for i in range(200)) + " needle " + " ".join(
                f"x{i}" for i in range(200))
            store.append("t", [u(long)])
            [hit] = store.search("needle").hits
            assert f"{HIT_START}needle{HIT_END}" in hit.snippet
            assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
            assert len(hit.snippet_text) < len(long) // 4
            pages = [store.search("green", limit=2), store.search("green", limit=2, cursor=(
                store.search("green", limit=2).next_cursor))]
            assert sorted((h.session_id, h.index) for p in pages for h in p.hits) == [
                ("s", 1), ("s", 5), ("t", 1)]
        finally:
            store.close()

    def test_search_follows_every_write(self, location: str) -> None:
        store = Store(open_backend(location))
        try:
            store.create("s", {}, [u("alpha"), u("beta")])
            store.append("s", [u("gamma")])
            assert found(store, "gamma") == [("s", 2, 2)]
            store.save("s", [u("alpha"), u("zeta")], {})
            assert found(store, "gamma") == [] and found(store, "zeta") == [("s", 1, 3)]
            store.rewind("s", 1, [u("epsilon")])
            assert found(store, "epsilon") == [("s", 1, 4)] and found(store, "zeta") == []
            store.restore("s", 2)
            assert found(store, "gamma") == [("s", 2, 5)] and found(store, "epsilon") == []
            store.fork("s", "f", seq=3)
            assert found(store, "zeta") == [("f", 1, 1)]
            assert sorted(found(store, "alpha")) == [("f", 0, 1), ("s", 0, 5)]
            store.delete("s")
            assert found(store, "alpha") == [("f", 0, 1)]
            store.restore("s", 5)
            assert found(store, "gamma") == [("s", 2, 7)]
            # all_versions: the newest kept version that held the message there.
            assert found(store, "epsilon", versions="all") == [("s", 1, 4)]
            assert sorted(found(store, "zeta", versions="all")) == [("f", 1, 1), ("s", 1, 3)]
            assert store.fsck().ok
            before = {q: sorted(found(store, q, versions=v)) for q in ("alpha", "zeta", "gamma")
                      for v in ("head", "all")}
            report = reindex(store)
            assert report.sessions == 2
            assert store.backend.search_state() == "ready"
            assert {q: sorted(found(store, q, versions=v)) for q in ("alpha", "zeta", "gamma")
                    for v in ("head", "all")} == before
            assert store.fsck().ok
        finally:
            store.close()

    def test_search_refuses_while_rebuilding_and_gc_sweeps_indexed_chunks(
            self, location: str) -> None:
        store = Store(open_backend(location))
        try:
            store.create("s", {}, [u("keep this"), u("only in version one")])
            store.rewind("s", 1, [u("replacement")])
            assert found(store, "version", versions="all") == [("s", 1, 1)]
            gc(store, keep_last=1, grace=0)  # prunes version 1, sweeps its lone chunk
            assert store.backend.missing([object_id(
                Kind.CHUNK, canonical_json(u("only in version one")))]) != set()
            assert found(store, "version", versions="all") == []
            assert found(store, "keep") == [("s", 0, 2)]
            assert store.backend.search_check() == []
            assert store.fsck().ok
            # The swept chunk comes back with new bytes: indexed again.
            store.append("s", [u("only in version one")])
            assert found(store, "version") == [("s", 2, 3)]
            store.backend.search_reset()
            with pytest.raises(StorageError):
                store.search("keep")
            reindex(store)
            assert found(store, "version") == [("s", 2, 3)]
            assert store.backend.search_check() == []
        finally:
            store.close()

    def test_commit_moves_the_index_with_the_pointer(self, opener: Callable[[], Backend]
                                                     ) -> None:
        backend, other = opener(), opener()
        m1, m2, m3 = (obj(canonical_json(u(t)).decode()) for t in ("one fish", "two fish",
                                                                   "red fish"))
        # Each head's message count matches its list, as the store's commits do (a backend
        # may use it to see that an append cuts nothing).
        backend.commit(change("s", 0, [m1, m2], index=IndexUpdate(0, (m1.oid, m2.oid)),
                              count=2))
        assert other.search_spans("s") == [(0, m1.oid), (1, m2.oid)]
        # A lost compare-and-swap moves nothing in the index.
        with pytest.raises(Conflict):
            other.commit(change("s", 0, [m3], index=IndexUpdate(0, (m3.oid,))))
        assert other.search_spans("s") == [(0, m1.oid), (1, m2.oid)]
        # old[:keep] + add, the reused chunk named without its bytes.
        backend.commit(change("s", 1, [m3, known(m1)], index=IndexUpdate(1, (m3.oid, m1.oid)),
                              count=3))
        assert other.search_spans("s") == [(0, m1.oid), (1, m3.oid), (2, m1.oid)]
        hits = other.search([SearchTerm(("fish",))], limit=10)
        assert sorted((h.sid, h.index, h.seq) for h in hits) == [("s", 0, 2), ("s", 1, 2),
                                                                  ("s", 2, 2)]
        hits = other.search([SearchTerm(("two",))], limit=10, all_versions=True)
        assert [(h.sid, h.index, h.seq) for h in hits] == [("s", 1, 1)]
        backend.commit(change("s", 2, [], op="delete", index=IndexUpdate(0), count=3,
                              deleted=True))
        assert other.search_spans("s") == []
        assert other.search([SearchTerm(("fish",))], limit=10) == []
        assert other.search_check() == []

    # --- leases ------------------------------------------------------------------------------

    def test_leases(self, opener: Callable[[], Backend]) -> None:
        a, b = opener(), opener()
        assert a.lease("gc", "one", 60)
        assert not b.lease("gc", "two", 60)
        assert a.lease("gc", "one", 60)  # renew
        b.release("gc", "two")  # not the holder: nothing happens
        assert not b.lease("gc", "two", 60)
        a.release("gc", "one")
        assert b.lease("gc", "two", 0.3)
        assert not a.lease("gc", "one", 60)
        time.sleep(0.5)  # the holder stopped renewing: the lease lapses
        assert a.lease("gc", "one", 60)
        assert a.lease("other", "two", 60)  # names are independent

    # --- GC sweep rules ----------------------------------------------------------------------

    def test_delete_rechecks_the_write_time(self, opener: Callable[[], Backend]) -> None:
        gcb, writer = opener(), opener()
        old, kept = obj("old"), obj("kept")
        writer.commit(change("s", 0, [old, kept]))
        cutoff = writer.now() + 0.001
        time.sleep(0.01)
        # A writer reuses "kept" after the GC chose it: the dedup refreshes its write time.
        writer.commit(change("t", 0, [known(kept)]))
        assert gcb.delete_objects([old.oid, kept.oid], cutoff) == (1, len(old.frame or b""))
        assert gcb.missing([old.oid, kept.oid]) == {old.oid}
        assert writer.get_frames([kept.oid])[kept.oid][1] == kept.frame

    def test_reusing_a_swept_object_asks_to_recompute(self, backend: Backend) -> None:
        gone = obj("gone")
        backend.commit(change("s", 0, [gone]))
        backend.delete_objects([gone.oid], backend.now() + 1)
        with pytest.raises(Retry):
            backend.commit(change("t", 0, [known(gone)]))
        assert backend.head("t") is None
        assert backend.missing([gone.oid]) == {gone.oid}
        backend.commit(change("t", 0, [gone]))  # with the bytes, the commit goes through
        assert backend.missing([gone.oid]) == set()

    def test_new_bytes_for_a_stored_object_refresh_it(self, backend: Backend) -> None:
        x = obj("x")
        backend.commit(change("s", 0, [x]))
        cutoff = backend.now() + 0.001
        time.sleep(0.01)
        backend.commit(change("t", 0, [x]))  # two writers staged the same bytes
        assert backend.delete_objects([x.oid], cutoff) == (0, 0)

    def test_store_gc_keeps_what_versions_reach_and_respects_grace(self, location: str) -> None:
        store = Store(open_backend(location))
        try:
            store.create("a", {"title": "t"}, [{"n": i} for i in range(30)])
            store.rewind("a", 1)  # the other 29 messages now only in version 1
            young = gc(store, keep_last=1, grace=3600)
            assert young.versions_pruned == 1 and young.objects_swept == 0  # too young
            assert gc(store, grace=0, dry_run=True).objects_swept >= 29
            assert gc(store, grace=0).objects_swept >= 29
            assert gc(store, grace=0).objects_swept == 0
            assert store.load("a").messages == [{"n": 0}]
            assert store.fsck().ok
        finally:
            store.close()

    def test_fsck_names_the_versions_a_lost_object_breaks(self, location: str) -> None:
        store = Store(open_backend(location))
        try:
            store.create("a", {}, [{"n": 1}, {"n": 2}])
            store.append("a", [{"n": 3}])
            oid = object_id(Kind.CHUNK, canonical_json({"n": 2}))
            blobs = getattr(store.backend, "blobs", None)
            if blobs is not None:
                blobs.delete_many([oid])  # the bytes go, the index row stays
            else:
                assert store.backend.delete_objects([oid], time.time() + 3600)[0] == 1
            report = store.fsck()
            assert not report.ok
            [problem] = [p for p in report.problems if p.object_id == oid.hex()]
            assert problem.kind == "missing"
            assert sorted(problem.affects) == [("a", 1), ("a", 2)]
        finally:
            store.close()

    # --- crash between object write and pointer move -----------------------------------------

    def test_killed_writer_loses_nothing_acknowledged(self, location: str) -> None:
        ctx = mp.get_context("spawn")
        acks = ctx.Queue()
        proc = ctx.Process(target=_write_forever, args=(location, acks))
        proc.start()
        seen = []
        try:
            while len(seen) < 20:
                seen.append(acks.get(timeout=60))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(30)
        while not acks.empty():
            seen.append(acks.get())
        store = Store(open_backend(location))
        try:
            messages = store.load("s").messages
            assert len(messages) >= seen[-1]
            assert messages[: seen[-1]] == [{"i": i} for i in range(seen[-1])]
            assert store.fsck().ok
            # Whatever the kill left unreferenced is young: grace spares it; then it goes.
            gc(store, grace=3600)
            gc(store, grace=0)
            assert gc(store, grace=0).objects_swept == 0
            assert store.fsck().ok
            assert store.load("s").messages[: seen[-1]] == [{"i": i} for i in range(seen[-1])]
        finally:
            store.close()


def u(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def a(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def marked(snippet: str) -> list[str]:
    """Return the words of a snippet between hit marks (adjacent ones may share a mark)."""
    spans = re.findall(f"{HIT_START}(.*?){HIT_END}", snippet)
    return [w for span in spans for w in span.split()]


def found(store: Store, query: str, versions: str = "head") -> list[tuple[str, int, int]]:
    """Return (session, index, seq) of every hit, best first."""
    return [(h.session_id, h.index, h.seq)
            for h in store.search(query, limit=100, versions=versions).hits]


def _write_forever(location: str, acks: mp.Queue) -> None:  # type: ignore[type-arg]
    store = Store(open_backend(location))
    store.create("s", {}, [])
    i = 0
    while True:
        store.append("s", [{"i": i}])
        i += 1
        acks.put(i)
