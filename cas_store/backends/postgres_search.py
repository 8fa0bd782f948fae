"""The PostgreSQL backend's full-text search index: a tsvector per chunk, spans by version.

One row per distinct chunk (``search_docs``: its role, its text and the tsvector of its
folded words, built here rather than by ``to_tsvector`` so that words split as the query
side splits them, whatever the database's locale); spans (``search_spans``) say at which
index of which session a chunk sits from which version until which (``to_seq`` NULL: in
the head). A commit sends its spans and new docs in its own pipelined transaction
(docs/search.md).

``SearchIndex`` is the part of ``PostgresBackend`` that keeps this index; it runs on the
backend's connections and transactions.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import CorruptObject, StorageError
from ..objects import Kind, Oid, decompress
from ..search import message_fields
from .base import (
    HIT_END,
    HIT_START,
    Commit,
    HeadRow,
    IndexUpdate,
    LogEntry,
    SearchHit,
    SearchTerm,
    chunked,
    index_problems,
)

if TYPE_CHECKING:
    from psycopg import Connection

_OPEN = 2**62  # to_seq of a span still in the head, for range comparisons
_IDS_PER_QUERY = 1000  # as the backend's: one = ANY(...) array, a bounded statement

# A tsvector holds at most 1 MB, a lexeme 2 KB, positions up to 16,383: words past those
# limits are left out of the index (docs/design.md, "Search on PostgreSQL").
_MAX_VECTOR = 900_000
_MAX_LEXEME = 500
_MAX_POS = 16383
_WORD = re.compile(r"[^\W_]+")
_SNIPPET_TOKENS = 24


def _fold(text: str) -> str:
    """Return text as the index compares it: diacritics removed, case folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _lexemes(token: str) -> list[str]:
    return [w for w in _WORD.findall(_fold(token)) if len(w.encode()) <= _MAX_LEXEME]


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _vector(text: str) -> str:
    """Return the tsvector literal of a text: each folded word with its positions.

    Built here, not by to_tsvector: the words are the ones the query side splits
    (search.py), whatever the database's locale, and diacritics are folded as SQLite's
    index folds them.
    """
    positions: dict[str, list[int]] = {}
    pos = 0
    for m in _WORD.finditer(text):
        for lex in _lexemes(m.group()):
            pos += 1
            got = positions.setdefault(lex, [])
            if len(got) < 256 and pos <= _MAX_POS:  # tsvector's own limits
                got.append(pos)
    out: list[str] = []
    size = 0
    for lex, where in positions.items():
        item = _quote(lex) + (":" + ",".join(map(str, where)) if where else "")
        size += len(item.encode()) + 1
        if size > _MAX_VECTOR:
            break
        out.append(item)
    return " ".join(out)


def _tsquery(terms: Sequence[SearchTerm]) -> str:
    """Return the tsquery literal of the terms: phrases by <->, a prefix by :*, all by &.

    Every word is a quoted lexeme, so nothing a user typed is tsquery syntax.
    """
    parts = []
    for t in terms:
        words = [lex for w in t.words for lex in _lexemes(w)] or ["\ue000"]
        lexemes = [_quote(w) for w in words]
        if t.prefix:
            lexemes[-1] += ":*"
        parts.append("(" + " <-> ".join(lexemes) + ")")
    return " & ".join(parts)


