"""The embedded default backend: one SQLite file in WAL mode holding objects and the log.

Objects and the pointer move share one ``BEGIN IMMEDIATE`` transaction, so a commit is
all-or-nothing: a crash before COMMIT leaves the previous head and no half state, a
crash after it leaves the new head with every object it names. With
``synchronous=FULL`` (the default) an acknowledged commit survives power loss; with
``NORMAL`` it survives a process crash but the last commits may roll back on power loss.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import (
    CasError,
    Conflict,
    CorruptObject,
    CorruptStore,
    StorageError,
    StoreLocked,
    VersionNotFound,
)
from ..objects import OID_SIZE, Kind, Oid, parse_json
from . import sqlite_packs as SP
from . import sqlite_search as SS
from .base import (
    KINDS,
    LOAD_BATCH,
    Backend,
    Commit,
    CommitWatch,
    HeadRow,
    LogEntry,
    ObjectInfo,
    Retry,
    chunk_payloads,
    chunked,
    stored_kind,
)
from .sqlite_wal import WalKeeper

_BATCH = 500  # ids per IN (...) query: well under SQLite's variable limit, few round trips
# Python's sqlite3 raises UnicodeDecodeError where text in the file (a name in the schema,
# a message SQLite quotes from it) is not UTF-8: damage, like SQLITE_CORRUPT.
_DB_ERRORS = (sqlite3.Error, UnicodeDecodeError)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    oid   BLOB PRIMARY KEY,
    kind  INTEGER NOT NULL,
    size  INTEGER NOT NULL,
    data  BLOB NOT NULL,
    wtime REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    sid           TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    manifest      BLOB NOT NULL,
    created_at    REAL NOT NULL,
    op            TEXT NOT NULL,
    message_count INTEGER NOT NULL,
    nbytes        INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    PRIMARY KEY (sid, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    sid             TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL,
    manifest        BLOB NOT NULL,
    message_count   INTEGER NOT NULL,
    nbytes          INTEGER NOT NULL,
    title           TEXT NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    deleted         INTEGER NOT NULL,
    suspect_pending INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_update ON sessions (updated_at DESC, sid);
CREATE INDEX IF NOT EXISTS sessions_suspect ON sessions (sid) WHERE suspect_pending = 1;
"""

# Forward migrations: step i takes a store from schema version i + 1 to i + 2 (version 1 is
# _SCHEMA as first shipped). Each step is a list of statements run in the opening write
# transaction, so a crash mid-migration leaves the old version whole. Steps are only ever
# appended; a store newer than this code is refused rather than guessed at.
_MIGRATIONS: list[list[str]] = [
    # 2: the head's summary metadata values (JSON object text) for session lists.
    ["ALTER TABLE sessions ADD COLUMN summary TEXT NOT NULL DEFAULT '{}'"],
    # 3: the change feed: a store-wide cursor on every log entry, increasing in commit order,
    # and a counter row (never reused, even when GC drops the newest entries). Existing
    # entries are numbered by creation time.
    [
        "ALTER TABLE versions ADD COLUMN cursor INTEGER",
        "UPDATE versions SET cursor = n.n FROM (SELECT sid, seq, row_number() OVER"
        " (ORDER BY created_at, sid, seq) AS n FROM versions) AS n"
        " WHERE n.sid = versions.sid AND n.seq = versions.seq",
        "CREATE UNIQUE INDEX versions_by_cursor ON versions (cursor)",
        "INSERT OR REPLACE INTO store_info SELECT 'cursor', coalesce(max(cursor), 0)"
        " FROM versions",
    ],
    # 4: full-text search: FTS5 with external content. The content is a view that reads each
    # chunk's text out of its zstd frame (cas_message_text, registered per connection), so
    # no text is stored twice. One FTS row per distinct chunk (search_docs, keyed by the
    # chunk's rowid); spans say at which index of which session a chunk sits from which
    # version until which (to_seq NULL: in the head). A store with sessions already needs
    # `cas-store reindex` (marked stale).
    [
        "CREATE TABLE search_docs (doc INTEGER PRIMARY KEY, role TEXT NOT NULL,"
        " pending INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX search_docs_pending ON search_docs (doc) WHERE pending = 1",
        "CREATE VIEW search_text AS SELECT o.rowid AS doc, cas_message_text(o.data) AS body"
        " FROM search_docs d JOIN objects o ON o.rowid = d.doc WHERE d.pending = 0",
        "CREATE VIRTUAL TABLE search_fts USING fts5(body, content='search_text',"
        " content_rowid='doc', tokenize='unicode61 remove_diacritics 2')",
        "CREATE TABLE search_spans (sid TEXT NOT NULL, idx INTEGER NOT NULL,"
        " from_seq INTEGER NOT NULL, to_seq INTEGER, doc INTEGER NOT NULL,"
        " PRIMARY KEY (sid, idx, from_seq)) WITHOUT ROWID",
        "CREATE INDEX search_spans_by_doc ON search_spans (doc, to_seq)",
        "INSERT OR REPLACE INTO store_info SELECT 'search', CASE WHEN EXISTS"
        " (SELECT 1 FROM sessions) THEN 'stale' ELSE 'ready' END",
    ],
    # 5: packs (sqlite_packs.py): a chunk row of kind PACKED names its pack in the first 32
    # bytes of its data; GC asks "does any row still name this pack" through this index.
    # The search view reads a packed chunk's text from its pack.
    [
        f"CREATE INDEX objects_by_pack ON objects (substr(data, 1, 32)) WHERE kind = {SP.PACKED}",
        "DROP VIEW search_text",
        "CREATE VIEW search_text AS SELECT o.rowid AS doc, cas_message_text(o.kind, o.data,"
        " p.data) AS body FROM search_docs d JOIN objects o ON o.rowid = d.doc"
        f" LEFT JOIN objects p ON o.kind = {SP.PACKED} AND p.oid = substr(o.data, 1, 32)"
        " WHERE d.pending = 0",
    ],
    # 6: the search index follows the log after the commit (sqlite_search.py, "catch-up"):
    # a log entry carries how its commit changed the head's message list (the count kept,
    # the chunk ids added) until the index has taken it in; 'search_at' is the cursor up
    # to which it has. Every entry so far was indexed by its commit.
    [
        "ALTER TABLE versions ADD COLUMN ikeep INTEGER",
        "ALTER TABLE versions ADD COLUMN iadd BLOB",
        "INSERT OR REPLACE INTO store_info SELECT 'search_at', coalesce(max(cursor), 0)"
        " FROM versions",
    ],
    # 7: a commit no longer writes the 'cursor' row; the next cursor is one past the newest
    # entry's or that row's, whichever is larger (_NEXT_CURSOR), and only deleting log
    # entries raises the row. Code before this step would count on from the stale row and
    # hand a cursor out twice: the version bump keeps it from opening such a store.
    [],
]
SCHEMA_VERSION = 1 + len(_MIGRATIONS)

