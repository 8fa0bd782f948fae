"""Full-text search: hits, query language, the index following every write, fsck, reindex."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cas_store import InvalidArgument, Op, Store, gc, open_store
from cas_store.cli import app
from cas_store.errors import CorruptStore, StorageError
from cas_store.search import message_fields, parse_query


def u(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def a(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def where(store: Store, q: str, **kw: object) -> list[tuple[str, int, int]]:
    return [(h.session_id, h.index, h.seq) for h in store.search(q, **kw).hits]  # type: ignore[arg-type]


@pytest.mark.all_backends
def test_hits_name_session_index_seq_role_and_mark_the_words(store: Store) -> None:
    store.create("s1", {}, [u("how do I deploy the app"), a("use blue green deploys")])
    store.append("s1", [u("thanks")])
    [hit] = store.search("green").hits
    assert (hit.session_id, hit.index, hit.seq, hit.role) == ("s1", 1, 2, "assistant")
    assert hit.snippet_text == "use blue green deploys"
    assert hit.to_json()["snippet"] == "use blue <mark>green</mark> deploys"


@pytest.mark.all_backends
def test_ranking_phrases_prefixes_and_any_script(store: Store) -> None:
    store.create("s", {}, [u("kafka"), u("kafka kafka kafka streams"), u("the blue green idea"),
                           u("green and blue"), u("Привет, мир"), u("café crème"),
                           u("Ελληνικά γράμματα"), u("deployment deployed")])
    assert where(store, "kafka")[0][1] == 1  # the denser match ranks first
    assert [i for _, i, _ in where(store, '"blue green"')] == [2]
    assert sorted(i for _, i, _ in where(store, "blue green")) == [2, 3]
    assert [i for _, i, _ in where(store, "deploy*")] == [7]
    assert [i for _, i, _ in where(store, "мир")] == [4]
    assert [i for _, i, _ in where(store, "cafe")] == [5]  # diacritics folded
    assert [i for _, i, _ in where(store, "ΓΡΆΜΜΑΤΑ")] == [6]  # and case
    assert where(store, "kafk") == []  # whole words unless a prefix is asked for


def test_content_parts_and_tool_calls_are_searchable() -> None:
    assert message_fields(b'{"role":"user","content":[{"type":"text","text":"hello"},'
                          b'{"type":"image_url","image_url":{"url":"data:xyz"}}]}') == (
        "user", "hello")
    role, text = message_fields(b'{"role":"assistant","tool_calls":[{"id":"c1","function":'
                                b'{"name":"get_weather","arguments":"{\\"city\\":\\"Oslo\\"}"}}]}')
    assert role == "assistant" and "get_weather" in text and "Oslo" in text
    assert message_fields(b"not json") == ("", "")


@pytest.mark.all_backends
@pytest.mark.parametrize("query", [
    'a" OR "b', "NEAR(a b)", "col:word", "^start", "a AND", "(", ")", '"', '""', "*", "-x",
    "a - b", "'; DROP TABLE objects; --", "\\", "{a b}", "a + b", "x:*", "OR", "NOT a",
    "\x00", "a\x00b", "🙂 emoji", "a" * 900,
])
def test_hostile_queries_never_break(store: Store, query: str) -> None:
    store.create("s", {}, [u("a b x word start OR NOT emoji")])
    try:
        store.search(query)
    except InvalidArgument as exc:
        assert exc.field == "q"


def test_queries_without_words_are_refused_clearly() -> None:
    for q in ["", "   ", "*", '""', "!!!", "\x00"]:
        with pytest.raises(InvalidArgument, match="query"):
            parse_query(q)
    assert [t.words for t in parse_query('a "b c" d*')] == [("a",), ("b", "c"), ("d",)]
    assert [t.prefix for t in parse_query('a "b c"* d*')] == [False, True, True]


def test_each_distinct_message_is_indexed_once(store: Store, store_path: Path) -> None:
    shared = [u(f"shared message {i}") for i in range(20)]
    store.create("a", {}, shared)
    for i in range(10):
        store.fork("a", f"f{i}")
        store.append(f"f{i}", [u(f"own {i}")])
    # The index takes the commits in at the first search after them.
    assert len(store.search('"shared message 3"', limit=100).hits) == 11
    con = sqlite3.connect(store_path)
    assert con.execute("SELECT count(*) FROM search_docs").fetchone()[0] == 30


@pytest.mark.all_backends
def test_the_index_follows_every_write(store: Store) -> None:
    store.create("s", {}, [u("alpha"), u("beta")])
    store.append("s", [u("gamma")])
    assert where(store, "gamma") == [("s", 2, 2)]
    store.save("s", [u("alpha")], {})  # a suspect shrink
    assert where(store, "gamma") == [] and where(store, "beta") == []
    store.append("s", [u("delta")])
    assert where(store, "delta") == [("s", 1, 4)]
    [action] = store.recover("s").actions  # brings back what the shrink cut, keeps delta
    assert action.action == "recovered"
    assert where(store, "beta") == [("s", 1, 5)] and where(store, "delta") == [("s", 3, 5)]
    store.rewind("s", 1, [u("epsilon")])
    assert where(store, "epsilon") == [("s", 1, 6)]
    assert where(store, "delta") == []
    store.restore("s", 2)
    assert where(store, "gamma") == [("s", 2, 7)] and where(store, "epsilon") == []
    store.fork("s", "t", seq=1)
    assert where(store, "alpha") == [("s", 0, 7), ("t", 0, 1)]
    store.delete("s")
    assert where(store, "alpha") == [("t", 0, 1)]
    store.restore("s", 7)
    assert where(store, "gamma") == [("s", 2, 9)]
    store.update_metadata("s", {"title": "x"})
    assert where(store, "gamma") == [("s", 2, 10)]
    store.create("imp", {}, [u("imported words")], op=Op.IMPORT)
    store.save("imp", [u("imported words"), u("later")], {}, op=Op.IMPORT)
    assert where(store, "later") == [("imp", 1, 2)]
    assert store.fsck().ok


@pytest.mark.all_backends
def test_all_versions_finds_what_heads_no_longer_hold(store: Store) -> None:
    store.create("s", {}, [u("old idea")])
    store.rewind("s", 0, [u("new idea")])
    store.update_metadata("s", {"title": "t"})
    assert where(store, "old") == []
    assert where(store, "old", versions="all") == [("s", 0, 1)]
    assert where(store, "new", versions="all") == [("s", 0, 3)]
    with pytest.raises(InvalidArgument):
        store.search("old", versions="some")


@pytest.mark.all_backends
def test_pages_follow_the_cursor(store: Store) -> None:
    store.create("s", {}, [u(f"needle {i}") for i in range(7)])
    seen = []
    cursor = None
    while True:
        page = store.search("needle", limit=3, cursor=cursor)
        seen += [h.index for h in page.hits]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == list(range(7))
    with pytest.raises(InvalidArgument):
        store.search("needle", cursor="garbage!")


@pytest.mark.all_backends
def test_gc_sweeps_indexed_messages_cleanly(store: Store) -> None:
    store.create("s", {}, [u("ephemeral words")])
    store.rewind("s", 0, [u("kept words")])
    gc(store, keep_last=1, grace=0)
    assert where(store, "ephemeral", versions="all") == []
    store.create("n", {}, [u("fresh words")])  # may reuse a swept chunk's rowid
    assert where(store, "fresh") == [("n", 0, 1)]
    assert where(store, "ephemeral") == []
    assert store.fsck().ok


def test_fsck_finds_a_damaged_index_and_reindex_repairs_it(store: Store,
                                                           store_path: Path) -> None:
    store.create("s", {}, [u("one"), u("two")])
    store.append("s", [u("three")])
    assert store.search("one", limit=1).hits  # the index has taken both versions in
    con = sqlite3.connect(store_path)
    with con:
        con.execute("DELETE FROM search_spans WHERE idx = 1")
    con.close()
    report = store.fsck()
    assert [p.kind for p in report.problems] == ["search_index"]
    assert "reindex" in report.problems[0].detail
    r = store.reindex()
    assert (r.sessions, r.versions) == (1, 2)
    assert store.fsck().ok
    assert where(store, "two") == [("s", 1, 2)]


_WRITER = """
import sys
from cas_store import open_store
s = open_store(sys.argv[1])
i = 0
while True:
    s.append("k", [{"role": "user", "content": f"word{i} common"}])
    i += 1
