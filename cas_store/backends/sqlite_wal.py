"""Keeping a SQLite store's WAL small while the store is open (docs/design.md, "Performance").

SQLite alone checkpoints every 1,000 pages and never gives the WAL file back, so an open
store's files grew to several times its closed size. ``WalKeeper`` holds the WAL near a
share of the database: a commit reads the WAL's frame count from the WAL-index header
and, once the frames near the allowed size, a daemon thread copies them back with a
passive checkpoint (never blocking a reader or writer); SQLite then restarts the WAL and
cuts the file back to ``journal_size_limit``. Only when a checkpoint runs and where the
file is cut back are decided here: durability is the commits' own (``synchronous``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import threading
from collections.abc import Callable

from ..errors import StorageError

#: While the store is open its WAL is checkpointed (passively, by a background thread)
#: once it passes this fraction of the database file, or WAL_FLOOR_PAGES pages when that
#: is larger, and is cut back to that size when SQLite restarts it: the files on disk stay
#: within about 1.25-1.5x the closed size. See docs/design.md, "Performance".
WAL_RATIO = 0.25
WAL_FLOOR_PAGES = 16
#: The checkpoint is asked for once the WAL's frames fill this share of that size, so it
#: is usually done, and the WAL restarted, before the frames reach the end of the file:
#: the file then neither grows nor shrinks between checkpoints.
WAL_TRIGGER = 0.7
#: SQLite's own checkpoint after this many pages of WAL (64 MiB at 4 KiB pages, instead
#: of 4 MiB): index pages that many commits touch are copied back once, not once per
#: commit or two. Measured: bytes written per append 42.6 -> 34.3 KiB, a 10,000-file
#: import 54 -> 42 s. The keeper checkpoints long before it in an open store.
AUTOCHECKPOINT_PAGES = 16384


class WalKeeper:
    """One store's WAL policy in this process: its allowed size, its frames, its checkpointer.

    ``connect`` returns the calling thread's connection made ready for writing (which
    calls ``tune`` on it first).
    """

    def __init__(self, path: str, page_size: int,
                 connect: Callable[[], sqlite3.Connection]) -> None:
        self.path = path
        self.wal_path = path + "-wal"
        self.floor = self.limit = WAL_FLOOR_PAGES * page_size
        self.checkpointer: Checkpointer | None = None
        self._connect = connect
        self._shm: tuple[int, int] | None = None  # (pid, descriptor) of the -shm file
        self._shm_lock = threading.Lock()
        # Per thread: the connection last tuned, the size limit set on it, passes seen.
        self._local = threading.local()

    def tune(self, con: sqlite3.Connection) -> None:
        """Set what writes and checkpoints need on a connection (the floor is in its pages)."""
        # A store created with larger pages (before PAGE_SIZE) keeps a WAL of as many
        # commits as before.
        self.floor = WAL_FLOOR_PAGES * con.execute("PRAGMA page_size").fetchone()[0]
        con.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        self._set_limit(con, self.limit)

    def _set_limit(self, con: sqlite3.Connection, limit: int) -> None:
        local = self._local
        if getattr(local, "con", None) is not con or local.limit != limit:
            con.execute(f"PRAGMA journal_size_limit = {limit}").fetchall()
            local.con, local.limit = con, limit

    def after_commit(self, con: sqlite3.Connection, *, in_batch: bool) -> None:
        """Ask for a checkpoint if the commit just made on con filled the WAL far enough.

        A busy writer always commits more during the background pass, so once that pass
        is done the committing connection copies the few frames left itself (one short
        checkpoint), and SQLite restarts the WAL at the next commit.
        """
        try:
            wal = self.used()
            if wal <= self.limit * WAL_TRIGGER:
                return
            db = os.stat(self.path).st_size
        except OSError:
            return
        limit = self.limit = max(self.floor, int(db * WAL_RATIO))
        self._set_limit(con, limit)
        if wal <= limit * WAL_TRIGGER or in_batch:
            return
        cp = self.checkpointer
        if cp is None or cp.pid != os.getpid():
            cp = self.checkpointer = Checkpointer(self._connect)
        if cp.passes > getattr(self._local, "passes", 0) and cp.idle():
            self._local.passes = cp.passes
            with contextlib.suppress(sqlite3.Error):
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        else:
            cp.request()

    def used(self) -> int:
        """Return the bytes of frames in the WAL now (its file's size where that cannot be read).

        From the WAL-index header at the start of the -shm file (SQLite's documented
        layout, native byte order: page size at byte 14, frame count at 16); the WAL
        file's own size says how far it once grew instead.
        """
        shm = self._shm
        if shm is None or shm[0] != os.getpid():
            with self._shm_lock:  # writers on several threads open it once between them
                shm = self._shm
                if shm is None or shm[0] != os.getpid():
                    try:
                        fd = os.open(self.path + "-shm", os.O_RDONLY)
                    except OSError:
                        return os.stat(self.wal_path).st_size
                    shm = self._shm = (os.getpid(), fd)
        head = os.pread(shm[1], 20, 0)
        if len(head) < 20:
            return os.stat(self.wal_path).st_size
        page, frames = struct.unpack_from("=HI", head, 14)
        return 32 + int(frames) * ((int(page) if page != 1 else 65536) + 24)

    def close(self) -> None:
        """Stop this process's checkpointer and let go of the -shm descriptor."""
        cp, self.checkpointer = self.checkpointer, None
        if cp is not None and cp.pid == os.getpid():
            cp.stop()
        with self._shm_lock:
            shm, self._shm = self._shm, None
        if shm is not None and shm[0] == os.getpid():
            with contextlib.suppress(OSError):
                os.close(shm[1])
        self._local = threading.local()


class Checkpointer:
    """A daemon thread that runs passive WAL checkpoints when a commit asks for one."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self.pid = os.getpid()
        self._connect = connect
        self._wake = threading.Event()
        self._stopping = False
        self._busy = threading.Lock()
        self.passes = 0  # checkpoints run so far
        self._thread = threading.Thread(target=self._run, name="cas-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a checkpoint (coalesced with one already asked for)."""
        self._wake.set()

    def idle(self) -> bool:
        """Return True if no checkpoint is asked for or running."""
        return not self._wake.is_set() and not self._busy.locked()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping:
                return
            with self._busy:
                self._wake.clear()
                # PASSIVE copies what it can without waiting for (or blocking) writers
                # and readers; a busy or closed store is simply tried again next time.
                with contextlib.suppress(sqlite3.Error, StorageError):
                    self._connect().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.passes += 1

    def stop(self) -> None:
        """End the thread (after a checkpoint in progress)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)