# The change feed's cursors. A commit takes one past the newest handed out, read from the
# log's cursor index and the 'cursor' row; the row is written only by what deletes log
# entries (which may take the newest with them), so a cursor is never handed out twice
# and an append writes one page fewer than a counter row bumped on every commit
# (docs/design.md, "Performance").
_LAST_CURSOR = ("SELECT max(coalesce((SELECT max(cursor) FROM versions), 0),"
                " coalesce((SELECT CAST(value AS INTEGER) FROM store_info"
                " WHERE key = 'cursor'), 0))")
_NEXT_CURSOR = f"SELECT 1 + ({_LAST_CURSOR})"
_KEEP_CURSOR = f"INSERT OR REPLACE INTO store_info SELECT 'cursor', ({_LAST_CURSOR})"

_INTENTIONAL = 1
_SUSPECT = 2

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")

#: Page size of a new store's file (SQLite's default is 4096; a file keeps the size it
#: was created with). Every table and index takes at least a page and an append rewrites
#: about seven, so half-size pages make a small store and its WAL smaller, and the last
#: page of each pack wastes less; loads measured alike. See docs/design.md, "Performance".
PAGE_SIZE = 2048

#: A connection that reads packs (a full load) reads the file through a memory map of up
#: to this many bytes from then on: the packs' overflow pages then come without a read()
#: each. Not at connect: mapping and unmapping cost a metadata read more than it saves.
MMAP_BYTES = 1 << 30


_NUM = (int, float)
_ENTRY_TYPES = (str, int, bytes, _NUM, str, int, int, int, (int, type(None)))
_HEAD_TYPES = (str, int, bytes, int, int, str, _NUM, _NUM, int, int, object)  # see _summary


def _checked(row: Sequence[Any], types: Sequence[Any], what: str) -> Sequence[Any]:
    # SQLite checks no column's type, and a damaged record header changes one: a value
    # of the wrong type is a damaged file, never a TypeError deep in the engine.
    if all(isinstance(v, t) for v, t in zip(row, types, strict=True)) \
            and len(row[2]) == OID_SIZE:
        return row
    raise CorruptStore(f"the database file is damaged: a {what} row ({str(row[0])[:80]!r})"
                       " holds a value of the wrong type; run `cas-store fsck` to see what"
                       " can still be read")


def _entry(row: Sequence[Any]) -> LogEntry:
    sid, seq, manifest, created_at, op, count, nbytes, flags, cursor = _checked(
        row, _ENTRY_TYPES, "version log")
    return LogEntry(
        sid=sid,
        seq=seq,
        manifest=Oid(bytes(manifest)),
        created_at=created_at,
        op=op,
        message_count=count,
        nbytes=nbytes,
        intentional_shrink=bool(flags & _INTENTIONAL),
        suspect_shrink=bool(flags & _SUSPECT),
        cursor=cursor or 0,
    )


def _head(row: Sequence[Any]) -> HeadRow:
    sid, seq, manifest, count, nbytes, title, created, updated, deleted, suspect, summary = (
        _checked(row, _HEAD_TYPES, "session"))
    return HeadRow(
        sid=sid,
        seq=seq,
        manifest=Oid(bytes(manifest)),
        message_count=count,
        nbytes=nbytes,
        title=title,
        created_at=created,
        updated_at=updated,
        deleted=bool(deleted),
        suspect_pending=bool(suspect),
        summary=_summary(summary),
    )


def _summary(text: Any) -> dict[str, Any]:
    # A copy of some metadata values for session lists, rewritten by every commit: a
    # damaged one (SQLite keeps no checksum of a text value) lists as empty rather
    # than failing every list that reaches its row.
    if text == "{}":
        return {}
    if not isinstance(text, str):
        return {}
    try:
        value = parse_json(text.encode())
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_HEAD_COLS = (
    "sid, seq, manifest, message_count, nbytes, title, created_at, updated_at, deleted,"
    " suspect_pending, summary"
)
_ONE_FRAME = "SELECT oid, kind, data FROM objects WHERE oid = ?"
_LOG_MANIFESTS = (
    "SELECT o.oid, o.kind, o.data FROM versions v JOIN objects o ON o.oid = v.manifest"
    " WHERE v.sid = ? AND v.seq < ? ORDER BY v.seq DESC LIMIT ?")
_VERSION_COLS = "sid, seq, manifest, created_at, op, message_count, nbytes, flags, cursor"
_MOVE_HEAD = (
    "UPDATE sessions SET seq = ?, manifest = ?, message_count = ?, nbytes = ?, title = ?,"
    " created_at = ?, updated_at = ?, deleted = ?, suspect_pending = ?, summary = ?"
    " WHERE sid = ? AND seq = ?"
)
_INSERT_HEAD = (
    "INSERT INTO sessions (seq, manifest, message_count, nbytes, title, created_at, updated_at,"
    " deleted, suspect_pending, summary, sid) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (sid) DO NOTHING"
)