"""


@pytest.mark.all_backends
def test_the_index_survives_sigkill(store: Store, store_path: Path) -> None:
    store.create("k", {}, [])
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(store_path)])
    try:
        deadline = time.monotonic() + 60
        while store.backend.head("k").seq < 30 and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with open_store(store_path) as after:
        assert after.fsck().ok
        count = after.backend.head("k").message_count  # type: ignore[union-attr]
        assert len(after.search("common", limit=100).hits) == min(count, 100)
        assert where(after, f"word{count - 1}") == [("k", count - 1, count + 1)]


@pytest.mark.all_backends
def test_cli_search_and_reindex(store: Store, store_path: Path) -> None:
    store.create("s", {}, [u("the quick brown fox")])
    runner = CliRunner()
    r = runner.invoke(app, ["--store", str(store_path), "search", "quick"])
    assert r.exit_code == 0, r.output
    header, row = r.stdout.splitlines()  # a header row first, also in a pipe
    assert header.split("\t")[:4] == ["session", "index", "seq", "role"]
    assert row.split("\t")[:4] == ["s", "0", "1", "user"]
    assert "[quick]" in r.stdout
    r = runner.invoke(app, ["--store", str(store_path), "search", "***"])
    assert r.exit_code != 0 and "no words" in r.stderr
    r = runner.invoke(app, ["--store", str(store_path), "reindex", "--json"])
    assert r.exit_code == 0 and '"sessions": 1' in r.stdout


def test_a_pending_mark_that_never_clears_fails_the_search_not_loops(tmp_path: Path) -> None:
    # New messages wait (pending) until the next search puts their words in; a damaged
    # index that keeps returning messages already done (here a trigger sets the mark
    # again) must end in a clear error, not a loop that never returns.
    path = tmp_path / "s.db"
    with open_store(path) as store:
        store.create("a", {}, [u(f"message number {i}") for i in range(700)])
    with sqlite3.connect(path) as con:
        con.execute("CREATE TRIGGER stays_pending AFTER UPDATE OF pending ON search_docs"
                    " WHEN NEW.pending = 0 BEGIN UPDATE search_docs SET pending = 1"
                    " WHERE doc = NEW.doc; END")
    with open_store(path) as store, pytest.raises(CorruptStore, match="reindex"):
        store.search("number")
    with sqlite3.connect(path) as con:
        con.execute("DROP TRIGGER stays_pending")
    with open_store(path) as store:
        assert len(store.search("number", limit=5).hits) == 5


# --- the index follows the log after the commit (SQLite: sqlite_search.py, "catch-up") ----


@pytest.mark.all_backends
def test_versions_gc_prunes_before_any_search_keep_the_heads_messages_found(
        store: Store, store_path: Path) -> None:
    # An append's change to the index waits in its log entry until the next search; GC
    # pruning those entries first must not take their messages out of the head's index.
    store.create("s", {}, [u("alpha zero")])
    for word in ("one", "two", "three", "four", "five"):
        store.append("s", [u(f"alpha {word}")])
    report = gc(store, keep_last=1, grace=0)
    assert report.versions_pruned == 5
    with open_store(store_path) as again:  # a fresh handle, as after a restart
        assert sorted(i for _, i, _ in where(again, "alpha", limit=100)) == list(range(6))
        assert where(again, "three") == [("s", 3, 6)]
        assert again.fsck().ok


@pytest.mark.all_backends
def test_small_and_large_commits_reach_the_index_in_commit_order(store: Store) -> None:
    # Small commits are taken in at the next search, a large one (an import) at once,
    # after every small one before it: the spans must come out as if each had been
    # indexed by its own commit.
    store.create("s", {}, [u(f"word m{i}") for i in range(3)])  # v1
    store.append("s", [u("word tail")])  # v2
    store.append("s", [u(f"word bulk{i}") for i in range(40)])  # v3: a large commit
    store.save("s", [u(f"word m{i}") for i in range(3)] + [u("word other")])  # v4: a cut
    assert sorted(i for _, i, _ in where(store, "word", limit=100)) == [0, 1, 2, 3]
    assert where(store, "other") == [("s", 3, 4)]
    assert where(store, "tail") == []
    assert where(store, "tail", versions="all") == [("s", 3, 3)]
    assert where(store, "bulk39", versions="all") == [("s", 43, 3)]
    assert store.fsck().ok


def test_a_damaged_entry_for_the_index_fails_the_search_and_reindex_repairs_it(
        store: Store, store_path: Path) -> None:
    store.create("s", {}, [u("one")])
    store.append("s", [u("two")])
    with sqlite3.connect(store_path) as con:
        assert con.execute("UPDATE versions SET iadd = x'00' WHERE seq = 2").rowcount == 1
    with pytest.raises(CorruptStore, match="log entry"):
        store.search("two")
    report = store.fsck()
    assert any(p.kind == "search_index" and "cannot be read" in p.detail
               for p in report.problems)
    store.reindex()
    assert where(store, "two") == [("s", 1, 2)]
    assert store.fsck().ok


def test_a_damaged_entry_for_the_index_stops_no_commit_and_no_gc(store: Store,
                                                                  store_path: Path) -> None:
    # The index is derived: a large commit (which takes the log in first) and a GC prune
    # (likewise) go on past an entry it cannot read, leaving the index stale for reindex.
    store.create("s", {}, [u("one")])
    store.append("s", [u("two")])
    with sqlite3.connect(store_path) as con:
        con.execute("UPDATE versions SET iadd = x'00' WHERE seq = 2")
    store.append("s", [u(f"bulk {i}") for i in range(40)])
    assert gc(store, keep_last=1, grace=0).versions_pruned == 2
    with pytest.raises(StorageError, match="reindex"):
        store.search("two")
    store.reindex()
    assert where(store, "two") == [("s", 1, 3)]
    assert len(store.search("bulk", limit=100).hits) == 40
    assert store.fsck().ok
