"""The embedded default backend: one SQLite file in WAL mode holding objects and the log.

Objects and the pointer move share one ``BEGIN IMMEDIATE`` transaction, so a commit is
all-or-nothing: a crash before COMMIT leaves the previous head and no half state, a
crash after it leaves the new head with every object it names. With
``synchronous=FULL`` (the default) an acknowledged commit survives power loss; with
``NORMAL`` it survives a process crash but the last commits may roll back on power loss.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import Conflict, StorageError, StoreLocked, VersionNotFound
from ..objects import Kind, Oid
from .base import LOAD_BATCH, Backend, Commit, HeadRow, LogEntry, ObjectInfo, Retry

_BATCH = 500  # ids per IN (...) query: well under SQLite's variable limit, few round trips
_KINDS = {int(k): k for k in Kind}

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
_MIGRATIONS: list[list[str]] = []
SCHEMA_VERSION = 1 + len(_MIGRATIONS)

_INTENTIONAL = 1
_SUSPECT = 2

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")


def _entry(row: Sequence[Any]) -> LogEntry:
    sid, seq, manifest, created_at, op, count, nbytes, flags = row
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
    )


def _head(row: Sequence[Any]) -> HeadRow:
    sid, seq, manifest, count, nbytes, title, created, updated, deleted, suspect = row
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
    )


_HEAD_COLS = (
    "sid, seq, manifest, message_count, nbytes, title, created_at, updated_at, deleted,"
    " suspect_pending"
)
_VERSION_COLS = "sid, seq, manifest, created_at, op, message_count, nbytes, flags"


def _chunks(seq: Sequence[Any], n: int = _BATCH) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class SQLiteBackend(Backend):
    """Objects and version log in one SQLite database file (WAL, one connection per thread)."""

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL",
                 busy_timeout: float = 30.0) -> None:
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.path = Path(path)
        self.location = str(self.path)
        self.synchronous = sync
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._con()
        with self._write(con):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            row = con.execute("SELECT value FROM store_info WHERE key='schema'").fetchone()
            found = 1 if row is None else int(row[0])
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

    # --- connections -------------------------------------------------------------------------

    def _con(self) -> sqlite3.Connection:
        # One connection per thread, and never one inherited across fork().
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None and self._local.pid == os.getpid():
            return con
        try:
            con = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False,
                timeout=self.busy_timeout,
            )
            con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._ensure_wal(con)
            con.execute(f"PRAGMA synchronous = {self.synchronous}")
            # 64 MiB of page cache (default 2 MiB): the object index is keyed by random
            # hashes, so inserts touch pages all over it; measured 2x faster bulk imports.
            con.execute("PRAGMA cache_size = -65536")
            # Checkpoint every 64 MiB of WAL instead of 4 MiB: index pages that many
            # commits touch are copied back once, not once per commit or two. Measured:
            # bytes written per append 42.6 -> 34.3 KiB, 10,000-file import 54 -> 42 s.
            con.execute("PRAGMA wal_autocheckpoint = 16384")
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open store {self.path}: {exc}") from None
        self._local.con = con
        self._local.pid = os.getpid()
        self._local.depth = 0
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

    @contextlib.contextmanager
    def _write(self, con: sqlite3.Connection) -> Iterator[None]:
        if getattr(self._local, "batch", False):
            # Inside batch(): the write lock is held already; a savepoint keeps this
            # commit all-or-nothing within the batch's one transaction.
            con.execute("SAVEPOINT cas_commit")
            try:
                yield
            except BaseException:
                con.execute("ROLLBACK TO cas_commit")
                con.execute("RELEASE cas_commit")
                raise
            con.execute("RELEASE cas_commit")
            return
        # BEGIN IMMEDIATE takes the write lock up front: a deferred transaction that reads
        # then writes would fail with SQLITE_BUSY under a concurrent writer instead of waiting.
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from None
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._commit(con)

    def _commit(self, con: sqlite3.Connection) -> None:
        # A failed COMMIT (disk full, lock timeout) leaves the transaction open: end it.
        try:
            con.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise self._translate(exc) from None

    def _translate(self, exc: sqlite3.Error) -> Exception:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreLocked(f"store {self.path} stayed locked for {self.busy_timeout:g}s")
        return StorageError(f"store {self.path}: {text}")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._con().execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
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
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._translate(exc) from None
        self._local.batch = True
        try:
            yield
        except BaseException:
            self._local.batch = False
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
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
        con.execute("BEGIN DEFERRED")
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            con.execute("COMMIT")

    # --- objects -----------------------------------------------------------------------------

    def get_frames(self, oids: Sequence[Oid]) -> dict[Oid, tuple[Kind, bytes]]:
        """Return (kind, frame) for each stored id, in batches of a few hundred."""
        out: dict[Oid, tuple[Kind, bytes]] = {}
        unique = list(dict.fromkeys(oids))
        kinds = _KINDS
        for part in _chunks(unique, LOAD_BATCH):
            marks = ",".join("?" * len(part))
            # Hot path of every load: sqlite3 already returns BLOBs as bytes, and a dict
            # lookup is several times cheaper than constructing the enum per row.
            rows = self._read(f"SELECT oid, kind, data FROM objects WHERE oid IN ({marks})",
                              part)
            out.update((oid, (kinds[kind], data)) for oid, kind, data in rows)
        return out

    def missing(self, oids: Iterable[Oid]) -> set[Oid]:
        """Return the given ids that are not stored."""
        wanted = list(dict.fromkeys(oids))
        found: set[bytes] = set()
        for part in _chunks(wanted):
            marks = ",".join("?" * len(part))
            found.update(
                bytes(r[0])
                for r in self._read(f"SELECT oid FROM objects WHERE oid IN ({marks})", part)
            )
        return {o for o in wanted if o not in found}

    def _column_by_id(self, column: str, oids: Sequence[Oid]) -> dict[Oid, int]:
        out: dict[Oid, int] = {}
        for part in _chunks(list(dict.fromkeys(oids))):
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
                yield ObjectInfo(Oid(bytes(oid)), Kind(kind), size, stored, wtime)
                last = rowid

    def delete_objects(self, oids: Sequence[Oid], written_before: float) -> tuple[int, int]:
        """Delete ids still written before the cutoff, in one transaction per batch."""
        count = freed = 0
        con = self._con()
        for part in _chunks(list(oids)):
            with self._write(con):
                marks = ",".join("?" * len(part))
                rows = con.execute(
                    f"DELETE FROM objects WHERE oid IN ({marks}) AND wtime < ?"
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
            row = con.execute("SELECT seq FROM sessions WHERE sid = ?", (entry.sid,)).fetchone()
            current = row[0] if row else 0
            if current != change.expected_seq:
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
            # One executemany: a save of many messages is one statement, not one per chunk.
            con.executemany(
                "INSERT INTO objects (oid, kind, size, data, wtime) VALUES (?,?,?,?,?)"
                " ON CONFLICT (oid) DO UPDATE SET wtime = excluded.wtime",
                [(o.oid, int(o.kind), o.size, o.frame, now)
                 for o in change.objects if o.frame is not None],
            )
            flags = (_INTENTIONAL if entry.intentional_shrink else 0) | (
                _SUSPECT if entry.suspect_shrink else 0
            )
            con.execute(
                f"INSERT INTO versions ({_VERSION_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                (entry.sid, entry.seq, entry.manifest, entry.created_at, entry.op,
                 entry.message_count, entry.nbytes, flags),
            )
            con.execute(
                f"INSERT OR REPLACE INTO sessions ({_HEAD_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (head.sid, head.seq, head.manifest, head.message_count, head.nbytes, head.title,
                 head.created_at, head.updated_at, int(head.deleted), int(head.suspect_pending)),
            )

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
                   query: str | None = None, include_deleted: bool = False) -> list[HeadRow]:
        """Return head rows newest update first, strictly after the (updated_at, sid) cursor."""
        where, params = [], []
        if not include_deleted:
            where.append("deleted = 0")
        if after is not None:
            where.append("(updated_at < ? OR (updated_at = ? AND sid > ?))")
            params += [after[0], after[0], after[1]]
        if query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("(title LIKE ? ESCAPE '\\' OR sid LIKE ? ESCAPE '\\')")
            params += [f"%{escaped}%", f"%{escaped}%"]
        sql = f"SELECT {_HEAD_COLS} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
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
            row = con.execute("SELECT seq FROM sessions WHERE sid = ?", (sid,)).fetchone()
            head = row[0] if row else None
            gone = 0
            for part in _chunks([s for s in seqs if s != head]):
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
            con.execute("DELETE FROM versions WHERE sid = ?", (sid,))
            con.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
        return True

    def object_totals(self) -> dict[Kind, tuple[int, int, int]]:
        """Return, per kind, (objects, payload bytes, stored bytes) in one aggregate query."""
        rows = self._read("SELECT kind, count(*), sum(size), sum(length(data)) FROM objects"
                          " GROUP BY kind")
        return {Kind(k): (n, s or 0, d or 0) for k, n, s, d in rows}

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
            p = Path(str(self.path) + suffix)
            out[p.name] = p.stat().st_size if p.exists() else 0
        return out

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file (for measuring size on disk)."""
        self._con().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close every connection this backend opened in this process."""
        with self._all_lock:
            for con in self._all:
                with contextlib.suppress(sqlite3.Error):
                    con.close()
            self._all.clear()
        self._local = threading.local()