class SQLiteBackend(SS.SearchIndex, Backend):
    """Objects and version log in one SQLite database file (WAL, one connection per thread)."""

    name = "sqlite"

    supports_search = True
    #: Leaf pages are packed as they are written (sqlite_packs.py); False writes none
    #: (a store written so still reads and loads, by its chunks).
    packs = True

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL",
                 busy_timeout: float = 30.0, index_search: bool = True) -> None:
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        # A plain string: an open is a few hundred µs, and pathlib's parsing was 2% of it.
        self.path = os.fspath(path)
        self.location = self.path
        self.synchronous = sync
        self.busy_timeout = busy_timeout
        # False only to measure what the index costs: commits then leave it behind
        # (marked stale, so search refuses and fsck says so until a reindex).
        self.index_search = index_search
        self._local = threading.local()
        self._packs = SP.PackCache()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._wal = WalKeeper(self.path, PAGE_SIZE, self._writer)
        parent = os.path.dirname(self.path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        #: Set when the file was found damaged while opening: writes are then refused with
        #: it, while reads go on where they can (so fsck and export can save what is left).
        self.damage: CorruptStore | None = None
        con = self._con()
        try:
            self._prepare(con)
        except CorruptStore as exc:
            self.damage = exc

    def _prepare(self, con: sqlite3.Connection) -> None:
        # A store already at this schema needs no write to open (so a read-only one still
        # opens, for reading).
        try:
            current = self._schema_current(con)
        except _DB_ERRORS as exc:
            raise self._translate(exc) from None
        if current:
            if not self.index_search:
                # Commits of this handle leave the search index behind: say so first.
                with self._write(con):
                    con.execute("UPDATE store_info SET value = 'stale' WHERE key = 'search'")
            return  # the common open: one read, no write transaction
        with self._write(con):
            tables = {r[0] for r in con.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table'")}
            lost = {"objects", "versions", "sessions"} - tables
            if "store_info" in tables and lost:
                # A store that has been written lost part of itself: recreating an empty
                # table would hide that its sessions or history are gone.
                raise CorruptStore(
                    f"{self.path}: the database file is damaged (its {', '.join(sorted(lost))}"
                    " table is missing); run `cas-store fsck`")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            row = con.execute("SELECT value FROM store_info WHERE key='schema'").fetchone()
            try:
                found = 1 if row is None else int(row[0])
            except (TypeError, ValueError):
                raise CorruptStore(f"{self.path}: the database file is damaged (its schema"
                                   f" version reads {row[0]!r}); run `cas-store fsck`"
                                   ) from None
            if found > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} has schema version {found}; this cas-store reads"
                    f" versions up to {SCHEMA_VERSION}"
                )
            for step in _MIGRATIONS[found - 1:]:
                for statement in step:
                    con.execute(statement)
            if row is None or found != SCHEMA_VERSION:
                con.execute("INSERT OR REPLACE INTO store_info VALUES ('schema', ?)",
                            (str(SCHEMA_VERSION),))
            if not self.index_search:
                con.execute("UPDATE store_info SET value = 'stale' WHERE key = 'search'")

    def _schema_current(self, con: sqlite3.Connection) -> bool:
        # A store at this schema version needs no set-up; anything else (a new file, an
        # older or newer schema) takes the write path, which decides. A table missing
        # from a current store is damage that the first statement naming it reports
        # (_translate): checking all four here cost every open 7 µs of its ≈ 280.
        try:
            row = con.execute("SELECT value FROM store_info WHERE key = 'schema'").fetchone()
        except sqlite3.OperationalError:
            return False
        return row is not None and row[0] == str(SCHEMA_VERSION)

    # --- connections -------------------------------------------------------------------------

    def _con(self) -> sqlite3.Connection:
        # One connection per thread, and never one inherited across fork().
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None and self._local.pid == os.getpid():
            return con
        con = None
        try:
            # The timeout is SQLite's busy timeout (no PRAGMA needed for it).
            con = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False,
                timeout=self.busy_timeout,
            )
            self._ensure_wal(con)
            # 64 MiB of page cache (default 2 MiB): the object index is keyed by random
            # hashes, so inserts touch pages all over it; measured 2x faster bulk imports.
            # Reads keep it too: a second full load of a large session reads its packs'
            # pages from here, not through the OS.
            con.execute("PRAGMA cache_size = -65536")
            # The search index's content is a view over this function (the text of a
            # chunk's frame); the view is in our own schema, so it may call it.
            con.create_function("cas_message_text", 1, SS.message_text, deterministic=True)
            con.create_function("cas_message_text", 3, SS.packed_text, deterministic=True)
            con.execute("PRAGMA trusted_schema = ON")
        except _DB_ERRORS as exc:
            error = self._translate(exc, f"store {self.path}")
            not_a_db = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB
            if con is None or not isinstance(error, CorruptStore) or not_a_db:
                # Not a database at all (a wrong path, or the header is gone): nothing to
                # read, so refuse at once.
                if con is not None:
                    with contextlib.suppress(sqlite3.Error):
                        con.close()
                raise error from None
            # A damaged file: keep the connection so that fsck can say what is wrong and
            # what still reads; every write is refused (see _write).
            self.damage = error
        self._local.con = con
        self._local.pid = os.getpid()
        self._local.depth = 0
        self._local.tuned = False
        self._local.mapped = False
        with self._all_lock:
            self._all.append(con)
        return con

    def _ensure_wal(self, con: sqlite3.Connection) -> None:
        # Switching to WAL needs a lock that a writer, or the recovery of a WAL left by a
        # killed process, can hold briefly; some of those waits are not covered by the
        # busy handler, so retry them here. A store in WAL already needs no switch.
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                mode = con.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    # Takes effect only on a file with no pages yet (a new store).
                    con.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                    mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        if str(mode).lower() != "wal":
            raise StorageError(f"{self.path}: could not switch to WAL (got {mode})")

    def _tune(self, con: sqlite3.Connection) -> None:
        # What only writes and checkpoints use is set before a connection's first one, not
        # at connect: a handle that only reads (a request's metadata read) skips them.
        if self._local.tuned:
            return
        con.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._wal.tune(con)
        self._local.tuned = True

    def _writer(self) -> sqlite3.Connection:
        """Return this thread's connection, set up for writes and checkpoints."""
        con = self._con()
        self._tune(con)
        return con

    @contextlib.contextmanager
    def _write(self, con: sqlite3.Connection) -> Iterator[None]:
        if getattr(self._local, "batch", False):
            # Inside batch(): the write lock is held already; a savepoint keeps this
            # commit all-or-nothing within the batch's one transaction.
            try:
                con.execute("SAVEPOINT cas_commit")
            except _DB_ERRORS as exc:
                raise self._translate(exc) from None
            try:
                yield
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK TO cas_commit")
                    con.execute("RELEASE cas_commit")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from None
                raise
            try:
                con.execute("RELEASE cas_commit")
            except _DB_ERRORS as exc:
                raise self._translate(exc) from None
            return
        if self.damage is not None:
            raise self.damage
        # BEGIN IMMEDIATE takes the write lock up front: a deferred transaction that reads
        # then writes would fail with SQLITE_BUSY under a concurrent writer instead of waiting.
        try:
            self._tune(con)
            con.execute("BEGIN IMMEDIATE")
        except _DB_ERRORS as exc:
            raise self._translate(exc) from None
        try:
            yield
        except _DB_ERRORS as exc:
            # Raised inside the transaction body (a read-only file, a full disk, a damaged
            # page): end the transaction so the connection stays usable, and say what failed.
            self._rollback(con)
            raise self._translate(exc) from None
        except BaseException:
            self._rollback(con)
            raise
        self._commit(con)

    def _rollback(self, con: sqlite3.Connection) -> None:
        # SQLite may have rolled back already (SQLITE_FULL, SQLITE_CORRUPT): no transaction
        # left to end is fine.
        with contextlib.suppress(sqlite3.Error):
            if con.in_transaction:
                con.execute("ROLLBACK")

    def _commit(self, con: sqlite3.Connection) -> None:
        # A failed COMMIT (disk full, lock timeout) leaves the transaction open: end it.
        try:
            con.execute("COMMIT")
        except _DB_ERRORS as exc:
            self._rollback(con)
            raise self._translate(exc) from None

    def _translate(self, exc: sqlite3.Error | UnicodeDecodeError,
                   context: str | None = None) -> CasError:
        """Return the engine error for a SQLite error: the one place they are classified."""
        text = str(exc)
        where = context or f"store {self.path}"
        if isinstance(exc, UnicodeDecodeError):
            return CorruptStore(f"{where}: the database file is damaged (text in it is not"
                                f" UTF-8: {text}); run `cas-store fsck` to see what can still"
                                " be read")
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or (
                primary is None and ("locked" in text or "busy" in text)):
            return StoreLocked(f"store {self.path} stayed locked for {self.busy_timeout:g}s")
        if text.startswith("no such table: "):
            # Every table exists in a store at the current schema (a new or older one is
            # set up on open): one missing is damage, never something to make anew.
            table = text.removeprefix("no such table: ").removeprefix("main.")
            return CorruptStore(f"{where}: the database file is damaged (its {table} table"
                                " is missing); run `cas-store fsck`")
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in text \
                or "not a database" in text:
            return CorruptStore(f"{where}: the database file is damaged ({text}); run"
                                " `cas-store fsck` to see what can still be read")
        if primary == sqlite3.SQLITE_READONLY or "readonly" in text:
            return StorageError(f"{where} is read-only ({text})")
        if primary == sqlite3.SQLITE_FULL or "disk is full" in text:
            return StorageError(f"{where}: the disk is full ({text})")
        return StorageError(f"{where}: {text}")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._con().execute(sql, params).fetchall()
        except _DB_ERRORS as exc:
            raise self._translate(exc) from None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Run this thread's commits in one write transaction, committed (durably) at the end.

        Holds the write lock throughout, so keep batches short (an importer commits one
        every few dozen sessions). Each commit inside is a savepoint: a Conflict rolls back
        only that commit. An exception out of the block rolls back the whole batch.
        """
        con = self._con()
        if getattr(self._local, "batch", False) or self._local.depth:
            raise StorageError("batch() cannot be nested or opened inside a snapshot")
        if self.damage is not None:
            raise self.damage
        try:
            self._tune(con)
            con.execute("BEGIN IMMEDIATE")
        except _DB_ERRORS as exc:
            raise self._translate(exc) from None
        self._local.batch = True
        try:
            yield
        except _DB_ERRORS as exc:
            self._local.batch = False
            self._rollback(con)
            raise self._translate(exc) from None
        except BaseException:
            self._local.batch = False
            self._rollback(con)
            raise
        self._local.batch = False
        self._commit(con)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Run this thread's reads inside one read transaction (one consistent state)."""
        con = self._con()
        if getattr(self._local, "batch", False):
            yield  # the batch's write transaction is a consistent state already
            return
        if self._local.depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        try:
            con.execute("BEGIN DEFERRED")
        except _DB_ERRORS as exc:
            raise self._translate(exc) from None
        self._local.depth = 1
        try:
            yield
        except _DB_ERRORS as exc:
            raise self._translate(exc) from None
        finally:
            self._local.depth = 0
            # A read transaction has nothing to keep: end it however the reads went.
            try:
                con.execute("COMMIT")
            except sqlite3.Error:
                self._rollback(con)

    # --- objects -----------------------------------------------------------------------------

    def get_frames(self, oids: Sequence[Oid]) -> dict[Oid, tuple[Kind, bytes]]:
        """Return (kind, frame) for each stored id, in batches of a few hundred."""
        out: dict[Oid, tuple[Kind, bytes]] = {}
        if len(oids) == 1:
            # A manifest or a metadata object, read by every metadata read: one fixed
            # statement (its plan cached), no batching.
            rows = self._read(_ONE_FRAME, (oids[0],))
            if rows and rows[0][1] != SP.PACKED:
                oid, kind, data = rows[0]
                return {oid: (KINDS.get(kind) or stored_kind(kind, oid), data)}
        unique = list(dict.fromkeys(oids))
        kinds = KINDS
        for part in chunked(unique, LOAD_BATCH):
            marks = ",".join("?" * len(part))
            # Hot path of every load: sqlite3 already returns BLOBs as bytes, and a dict
            # lookup is several times cheaper than constructing the enum per row.
            rows = self._read(f"SELECT oid, kind, data FROM objects WHERE oid IN ({marks})",
                              part)
            if any(kind == SP.PACKED for _, kind, _ in rows):
                out.update(SP.resolve(self._read, self._packs, rows))
            else:
                for oid, kind, data in rows:
                    out[oid] = (kinds.get(kind) or stored_kind(kind, oid), data)
        return out

    def log_manifest_frames(self, sid: str, before: int, limit: int
                            ) -> dict[Oid, tuple[Kind, bytes]]:
        """Return (kind, frame) of the manifests of the session's last limit versions before seq."""
        # One join: a fresh handle's first load followed a 30-link chain with 30 reads.
        return {oid: (KINDS.get(kind) or stored_kind(kind, oid), data)
                for oid, kind, data in self._read(_LOG_MANIFESTS, (sid, before, limit))
                if kind != SP.PACKED}

    def chunk_payloads(self, oids: Sequence[Oid]) -> dict[Oid, bytes]:
        """Return each stored chunk's payload; a packed one straight from its decoded pack."""
        out: dict[Oid, bytes] = {}
        for part in chunked(list(dict.fromkeys(oids)), LOAD_BATCH):
            marks = ",".join("?" * len(part))
            rows = self._read(f"SELECT oid, kind, data FROM objects WHERE oid IN ({marks})",
                              part)
            out.update(SP.members(self._read, self._packs, rows))
            plain = [r for r in rows if r[1] != SP.PACKED]
            for oid, kind, _ in plain:
                if kind != Kind.CHUNK:
                    raise CorruptObject(f"object {bytes(oid).hex()} is not a chunk",
                                        object_id=bytes(oid).hex())
            out.update(chunk_payloads({Oid(bytes(oid)): (Kind.CHUNK, data)
                                       for oid, _, data in plain}))
        return out

    def pack_frames(self, pages: Sequence[Oid]) -> list[tuple[Oid, bytes]]:
        """Return (page, stored frame of its pack) for each of these pages kept as a pack."""
        self._map()
        return SP.pack_frames(self._read, pages)

    def _map(self) -> None:
        """Have this thread's connection read the file through a memory map from now on."""
        con = self._con()
        if not self._local.mapped:
            # Takes effect from the next page read, also inside the open read transaction.
            con.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            self._local.mapped = True

    def packed_in(self, oids: Sequence[Oid]) -> dict[Oid, Oid]:
        """Return the pack holding each of these chunks that is stored packed."""
        out: dict[Oid, Oid] = {}
        for part in chunked(list(dict.fromkeys(oids)), _BATCH):
            marks = ",".join("?" * len(part))
            for oid, data in self._read(f"SELECT oid, data FROM objects WHERE oid IN ({marks})"
                                        f" AND kind = {SP.PACKED}", part):
                out[Oid(bytes(oid))] = Oid(bytes(data[:32]))
        return out

    def missing(self, oids: Iterable[Oid]) -> set[Oid]:
        """Return the given ids that are not stored."""
        wanted = list(dict.fromkeys(oids))
        found: set[bytes] = set()
        for part in chunked(wanted, _BATCH):
            marks = ",".join("?" * len(part))
            found.update(
                bytes(r[0])
                for r in self._read(f"SELECT oid FROM objects WHERE oid IN ({marks})", part)
            )
        return {o for o in wanted if o not in found}

    def _column_by_id(self, column: str, oids: Sequence[Oid]) -> dict[Oid, int]:
        out: dict[Oid, int] = {}
        for part in chunked(list(dict.fromkeys(oids)), _BATCH):
            marks = ",".join("?" * len(part))
            for oid, value in self._read(
                f"SELECT oid, {column} FROM objects WHERE oid IN ({marks})", part
            ):
                out[Oid(bytes(oid))] = value
        return out

    def sizes(self, oids: Sequence[Oid]) -> dict[Oid, int]:
        """Return the payload size of each stored id."""
        return self._column_by_id("size", oids)

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Yield every object's info by rowid, a page at a time (no long read lock)."""
        last = 0
        while True:
            rows = self._read(
                "SELECT rowid, oid, kind, size, length(data), wtime FROM objects"
                " WHERE rowid > ? ORDER BY rowid LIMIT 2000",
                (last,),
            )
            if not rows:
                return
            for rowid, oid, kind, size, stored, wtime in rows:
                if not isinstance(oid, bytes) or len(oid) != OID_SIZE:
                    # SQLite checks no column's type: a damaged record header can make
                    # the id a number or text. Nothing names the object then.
                    raise CorruptStore(f"store {self.path}: the object row {rowid} is damaged"
                                       " (its id is not 32 bytes); run `cas-store fsck`")
                yield ObjectInfo(Oid(oid), Kind.CHUNK if kind == SP.PACKED else KINDS.get(kind),
                                 size, stored, wtime)
                last = rowid

    def delete_objects(self, oids: Sequence[Oid], written_before: float) -> tuple[int, int]:
        """Delete ids still written before the cutoff, in one transaction per batch."""
        count = freed = 0
        con = self._con()
        for part in chunked(list(oids), _BATCH):
            with self._write(con):
                marks = ",".join("?" * len(part))
                self._unindex(con, part, written_before)
                rows = con.execute(
                    f"DELETE FROM objects WHERE oid IN ({marks}) AND wtime < ?"
                    f" AND kind != {int(Kind.PACK)} RETURNING length(data)",
                    (*part, written_before),
                ).fetchall()
                # A pack goes only once no chunk row names it: a live member keeps its
                # pack whole (its dead members' bytes with it) however its page fared.
                rows += con.execute(
                    f"DELETE FROM objects WHERE oid IN ({marks}) AND wtime < ?"
                    f" AND kind = {int(Kind.PACK)} AND NOT EXISTS (SELECT 1 FROM objects c"
                    f" WHERE c.kind = {SP.PACKED} AND substr(c.data, 1, 32) = objects.oid)"
                    " RETURNING length(data)",
                    (*part, written_before),
                ).fetchall()
            count += len(rows)
            freed += sum(r[0] for r in rows)
        return count, freed

    def ordinals(self, oids: Sequence[Oid]) -> dict[Oid, int]:
        """Return the rowid of each stored id (dense: GC's bitmap mark set indexes by it)."""
        return self._column_by_id("rowid", oids)

    def iter_ordinals(self, written_before: float) -> Iterator[tuple[int, Oid, int]]:
        """Yield (rowid, id, stored bytes) of objects written before the cutoff, by rowid."""
        last = 0
        while True:
            # Paged by rowid range rather than by matching rows, so each query reads a
            # bounded slice of the table however few rows in it are old.
            rows = self._read(
                "SELECT rowid, oid, length(data), wtime FROM objects"
                " WHERE rowid > ? ORDER BY rowid LIMIT 5000",
                (last,),
            )
            if not rows:
                return
            for rowid, oid, stored, wtime in rows:
                if wtime < written_before:
                    yield rowid, Oid(bytes(oid)), stored
            last = rows[-1][0]

    def lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew a lease kept in store_info, in one write transaction."""
        key, now = f"lease:{name}", time.time()
        con = self._con()
        with self._write(con):
            row = con.execute("SELECT value FROM store_info WHERE key = ?", (key,)).fetchone()
            if row is not None:
                holder, _, until = str(row[0]).rpartition(" ")
                if holder != owner and float(until) > now:
                    return False
            con.execute("INSERT OR REPLACE INTO store_info VALUES (?, ?)",
                        (key, f"{owner} {now + ttl!r}"))
        return True

    def release(self, name: str, owner: str) -> None:
        """Delete the lease row if owner holds it."""
        con = self._con()
        key = f"lease:{name}"
        with self._write(con):
            row = con.execute("SELECT value FROM store_info WHERE key = ?", (key,)).fetchone()
            if row is not None and str(row[0]).rpartition(" ")[0] == owner:
                con.execute("DELETE FROM store_info WHERE key = ?", (key,))

    # --- version log -------------------------------------------------------------------------

    def head(self, sid: str) -> HeadRow | None:
        """Return the session's head row or None."""
        rows = self._read(f"SELECT {_HEAD_COLS} FROM sessions WHERE sid = ?", (sid,))
        return _head(rows[0]) if rows else None

    def commit(self, change: Commit) -> None:
        """Write objects, check the head, append the log entry and move the head: one txn."""
        entry, head = change.entry, change.head
        con = self._con()
        with self._write(con):
            # The write time is read under the write lock, not before waiting for it: a
            # GC that started while this commit waited lists versions after its lease
            # transaction, so an object stamped earlier than its start must already be
            # visible to that listing (see gc(): start time, then the lease).
            now = time.time()
            indexing = change.index is not None and self.index_search
            # The compare-and-swap is the head write itself: one statement that moves the
            # head only from the expected version (an insert for a session not yet there).
            values = (head.seq, head.manifest, head.message_count, head.nbytes, head.title,
                      head.created_at, head.updated_at, int(head.deleted),
                      int(head.suspect_pending),
                      json.dumps(dict(head.summary), sort_keys=True, separators=(",", ":"),
                                 ensure_ascii=False),
                      head.sid)
            if change.expected_seq:
                moved = con.execute(_MOVE_HEAD, (*values, change.expected_seq)).rowcount
            else:
                moved = con.execute(_INSERT_HEAD, values).rowcount
            if moved != 1:
                row = con.execute("SELECT seq FROM sessions WHERE sid = ?",
                                  (entry.sid,)).fetchone()
                current = row[0] if row else 0
                raise Conflict(
                    f"session {entry.sid!r} is at version {current}, not"
                    f" {change.expected_seq}",
                    current=current,
                    expected=change.expected_seq,
                )
            for sid, seq, manifest in change.requires:
                if not con.execute(
                    "SELECT 1 FROM versions WHERE sid = ? AND seq = ? AND manifest = ?",
                    (sid, seq, manifest),
                ).fetchone():
                    raise VersionNotFound(f"session {sid!r} has no version {seq}")
            touch = [(now, o.oid) for o in change.objects if o.frame is None]
            if touch:
                # Refresh write time so a concurrent GC's sweep spares it (grace rule).
                cur = con.executemany("UPDATE objects SET wtime = ? WHERE oid = ?", touch)
                if cur.rowcount != len(touch):
                    raise Retry("an object this commit reuses vanished before the commit")
            rows = [(o.oid, int(o.kind), o.size, o.frame)
                    for o in change.objects if o.frame is not None]
            repoint: list[SP.Move] = []
            made: Iterator[SP.Row] = iter(())
            retired: list[Oid] = []
            if self.packs:
                rows, made, repoint, retired = SP.pack_commit(con, self._packs, rows)
            # One executemany: a save of many messages is one statement, not one per chunk.
            insert = ("INSERT INTO objects (oid, kind, size, data, wtime) VALUES (?,?,?,?,?)"
                      " ON CONFLICT (oid) DO UPDATE SET wtime = excluded.wtime")
            con.executemany(insert, ((*r, now) for r in rows))
            if repoint:
                # Members stored plain by earlier commits become references to the new
                # pack (one packed elsewhere stays as it is), before the pack's own row.
                self._move_docs(con, SP.move_rows(con, repoint, now))
            con.executemany(insert, ((*r, now) for r in made))
            if retired:
                SP.retire(con, retired)
            flags = (_INTENTIONAL if entry.intentional_shrink else 0) | (
                _SUSPECT if entry.suspect_shrink else 0
            )
            # Read under the write lock, so cursors increase in commit order and a reader
            # that sees cursor N sees every cursor below it.
            cursor = con.execute(_NEXT_CURSOR).fetchone()[0]
            # The search index takes this commit in at the next search (or now, for a
            # large one): the entry carries the change to the head's list until then.
            keep, add = (self._index_later(con, change, int(cursor)) if indexing
                         else (None, None))
            con.execute(
                f"INSERT INTO versions ({_VERSION_COLS}, ikeep, iadd)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (entry.sid, entry.seq, entry.manifest, entry.created_at, entry.op,
                 entry.message_count, entry.nbytes, flags, int(cursor), keep, add),
            )
        self._wal.after_commit(con, in_batch=getattr(self._local, "batch", False))

    def version(self, sid: str, seq: int) -> LogEntry | None:
        """Return one log entry or None."""
        rows = self._read(
            f"SELECT {_VERSION_COLS} FROM versions WHERE sid = ? AND seq = ?", (sid, seq)
        )
        return _entry(rows[0]) if rows else None

    def versions(self, sid: str, *, limit: int | None = None, before: int | None = None,
                 ascending: bool = False) -> list[LogEntry]:
        """Return log entries newest first (or oldest first)."""
        order = "ASC" if ascending else "DESC"
        rows = self._read(
            f"SELECT {_VERSION_COLS} FROM versions WHERE sid = ? AND seq < ?"
            f" ORDER BY seq {order} LIMIT ?",
            (sid, before if before is not None else 2**62, limit if limit is not None else -1),
        )
        return [_entry(r) for r in rows]

    def list_heads(self, *, limit: int, after: tuple[float, str] | None = None,
                   query: str | None = None, include_deleted: bool = False,
                   where: Mapping[str, Any] | None = None) -> list[HeadRow]:
        """Return head rows newest update first, strictly after the (updated_at, sid) cursor.

        ``where`` filters on the summary column in SQL, by ``summary_matches``' rule.
        """
        clauses: list[str] = []
        params: list[Any] = []
        # A damaged summary (see _summary) filters as an empty one, never as an error.
        summary = "iif(json_valid(summary), summary, '{}')"
        for key, want in (where or {}).items():
            # json_extract gives SQL NULL for null and absent keys, 0/1 for booleans.
            path = '$."' + key.replace('"', '""') + '"'
            value = f"json_extract({summary}, ?)"
            if isinstance(want, bool):
                truthy = f"({value} IS NOT NULL AND {value} NOT IN (0, ''))"
                clauses.append(truthy if want else f"NOT {truthy}")
                params += [path, path]
            elif want is None:
                clauses.append(f"{value} IS NULL")
                params.append(path)
            else:
                # A boolean is stored as 0/1: an equal number must not match it.
                clauses.append(f"({value} = ? AND json_type({summary}, ?) NOT IN"
                             " ('true', 'false'))")
                params += [path, want, path]
        if not include_deleted:
            clauses.append("deleted = 0")
        if after is not None:
            clauses.append("(updated_at < ? OR (updated_at = ? AND sid > ?))")
            params += [after[0], after[0], after[1]]
        if query and "\x00" in query:
            # LIKE ends its pattern at a NUL (so "%\0%" would match every title): compare
            # the bytes instead, which matches the NUL literally (case-sensitively).
            clauses.append("(instr(CAST(title AS BLOB), CAST(? AS BLOB)) > 0"
                         " OR instr(CAST(sid AS BLOB), CAST(? AS BLOB)) > 0)")
            params += [query, query]
        elif query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("(title LIKE ? ESCAPE '\\' OR sid LIKE ? ESCAPE '\\')")
            params += [f"%{escaped}%", f"%{escaped}%"]
        sql = f"SELECT {_HEAD_COLS} FROM sessions"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY updated_at DESC, sid LIMIT ?"
        return [_head(r) for r in self._read(sql, (*params, limit))]

    def iter_heads(self) -> Iterator[HeadRow]:
        """Yield every head row, a page at a time, by sid."""
        last = ""
        while True:
            rows = self._read(
                f"SELECT {_HEAD_COLS} FROM sessions WHERE sid > ? ORDER BY sid LIMIT 1000",
                (last,),
            )
            if not rows:
                return
            for r in rows:
                yield _head(r)
            last = rows[-1][0]

    def suspect_sessions(self) -> list[str]:
        """Return ids of sessions with an unresolved suspect shrink."""
        return [r[0] for r in self._read("SELECT sid FROM sessions WHERE suspect_pending = 1")]

    def prune_versions(self, sid: str, seqs: Sequence[int]) -> int:
        """Delete these log entries except the head; return how many went."""
        con = self._con()
        with self._write(con):
            # An entry the search index has not taken in yet would take its change to the
            # head's list with it: the index takes every such entry in first.
            self._catch_up_or_stale(con)
            row = con.execute("SELECT seq FROM sessions WHERE sid = ?", (sid,)).fetchone()
            head = row[0] if row else None
            con.execute(_KEEP_CURSOR)
            gone = 0
            for part in chunked([s for s in seqs if s != head], _BATCH):
                marks = ",".join("?" * len(part))
                gone += con.execute(
                    f"DELETE FROM versions WHERE sid = ? AND seq IN ({marks})", (sid, *part)
                ).rowcount
        return gone

    def drop_session(self, sid: str, expected_seq: int) -> bool:
        """Remove the session's head and log if the head is still expected_seq."""
        con = self._con()
        with self._write(con):
            row = con.execute("SELECT seq FROM sessions WHERE sid = ?", (sid,)).fetchone()
            if row is None or row[0] != expected_seq:
                return False
            con.execute(_KEEP_CURSOR)
            con.execute("DELETE FROM versions WHERE sid = ?", (sid,))
            con.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
            con.execute("DELETE FROM search_spans WHERE sid = ?", (sid,))
        return True

    # --- change feed -------------------------------------------------------------------------

    def changes(self, after: int, *, sid: str | None = None,
                limit: int = 1000) -> list[LogEntry]:
        """Return log entries with cursor > after, oldest first (by the cursor index)."""
        if sid is None:
            rows = self._read(f"SELECT {_VERSION_COLS} FROM versions WHERE cursor > ?"
                              " ORDER BY cursor LIMIT ?", (after, limit))
        else:
            rows = self._read(f"SELECT {_VERSION_COLS} FROM versions WHERE sid = ? AND"
                              " cursor > ? ORDER BY cursor LIMIT ?", (sid, after, limit))
        return [_entry(r) for r in rows]

    def last_cursor(self) -> int:
        """Return the feed's counter: the newest cursor handed out."""
        return int(self._read(_LAST_CURSOR)[0][0])

    def watch(self) -> CommitWatch:
        """Return a watch on PRAGMA data_version: it moves when any other connection commits."""
        return _DataVersionWatch(self.path, self.busy_timeout)

    def object_totals(self) -> dict[Kind, tuple[int, int, int]]:
        """Return, per kind, (objects, payload bytes, stored bytes) in one aggregate query."""
        rows = self._read("SELECT kind, count(*), sum(size), sum(length(data)) FROM objects"
                          " GROUP BY kind")
        out: dict[Kind, tuple[int, int, int]] = {}
        for k, n, s, d in rows:
            kind = Kind.CHUNK if k == SP.PACKED else KINDS.get(k)  # a packed chunk is a chunk
            if kind is None:
                continue  # a damaged row: fsck names it
            was = out.get(kind, (0, 0, 0))
            out[kind] = (was[0] + n, was[1] + (s or 0), was[2] + (d or 0))
        return out

    def count_versions(self) -> int:
        """Return the number of log entries."""
        return int(self._read("SELECT count(*) FROM versions")[0][0])

    def disk_bytes(self) -> int:
        """Return the size of the database file plus its WAL."""
        return sum(self.file_sizes().values())

    def file_sizes(self) -> dict[str, int]:
        """Return the bytes on disk of the database, its WAL and shared-memory files."""
        out = {}
        for suffix in ("", "-wal", "-shm"):
            p = Path(self.path + suffix)
            out[p.name] = p.stat().st_size if p.exists() else 0
        return out

    def checkpoint(self) -> None:
        """Fold the whole WAL back into the database file (for measuring size on disk).

        A checkpoint that meets another one running (this store's background pass, or
        another process's) returns busy having copied only part: it is tried again until
        one completes, within the busy timeout.
        """
        con = self._con()
        deadline = time.monotonic() + self.busy_timeout
        try:
            self._tune(con)
            while True:
                busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                if not busy:
                    return
                if time.monotonic() > deadline:
                    raise StoreLocked(f"store {self.path}: the WAL stayed busy for"
                                      f" {self.busy_timeout:g}s")
                time.sleep(0.005)
        except _DB_ERRORS as exc:
            raise self._translate(exc) from None

    def integrity_check(self, max_errors: int = 100, *, quick: bool = False) -> list[str]:
        """Return what SQLite's own integrity check finds (empty: the file is sound).

        ``quick`` runs ``quick_check``: every page and record, but not whether indexes
        match their tables; several times faster.
        """
        pragma = "quick_check" if quick else "integrity_check"
        try:
            rows = self._con().execute(f"PRAGMA {pragma}({int(max_errors)})").fetchall()
        except _DB_ERRORS as exc:
            return [str(exc)]
        found = [str(r[0]) for r in rows]
        return [] if found == ["ok"] else found

    def close(self) -> None:
        """Close every connection this backend opened in this process."""
        self._wal.close()
        with self._all_lock:
            for con in self._all:
                with contextlib.suppress(sqlite3.Error):
                    con.close()
            self._all.clear()
        self._local = threading.local()


class _DataVersionWatch(CommitWatch):
    """Watches ``PRAGMA data_version`` on a connection of its own (one per process).

    The value changes whenever another connection, of this process or another, commits:
    a read of the WAL index header in shared memory, no query of any table.
    """

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.con = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout)
        self.last = self._value()

    def _value(self) -> int:
        return int(self.con.execute("PRAGMA data_version").fetchone()[0])

    def wait(self, timeout: float) -> bool:
        """Check every 50 ms until the value moves or the timeout passes."""
        deadline = time.monotonic() + timeout
        while True:
            now = self._value()
            if now != self.last:
                self.last = now
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.05, left))

    def close(self) -> None:
        """Close the watch's connection."""
        with contextlib.suppress(sqlite3.Error):
            self.con.close()
