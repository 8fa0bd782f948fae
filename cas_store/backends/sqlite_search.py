"""The SQLite backend's full-text search index: FTS5 over the chunks' own text.

FTS5 with external content: the content is a view (``search_text``) that reads each
chunk's text out of its stored frame, or out of its pack, through ``cas_message_text``
(registered on every connection), so no text is stored twice. One document per distinct
chunk (``search_docs``, keyed by the chunk row's rowid); spans (``search_spans``) say at
which index of which session a chunk sits from which version until which (``to_seq``
NULL: in the head). A commit's log entry carries how it changed the head's list; the
next search (or GC, before pruning) takes the entries in, in commit order,
writing spans and marking new documents pending; their words go into FTS5 before the
search reads (docs/search.md).

``SearchIndex`` is the part of ``SQLiteBackend`` that keeps this index; it runs on the
backend's connections and transactions.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import CasError, CorruptObject, CorruptStore, InvalidArgument, StorageError
from ..objects import OID_SIZE, Kind, Oid, decompress
from ..packs import parse_ref
from ..search import message_fields
from . import sqlite_packs as SP
from .base import (
    HIT_END,
    HIT_START,
    Commit,
    IndexUpdate,
    SearchHit,
    SearchTerm,
    index_problems,
)

_OPEN = 2**62  # to_seq of a span still in the head, for range comparisons
#: Most chunk ids a log entry carries for the index (see _index_later): an append's
#: few; a larger commit is indexed with its commit, as every commit was before.
DEFER_MAX = 32


def _fields(frame: bytes) -> tuple[str, str]:
    try:
        return message_fields(decompress(b"", frame, verify=False))
    except CorruptObject:
        return "", ""  # fsck reports the object; the index just has no words for it


def message_text(data: bytes | None) -> str:
    """Return the text of a chunk's stored frame ("" if it is unreadable)."""
    return _fields(data)[1] if isinstance(data, bytes) else ""


def packed_text(kind: int, data: bytes | None, pack: bytes | None) -> str:
    """Return the text of a chunk row of either form (pack: its pack's frame); "" if unreadable."""
    if not isinstance(data, bytes):
        return ""
    if kind != SP.PACKED:
        return message_text(data)
    try:
        pack_oid, i = parse_ref(data)
        got = SP.decoded(pack_oid, pack) if isinstance(pack, bytes) else None
    except ValueError:
        return ""
    return message_fields(got.member(i))[1] if got is not None and i < len(got) else ""


_SEARCH_AT = "SELECT value FROM store_info WHERE key = 'search_at'"


def _position(rows: Sequence[Any]) -> int:
    """Return the log cursor up to which the index has taken the log in (a _SEARCH_AT read)."""
    try:
        return int(rows[0][0]) if rows else 0
    except (TypeError, ValueError):
        raise CorruptStore("the search index is damaged (its position in the log reads"
                           f" {rows[0][0]!r}); run `cas-store reindex`") from None


def _carried(sid: str, seq: int, keep: Any, add: Any) -> IndexUpdate:
    """Return the change a log entry carries for the index; CorruptStore if it is damaged."""
    if not (isinstance(keep, int) and isinstance(add, bytes) and len(add) % OID_SIZE == 0):
        raise CorruptStore(f"the database file is damaged: the log entry {sid!r} {seq} holds"
                           " a value of the wrong type; run `cas-store reindex`")
    return IndexUpdate(keep, tuple(Oid(add[i : i + OID_SIZE])
                                   for i in range(0, len(add), OID_SIZE)))


def _fts_query(terms: Sequence[SearchTerm]) -> str:
    # Every word is quoted (a quote doubled), so nothing a user typed is FTS5 syntax.
    parts = []
    for t in terms:
        phrase = '"' + " ".join(w.replace('"', '""') for w in t.words) + '"'
        parts.append(phrase + ("*" if t.prefix else ""))
    return " AND ".join(parts)