def _snippet(text: str, terms: Sequence[SearchTerm]) -> str:
    """Return the text around the first match, each matched word between the hit marks."""
    exact = {lex for t in terms for w in t.words for lex in _lexemes(w)}
    prefixes = tuple(_lexemes(t.words[-1])[-1] for t in terms
                     if t.prefix and _lexemes(t.words[-1]))
    tokens = list(_WORD.finditer(text))
    hits = [i for i, m in enumerate(tokens)
            if any(lex in exact or lex.startswith(prefixes) for lex in _lexemes(m.group()))]
    if not tokens:
        return text[:200]
    first = hits[0] if hits else 0
    start = max(0, min(first - _SNIPPET_TOKENS // 4, len(tokens) - _SNIPPET_TOKENS))
    end = min(len(tokens), start + _SNIPPET_TOKENS)
    marked = set(hits)
    pieces = ["…" if start > 0 else text[: tokens[0].start()]]
    for i in range(start, end):
        m = tokens[i]
        if i > start:
            pieces.append(text[tokens[i - 1].end() : m.start()])
        # Adjacent matched words share one mark (a phrase reads as one hit, as in FTS5).
        opens = i in marked and (i == start or i - 1 not in marked)
        closes = i in marked and (i == end - 1 or i + 1 not in marked)
        pieces.append((HIT_START if opens else "") + m.group() + (HIT_END if closes else ""))
    pieces.append("…" if end < len(tokens) else text[tokens[-1].end() :])
    return "".join(pieces)


def _doc(frame: bytes) -> tuple[str, str]:
    """Return (role, text) of a chunk's frame; a damaged one gives no words (fsck says so)."""
    try:
        role, text = message_fields(decompress(b"", frame, verify=False))
    except CorruptObject:
        return "", ""
    return role, text.replace("\x00", " ")


# The entry and head of the pseudo-commit whose docs a reindex looks up (never written).
_NO_ENTRY = LogEntry("", 0, Oid(b""), 0.0, "", 0, 0)
_NO_HEAD = HeadRow("", 0, Oid(b""), 0, 0, "", 0.0, 0.0)


class SearchIndex:
    """The search index's upkeep and queries, on the PostgreSQL backend's connections."""

    if TYPE_CHECKING:  # what it uses of PostgresBackend
        def _read(self, sql: str, params: Sequence[Any] = (), *, binary: bool = False
                  ) -> list[Any]: ...
        def _write(self) -> contextlib.AbstractContextManager[Connection[Any]]: ...
        def snapshot(self) -> contextlib.AbstractContextManager[None]:
            """Run this thread's reads inside one read transaction."""
        def get_frames(self, oids: Sequence[Oid]) -> dict[Oid, tuple[Kind, bytes]]:
            """Return (kind, frame) for each stored id."""

    supports_search = True


    def _docs(self, change: Commit) -> list[tuple[Oid, str, str, str]]:
        """Return (chunk, role, text, tsvector) of the added chunks the index may lack.

        New chunks come with their frames; a reused one is looked up, and only if it has
        no row (a store indexed before it was stored) are its bytes read, from PostgreSQL
        or the blob store.
        """
        assert change.index is not None
        add = list(dict.fromkeys(change.index.add))
        if not add:
            return []
        frames = {o.oid: o.frame for o in change.objects if o.frame is not None}
        rest = [o for o in add if o not in frames]
        if rest:
            indexed: set[bytes] = set()
            for part in chunked(rest, _IDS_PER_QUERY):
                indexed.update(bytes(r[0]) for r in self._read(
                    "SELECT oid FROM search_docs WHERE oid = ANY(%s)", (part,), binary=True))
            lacking = [o for o in rest if o not in indexed]
            if lacking:
                got = self.get_frames(lacking)
                if len(got) != len(lacking):
                    raise StorageError("a message to index is not stored")
                frames.update((o, frame) for o, (_, frame) in got.items())
            add = [o for o in add if o in frames]
        out = []
        for o in add:
            role, text = _doc(frames[o])
            out.append((o, role, text, _vector(text)))
        return out

    def _queue_index(self, conn: Connection[Any], sid: str, seq: int, change: Commit,
                     docs: Sequence[tuple[Oid, str, str, str]]) -> None:
        """Send the index's move with the commit: close the spans cut, open those added."""
        update = change.index
        assert update is not None
        conn.execute("UPDATE search_spans SET to_seq = %s WHERE sid = %s AND to_seq IS NULL"
                     " AND idx >= %s", (seq, sid, update.keep))
        self._queue_docs(conn, docs)
        if update.add:
            conn.execute(
                "INSERT INTO search_spans (sid, idx, from_seq, to_seq, oid)"
                " SELECT %s, %s + u.i - 1, %s, NULL, u.oid"
                " FROM unnest(%s::bytea[]) WITH ORDINALITY AS u(oid, i)"
                # A commit that lost the compare-and-swap meets the winner's rows here;
                # it is rolled back as a Conflict once its head's move is read back.
                " ON CONFLICT DO NOTHING",
                (sid, update.keep, seq, list(update.add)))

    @staticmethod
    def _queue_docs(conn: Connection[Any], docs: Sequence[tuple[Oid, str, str, str]]) -> None:
        if docs:
            # Rows in id order: two commits indexing the same new chunks wait, never
            # deadlock; the second finds the row and keeps it (each chunk indexed once).
            conn.execute(
                "INSERT INTO search_docs (oid, role, body, words)"
                " SELECT u.oid, u.role, u.body, u.words::tsvector FROM unnest(%s::bytea[],"
                " %s::text[], %s::text[], %s::text[]) AS u(oid, role, body, words)"
                " ORDER BY u.oid ON CONFLICT (oid) DO NOTHING",
                ([d[0] for d in docs], [d[1] for d in docs], [d[2] for d in docs],
                 [d[3] for d in docs]))


    def search(self, terms: Sequence[SearchTerm], *, limit: int, offset: int = 0,
               all_versions: bool = False) -> list[SearchHit]:
        """Match chunks by the GIN index, rank them by ts_rank, join them to where they sit.

        ``rank`` is the negated ts_rank, so lower is better as with SQLite's bm25.
        """
        query = _tsquery(terms)
        if all_versions:
            # A span names versions from_seq..to_seq-1; GC may have pruned some, so the
            # hit names the newest one still kept (and none is a hit no more).
            sql_ = (
                "SELECT sid, idx, max(seq), role, rank, oid FROM (SELECT s.sid AS sid,"
                " s.idx AS idx, d.role AS role, -ts_rank(d.words, q) AS rank, d.oid AS oid,"
                " (SELECT max(v.seq) FROM versions v WHERE v.sid = s.sid"
                f" AND v.seq >= s.from_seq AND v.seq < coalesce(s.to_seq, {_OPEN})) AS seq"
                " FROM search_docs d JOIN search_spans s ON s.oid = d.oid,"
                " CAST(%s AS tsquery) AS q WHERE d.words @@ q) AS found"
                " WHERE seq IS NOT NULL GROUP BY sid, idx, oid, role, rank"
                " ORDER BY rank, sid, idx LIMIT %s OFFSET %s"
            )
        else:
            sql_ = (
                "SELECT s.sid, s.idx, h.seq, d.role, -ts_rank(d.words, q) AS rank, d.oid"
                " FROM search_docs d JOIN search_spans s ON s.oid = d.oid AND s.to_seq IS NULL"
                " JOIN sessions h ON h.sid = s.sid, CAST(%s AS tsquery) AS q"
                " WHERE d.words @@ q ORDER BY rank, s.sid, s.idx LIMIT %s OFFSET %s"
            )
        with self.snapshot():
            if self.search_state() != "ready":
                raise StorageError("the search index is not built (or is being rebuilt):"
                                   " run `cas-store reindex`")
            rows = self._read(sql_, (query, limit, offset))
            oids = list(dict.fromkeys(bytes(r[5]) for r in rows))
            bodies = {bytes(o): body for o, body in self._read(
                "SELECT oid, body FROM search_docs WHERE oid = ANY(%s)", (oids,))} if oids else {}
        snippets = {o: _snippet(body, terms) for o, body in bodies.items()}
        return [SearchHit(sid, int(idx), int(seq), role, snippets.get(bytes(oid), ""),
                          float(rank)) for sid, idx, seq, role, rank, oid in rows]

    def search_state(self) -> str:
        """Return "ready", "building" or "stale" (kept in store_info)."""
        rows = self._read("SELECT value FROM store_info WHERE key = 'search'")
        return str(rows[0][0]) if rows else "stale"

    def _set_search_state(self, conn: Connection[Any], state: str) -> None:
        conn.execute("INSERT INTO store_info VALUES ('search', %s) ON CONFLICT (key)"
                     " DO UPDATE SET value = excluded.value", (state,))

    def search_reset(self) -> None:
        """Empty spans and docs in one transaction; mark "building"."""
        with self._write() as conn:
            conn.execute("DELETE FROM search_spans")
            conn.execute("DELETE FROM search_docs")
            self._set_search_state(conn, "building")

    def search_load(self, sid: str, head_seq: int,
                    spans: Sequence[tuple[int, Oid, int, int | None]]) -> bool:
        """Replace the session's spans if its head is still head_seq, in one transaction."""
        chunks = list(dict.fromkeys(o for _, o, _, _ in spans))
        docs = self._docs(Commit(0, (), _NO_ENTRY, _NO_HEAD, (), IndexUpdate(0, chunks)))
        with self._write() as conn:
            # FOR UPDATE: a commit moving this head waits until the spans are in.
            row = conn.execute("SELECT seq FROM sessions WHERE sid = %s FOR UPDATE",
                               (sid,)).fetchone()
            if (row[0] if row else 0) != head_seq:
                return False
            conn.execute("DELETE FROM search_spans WHERE sid = %s", (sid,))
            self._queue_docs(conn, docs)
            if spans:
                conn.execute(
                    "INSERT INTO search_spans (sid, idx, from_seq, to_seq, oid)"
                    " SELECT %s, u.idx, u.since, u.until, u.oid FROM unnest(%s::bigint[],"
                    " %s::bytea[], %s::bigint[], %s::bigint[]) AS u(idx, oid, since, until)",
                    (sid, [i for i, _, _, _ in spans], [o for _, o, _, _ in spans],
                     [f for _, _, f, _ in spans], [t for _, _, _, t in spans]))
        return True

    def search_ready(self) -> None:
        """Mark the index "ready"."""
        with self._write() as conn:
            self._set_search_state(conn, "ready")

    def search_spans(self, sid: str) -> list[tuple[int, Oid]]:
        """Return the head's (index, chunk) rows, by index."""
        rows = self._read("SELECT idx, oid FROM search_spans WHERE sid = %s AND to_seq IS NULL"
                          " ORDER BY idx", (sid,))
        return [(int(i), Oid(bytes(o))) for i, o in rows]

    def search_check(self, *, compare_text: bool = True) -> list[str]:
        """Check spans and docs against objects; with compare_text, each doc's words."""
        orphans = self._read("SELECT count(*) FROM search_spans s WHERE NOT EXISTS"
                             " (SELECT 1 FROM search_docs d WHERE d.oid = s.oid)")[0][0]
        gone = self._read("SELECT count(*) FROM search_docs d LEFT JOIN objects o"
                          " ON o.oid = d.oid WHERE o.oid IS NULL OR o.kind != %s",
                          (int(Kind.CHUNK),))[0][0]
        out = index_problems(orphans, gone)
        if compare_text:
            wrong = 0
            last = b""
            while True:
                page = [bytes(r[0]) for r in self._read(
                    "SELECT oid FROM search_docs WHERE oid > %s ORDER BY oid LIMIT 500",
                    (last,), binary=True)]
                if not page:
                    break
                last = page[-1]
                frames = self.get_frames([Oid(o) for o in page])
                want = [(o, *_doc(frames[Oid(o)][1])) for o in page if Oid(o) in frames]
                wrong += int(self._read(
                    "SELECT count(*) FROM unnest(%s::bytea[], %s::text[], %s::text[],"
                    " %s::text[]) AS u(oid, role, body, words) JOIN search_docs d"
                    " ON d.oid = u.oid WHERE d.role <> u.role OR d.body <> u.body"
                    " OR d.words <> u.words::tsvector",
                    ([w[0] for w in want], [w[1] for w in want], [w[2] for w in want],
                     [_vector(w[2]) for w in want]))[0][0])
            if wrong:
                out.append(f"the full-text index does not match the messages' text"
                           f" ({wrong} messages differ)")
        return out

    def search_bytes(self) -> int:
        """Return the bytes of the index's tables and their indexes."""
        rows = self._read(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace"
            " AND c.relname IN ('search_docs', 'search_spans')")
        return int(rows[0][0])