class SearchIndex:
    """The search index's upkeep and queries, on the SQLite backend's connections."""

    if TYPE_CHECKING:  # what it uses of SQLiteBackend
        _packs: SP.PackCache

        def _con(self) -> sqlite3.Connection: ...
        def _write(self, con: sqlite3.Connection) -> contextlib.AbstractContextManager[None]: ...
        def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...
        def _translate(self, exc: sqlite3.Error | UnicodeDecodeError,
                       context: str | None = None) -> CasError: ...
        def snapshot(self) -> contextlib.AbstractContextManager[None]:
            """Run this thread's reads inside one read transaction."""

    def _docs(self, con: sqlite3.Connection, oids: Sequence[Oid], *,
              defer: bool = False) -> dict[Oid, int]:
        """Return each chunk's doc id (its rowid), adding those not in search_docs yet.

        With defer, a new doc is only marked pending: its words go into FTS5 at the next
        search (``_flush``), many per transaction. An FTS5 insert per commit costs a
        segment write and its share of merging (measured: the larger part of what the
        index adds to an append); pending rows are in the commit's own transaction, so
        a crash loses none of them.
        """
        out: dict[Oid, int] = {}
        # For a new doc: its frame, or (deferred) an empty blob, as "new" needs no bytes.
        fetch = "x''" if defer else "o.data"
        query = self._on(con)
        unique = list(dict.fromkeys(oids))
        for part in (unique[i : i + 100] for i in range(0, len(unique), 100)):
            # A hundred at a time: a big import's text is never all in memory at once.
            marks = ",".join("?" * len(part))
            new: list[tuple[int, int, bytes]] = []
            for oid, rowid, kind, data in con.execute(
                f"SELECT o.oid, o.rowid, o.kind, CASE WHEN d.doc IS NULL THEN {fetch} END"
                " FROM objects o LEFT JOIN search_docs d ON d.doc = o.rowid"
                f" WHERE o.oid IN ({marks})", part
            ):
                out[Oid(bytes(oid))] = rowid
                if data is not None:
                    new.append((rowid, kind, data))
            if new and defer:
                con.executemany("INSERT INTO search_docs (doc, role, pending) VALUES (?, '', 1)",
                                [(d,) for d, _, _ in new])
            elif new:
                fields = [(d, *self._row_fields(query, kind, data)) for d, kind, data in new]
                con.executemany("INSERT INTO search_docs (doc, role) VALUES (?, ?)",
                                [(d, role) for d, role, _ in fields])
                con.executemany("INSERT INTO search_fts (rowid, body) VALUES (?, ?)",
                                [(d, text) for d, _, text in fields])
        if any(o not in out for o in unique):
            # Gone, or a damaged id index that answers with another row: either way the
            # message cannot be indexed (fsck names the damage).
            raise StorageError("a message to index is not stored")
        return out

    def _flush(self) -> None:
        """Put the words of pending docs into FTS5, 500 per transaction (before a search)."""
        if not self._read("SELECT 1 FROM search_docs WHERE pending = 1 LIMIT 1"):
            return
        con = self._con()
        done: set[int] = set()
        while True:
            with self._write(con):
                rows = con.execute(
                    "SELECT d.doc, o.kind, o.data FROM search_docs d JOIN objects o"
                    " ON o.rowid = d.doc WHERE d.pending = 1 LIMIT 500").fetchall()
                if any(d in done for d, _, _ in rows):
                    # A damaged pending index keeps returning docs marked done: stop
                    # rather than loop for ever.
                    raise CorruptStore("the search index is damaged (a message it indexed"
                                       " stays pending); run `cas-store reindex`, then"
                                       " `cas-store fsck`")
                done.update(d for d, _, _ in rows)
                query = self._on(con)
                fields = [(d, *self._row_fields(query, kind, data)) for d, kind, data in rows]
                con.executemany("INSERT INTO search_fts (rowid, body) VALUES (?, ?)",
                                [(d, text) for d, _, text in fields])
                con.executemany("UPDATE search_docs SET role = ?, pending = 0 WHERE doc = ?",
                                [(role, d) for d, role, _ in fields])
            if len(rows) < 500:
                return

    @staticmethod
    def _on(con: sqlite3.Connection) -> SP.Query:
        return lambda sql, params: con.execute(sql, params).fetchall()

    def _row_fields(self, query: SP.Query, kind: int, data: bytes) -> tuple[str, str]:
        """Return (role, text) of a chunk row of either form; ("", "") if it is unreadable.

        A packed one is read out of its pack (no frame is made for it); fsck reports
        an unreadable one, and the index just has no words for it.
        """
        payload = SP.payload(query, self._packs, kind, data)
        return ("", "") if payload is None else message_fields(payload)

    def _move_docs(self, con: sqlite3.Connection, moved: Sequence[tuple[int, int, bytes]]) -> None:
        """Renumber the search entries of chunk rows that moved (the doc id is the rowid).

        A doc whose words are in FTS5 already has them deleted under the old id (with
        the text indexed, as external content requires) and is marked pending, so the
        next search puts them back under the new one.
        """
        if not moved:
            return
        by_old = {old: (new, payload) for old, new, payload in moved}
        olds = list(by_old)
        for i in range(0, len(olds), 500):
            part = olds[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = con.execute(f"SELECT doc, pending FROM search_docs WHERE doc IN ({marks})",
                               part).fetchall()
            con.executemany(
                "INSERT INTO search_fts (search_fts, rowid, body) VALUES ('delete', ?, ?)",
                [(d, message_fields(by_old[d][1])[1]) for d, pending in rows if not pending])
            con.executemany("UPDATE search_docs SET doc = ?, pending = 1 WHERE doc = ?",
                            [(by_old[d][0], d) for d, _ in rows])
            con.executemany("UPDATE search_spans SET doc = ? WHERE doc = ?",
                            [(by_old[d][0], d) for d, _ in rows])

    def _index(self, con: sqlite3.Connection, sid: str, seq: int, update: IndexUpdate) -> None:
        """Move the session's spans with a version: close those cut, open those added."""
        con.execute("UPDATE search_spans SET to_seq = ? WHERE sid = ? AND to_seq IS NULL"
                    " AND idx >= ?", (seq, sid, update.keep))
        if update.add:
            docs = self._docs(con, update.add, defer=True)
            con.executemany(
                "INSERT INTO search_spans (sid, idx, from_seq, to_seq, doc)"
                " VALUES (?, ?, ?, NULL, ?)",
                [(sid, update.keep + i, seq, docs[o]) for i, o in enumerate(update.add)])

    def _index_later(self, con: sqlite3.Connection, change: Commit, cursor: int
                     ) -> tuple[int | None, bytes | None]:
        """Return what a commit's log entry carries for the index: (count kept, ids added).

        A commit adding more than DEFER_MAX chunks (an import, a fork) carries nothing:
        the index takes in every entry before it, then this one (log cursor ``cursor``)
        at once, in the commit's transaction (None, None).
        """
        update = change.index
        assert update is not None
        if len(update.add) <= DEFER_MAX:
            return update.keep, b"".join(update.add)
        self._catch_up_or_stale(con)
        self._index(con, change.entry.sid, change.entry.seq, update)
        con.execute("INSERT OR REPLACE INTO store_info VALUES ('search_at', ?)", (str(cursor),))
        return None, None

    def _catch_up_or_stale(self, con: sqlite3.Connection) -> None:
        """Take the log in before a write that needs it; if it cannot be, mark the index stale.

        The index is derived data: an entry it cannot read (a damaged row, a chunk gone)
        must not stop a commit or a GC. Search then answers "run `cas-store reindex`",
        which rebuilds it from the log; fsck names the damage.
        """
        con.execute("SAVEPOINT cas_catch_up")
        try:
            self._catch_up(con)
        except (CorruptStore, StorageError):
            con.execute("ROLLBACK TO cas_catch_up")
            self._set_search_state(con, "stale")
        con.execute("RELEASE cas_catch_up")

    def _catch_up(self, con: sqlite3.Connection, limit: int = -1) -> int:
        """Take log entries past 'search_at' into the index, in commit order (at most limit).

        Runs in the caller's write transaction; returns how many entries it read.
        """
        at = _position(con.execute(_SEARCH_AT).fetchall())
        rows = con.execute("SELECT sid, seq, cursor, ikeep, iadd FROM versions WHERE cursor > ?"
                           " ORDER BY cursor LIMIT ?", (at, limit)).fetchall()
        for sid, seq, _, keep, add in rows:
            if keep is not None:  # None: the list did not change, or the commit indexed itself
                self._index(con, sid, seq, _carried(sid, seq, keep, add))
        if rows:
            last = rows[-1][2]
            # Taken in: the entry need not carry it any more.
            con.execute("UPDATE versions SET ikeep = NULL, iadd = NULL WHERE cursor > ?"
                        " AND cursor <= ? AND ikeep IS NOT NULL", (at, last))
            con.execute("INSERT OR REPLACE INTO store_info VALUES ('search_at', ?)",
                        (str(last),))
        return len(rows)

    def search_catch_up(self) -> None:
        """Take every log entry the index lacks into it, 500 per transaction."""
        con = self._con()
        while True:
            with self._write(con):
                if self._catch_up(con, 500) < 500:
                    return

    def _carried_by(self, sid: str | None = None) -> list[tuple[str, int, IndexUpdate]]:
        """Return the changes log entries carry that the index has not taken in (read only).

        In commit order; of one session's entries, or of all. Raises CorruptStore for an
        entry that does not read as one. Call it inside a snapshot beside other reads.
        """
        at = _position(self._read(_SEARCH_AT))
        where = "" if sid is None else " AND sid = ?"
        rows = self._read("SELECT sid, seq, ikeep, iadd FROM versions WHERE cursor > ? AND"
                          f" ikeep IS NOT NULL{where} ORDER BY cursor",
                          (at,) if sid is None else (at, sid))
        return [(s, q, _carried(s, q, keep, add)) for s, q, keep, add in rows]

    def _unindex(self, con: sqlite3.Connection, oids: Sequence[Oid], before: float) -> None:
        """Take chunks about to be swept out of the index (their rowids may be reused)."""
        marks = ",".join("?" * len(oids))
        query = self._on(con)
        rows = [(r, "" if pending else self._row_fields(query, kind, data)[1], pending)
                for r, kind, data, pending
                in con.execute(
                    "SELECT o.rowid, o.kind, o.data, d.pending FROM objects o JOIN search_docs d"
                    f" ON d.doc = o.rowid WHERE o.oid IN ({marks}) AND o.wtime < ?",
                    (*oids, before)).fetchall()]
        if rows:
            # An external-content delete must be given the text that was indexed: the
            # chunk is immutable, so its text now is the text then. A pending doc has
            # nothing in FTS5 yet.
            con.executemany("INSERT INTO search_fts (search_fts, rowid, body)"
                            " VALUES ('delete', ?, ?)",
                            [(r, text) for r, text, pending in rows if not pending])
            con.executemany("DELETE FROM search_docs WHERE doc = ?", [(r,) for r, _, _ in rows])
            con.executemany("DELETE FROM search_spans WHERE doc = ?", [(r,) for r, _, _ in rows])

    def search(self, terms: Sequence[SearchTerm], *, limit: int, offset: int = 0,
               all_versions: bool = False) -> list[SearchHit]:
        """Rank chunks with FTS5's bm25, join them to where they sit, then snippet the page."""
        query = _fts_query(terms)
        if all_versions:
            # A span names versions from_seq..to_seq-1; GC may have pruned some, so the
            # hit names the newest one still kept (and none is a hit no more).
            sql = (
                "SELECT sid, idx, max(seq), role, rank, doc FROM (SELECT s.sid AS sid,"
                " s.idx AS idx, d.role AS role, f.rank AS rank, f.rowid AS doc,"
                " (SELECT max(v.seq) FROM versions v WHERE v.sid = s.sid"
                f" AND v.seq >= s.from_seq AND v.seq < coalesce(s.to_seq, {_OPEN})) AS seq"
                " FROM search_fts f JOIN search_spans s ON s.doc = f.rowid"
                " JOIN search_docs d ON d.doc = f.rowid WHERE search_fts MATCH ?)"
                " WHERE seq IS NOT NULL GROUP BY sid, idx, doc"
                " ORDER BY rank, sid, idx LIMIT ? OFFSET ?"
            )
        else:
            sql = (
                "SELECT s.sid, s.idx, h.seq, d.role, f.rank, f.rowid FROM search_fts f"
                " JOIN search_spans s ON s.doc = f.rowid AND s.to_seq IS NULL"
                " JOIN sessions h ON h.sid = s.sid JOIN search_docs d ON d.doc = f.rowid"
                " WHERE search_fts MATCH ? ORDER BY f.rank, s.sid, s.idx LIMIT ? OFFSET ?"
            )
        con = self._con()
        try:
            self.search_catch_up()
            self._flush()
            with self.snapshot():
                if self.search_state() != "ready":
                    raise StorageError("the search index is not built (or is being rebuilt):"
                                       " run `cas-store reindex`")
                rows = con.execute(sql, (query, limit, offset)).fetchall()
                snippets: dict[int, str] = {}
                for doc in dict.fromkeys(r[5] for r in rows):
                    got = con.execute(
                        "SELECT snippet(search_fts, 0, ?, ?, '…', 24) FROM search_fts"
                        " WHERE search_fts MATCH ? AND rowid = ?",
                        (HIT_START, HIT_END, query, doc)).fetchone()
                    snippets[doc] = got[0] if got else ""
        except sqlite3.OperationalError as exc:
            if "fts5" in str(exc):  # cannot happen with quoted words; never a 500 if it does
                raise InvalidArgument(f"cannot search for that: {exc}", field="q") from None
            raise self._translate(exc) from None
        return [SearchHit(sid, idx, seq, role, snippets[doc], rank)
                for sid, idx, seq, role, rank, doc in rows]

    def search_state(self) -> str:
        """Return "ready", "building" or "stale" (kept in store_info)."""
        rows = self._read("SELECT value FROM store_info WHERE key = 'search'")
        return str(rows[0][0]) if rows else "stale"

    def _set_search_state(self, con: sqlite3.Connection, state: str) -> None:
        con.execute("INSERT OR REPLACE INTO store_info VALUES ('search', ?)", (state,))

    def search_reset(self) -> None:
        """Empty spans, docs and the FTS index in one transaction; mark "building"."""
        con = self._con()
        with self._write(con):
            con.execute("DELETE FROM search_spans")
            con.execute("DELETE FROM search_docs")
            con.execute("INSERT INTO search_fts (search_fts) VALUES ('delete-all')")
            # Each session's load replays its log; the entries after it are taken in later.
            con.execute("UPDATE versions SET ikeep = NULL, iadd = NULL WHERE ikeep IS NOT NULL")
            con.execute("INSERT OR REPLACE INTO store_info SELECT 'search_at',"
                        " coalesce(max(cursor), 0) FROM versions")
            self._set_search_state(con, "building")

    def search_load(self, sid: str, head_seq: int,
                    spans: Sequence[tuple[int, Oid, int, int | None]]) -> bool:
        """Replace the session's spans if its head is still head_seq, in one transaction."""
        con = self._con()
        with self._write(con):
            row = con.execute("SELECT seq FROM sessions WHERE sid = ?", (sid,)).fetchone()
            if (row[0] if row else 0) != head_seq:
                return False
            con.execute("DELETE FROM search_spans WHERE sid = ?", (sid,))
            # The spans below replay the log up to head_seq: its entries are taken in.
            con.execute("UPDATE versions SET ikeep = NULL, iadd = NULL WHERE sid = ?"
                        " AND seq <= ? AND ikeep IS NOT NULL", (sid, head_seq))
            docs = self._docs(con, [o for _, o, _, _ in spans])
            con.executemany(
                "INSERT INTO search_spans (sid, idx, from_seq, to_seq, doc)"
                " VALUES (?, ?, ?, ?, ?)",
                [(sid, i, since, until, docs[o]) for i, o, since, until in spans])
        return True

    def search_ready(self) -> None:
        """Mark the index "ready"."""
        con = self._con()
        with self._write(con):
            self._set_search_state(con, "ready")

    def search_spans(self, sid: str) -> list[tuple[int, Oid]]:
        """Return the head's (index, chunk) rows, by index, as the index will hold them.

        The entries not taken in yet are applied to what the index holds here, in memory:
        fsck reads this, and changes nothing.
        """
        # One read state: a search taking the log in between the two reads would move
        # entries from the second into the first.
        with self.snapshot():
            rows = self._read("SELECT s.idx, o.oid FROM search_spans s JOIN objects o"
                              " ON o.rowid = s.doc WHERE s.sid = ? AND s.to_seq IS NULL"
                              " ORDER BY s.idx", (sid,))
            got = [(int(i), Oid(bytes(o))) for i, o in rows]
            try:
                carried = self._carried_by(sid)
            except CorruptStore:
                return got  # search_check names the damaged entry; the heads then differ
        for _, _, update in carried:
            got = [(i, o) for i, o in got if i < update.keep]
            got += [(update.keep + n, o) for n, o in enumerate(update.add)]
        return got

    def search_check(self, *, compare_text: bool = True) -> list[str]:
        """Check FTS5's index against the chunks' text, and spans and docs against objects."""
        out = []
        try:
            self._carried_by()
        except CorruptStore as exc:
            out.append(f"a version's change the index has not taken in cannot be read ({exc})")
        try:
            if compare_text:
                # With rank 1, FTS5 compares its index with the content (every chunk's text).
                self._read("INSERT INTO search_fts (search_fts, rank)"
                           " VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as exc:
            out.append(f"the full-text index does not match the messages' text ({exc})")
        orphans = self._read("SELECT count(*) FROM search_spans s LEFT JOIN search_docs d"
                             " ON d.doc = s.doc WHERE d.doc IS NULL")[0][0]
        gone = self._read("SELECT count(*) FROM search_docs d LEFT JOIN objects o"
                          " ON o.rowid = d.doc WHERE o.rowid IS NULL OR o.kind NOT IN (?, ?)",
                          (int(Kind.CHUNK), SP.PACKED))[0][0]
        return out + index_problems(orphans, gone)

    def search_bytes(self) -> int:
        """Return the bytes of the index's tables (dbstat), or 0 where SQLite lacks dbstat."""
        try:
            rows = self._read("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'search%'"
                              " OR name = 'sqlite_autoindex_search_spans_1'")
        except StorageError:
            return 0
        return int(rows[0][0] or 0)
