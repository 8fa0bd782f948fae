"""The change feed: every pointer move of the store, in commit order, as it happens.

Each log entry carries a store-wide cursor (``LogEntry.cursor``), so the feed *is* the
version log read by cursor: a subscriber that comes back with the last cursor it saw
reads exactly what it missed from the log, then follows live moves. Live moves reach
subscribers through one ``Feed`` per store object (per process): a single watcher thread
waits on the backend's ``CommitWatch`` (SQLite: ``PRAGMA data_version``; PostgreSQL:
LISTEN/NOTIFY) or on a poke from this process's own commits, reads the new entries once,
and keeps the recent ones in a ring that every subscriber reads from. An idle
subscriber costs one waiting event and a cursor; none of them queries the store.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from .backends import Backend, LogEntry

RING = 4096  # recent changes kept in memory; a subscriber further behind reads the log
_PAGE = 500  # log entries per query when a subscriber catches up
_POLL = 0.05  # seconds between looks at the commit counter for other processes' commits


@dataclass(frozen=True, slots=True)
class Change:
    """One pointer move: session ``session_id`` is now at version ``seq``, by ``op``."""

    cursor: int
    session_id: str
    seq: int
    op: str
    message_count: int
    suspect_shrink: bool
    intentional_shrink: bool
    created_at: float

    @property
    def deleted(self) -> bool:
        """True when this move deleted the session."""
        return self.op == "delete"

    @classmethod
    def of(cls, e: LogEntry) -> Change:
        """Return the change a log entry records."""
        return cls(e.cursor, e.sid, e.seq, e.op, e.message_count, e.suspect_shrink,
                   e.intentional_shrink, e.created_at)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (every field, plus ``deleted``)."""
        return {"cursor": self.cursor, "session_id": self.session_id, "seq": self.seq,
                "op": self.op, "message_count": self.message_count,
                "suspect_shrink": self.suspect_shrink,
                "intentional_shrink": self.intentional_shrink,
                "created_at": self.created_at, "deleted": self.deleted}


def read_changes(backend: Backend, after: int, session_id: str | None = None,
                 limit: int = 1000) -> list[Change]:
    """Return the changes after cursor ``after`` from the log, oldest first."""
    return [Change.of(e) for e in backend.changes(after, sid=session_id, limit=limit)]


class Feed:
    """Fans the store's changes out to any number of subscribers, from one watcher thread."""

    def __init__(self, backend: Backend, *, poll: float = _POLL, ring: int = RING) -> None:
        self.backend = backend
        self.poll = poll
        self.ring_size = ring
        self._cond = threading.Condition()
        self._ring: list[Change] = []
        self._floor = 0  # every change with floor < cursor <= last is in the ring
        self._last = 0
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Async subscribers' events by loop, then by the session they follow (None: all),
        # so a move wakes only the streams it concerns.
        self._loops: dict[asyncio.AbstractEventLoop, dict[str | None, set[asyncio.Event]]] = {}
        self.subscribers = 0

    # --- the watcher ----------------------------------------------------------------------

    def poke(self) -> None:
        """Say a commit of this process landed (the watcher reads it without waiting)."""
        self._poke.set()

    def _start(self) -> None:
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._last = self._floor = self.backend.last_cursor()
            self._thread = threading.Thread(target=self._run, name="cas-feed", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        watch = self.backend.watch()
        try:
            while not self._closed:
                poked = self._poke.wait(self.poll)
                self._poke.clear()
                if self._closed:
                    return
                if watch.wait(0) or poked:
                    with contextlib.suppress(Exception):  # a locked store: try next round
                        self._fetch()
        finally:
            watch.close()

    def _fetch(self) -> None:
        new: list[Change] = []
        while True:
            got = read_changes(self.backend, new[-1].cursor if new else self._last,
                               limit=_PAGE)
            new.extend(got)
            if len(got) < _PAGE:
                break
        if not new:
            return
        with self._cond:
            self._ring.extend(new)
            self._last = new[-1].cursor
            if len(self._ring) > 2 * self.ring_size:
                cut = len(self._ring) - self.ring_size
                self._floor = self._ring[cut - 1].cursor
                del self._ring[:cut]
            self._cond.notify_all()
            sids = {c.session_id for c in new}
            loops = {loop: [e for key, events in by_sid.items()
                            if key is None or key in sids for e in events]
                     for loop, by_sid in self._loops.items()}
        for loop, events in loops.items():
            if events:
                with contextlib.suppress(RuntimeError):  # that loop is closing
                    loop.call_soon_threadsafe(_set_all, events)

    def close(self) -> None:
        """Stop the watcher; subscribers see no more changes."""
        self._closed = True
        self._poke.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._cond:
            self._cond.notify_all()
            loops = {loop: [e for events in by_sid.values() for e in events]
                     for loop, by_sid in self._loops.items()}
        for loop, events in loops.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_all, events)

    @property
    def last(self) -> int:
        """Return the newest cursor this feed has seen (the store's, before any subscriber)."""
        with self._cond:
            return self._last if self._thread is not None else self.backend.last_cursor()

    # --- subscribers ----------------------------------------------------------------------

    def _from_ring(self, after: int, sid: str | None) -> tuple[list[Change], int] | None:
        """Return (changes after ``after``, newest cursor) from memory, or None if behind."""
        with self._cond:
            if after < self._floor:
                return None
            start = bisect.bisect_right(self._ring, after, key=lambda c: c.cursor)
            got = self._ring[start:]
            if sid is not None:
                got = [c for c in got if c.session_id == sid]
            return got, max(after, self._last)

    def _from_log(self, after: int, sid: str | None) -> tuple[list[Change], int]:
        """Return (a page of changes from the log, the cursor read up to)."""
        with self._cond:
            seen = self._last  # committed (the watcher read it), so the query below sees it
        got = read_changes(self.backend, after, sid, _PAGE)
        upto = got[-1].cursor if got else after
        if len(got) < _PAGE:
            upto = max(upto, seen)
        return got, upto

    def start_cursor(self, after: int | None) -> int:
        """Return where a subscription starts: after the given cursor, or now."""
        self._start()
        return self.last if after is None else after

    def follow(self, after: int | None = None, *, session_id: str | None = None,
               timeout: float | None = None) -> Iterator[Change]:
        """Yield changes after cursor ``after`` (None: from now), then live ones, forever.

        With ``timeout``, stops once no change came for that many seconds. Changes after
        ``after`` still in the log are all yielded, in cursor order, each once.
        """
        cursor = self.start_cursor(after)
        self.subscribers += 1
        try:
            while not self._closed:
                got = self._from_ring(cursor, session_id)
                if got is None:
                    changes, cursor = self._from_log(cursor, session_id)
                    yield from changes
                    continue
                changes, upto = got
                yield from changes
                cursor = upto
                with self._cond:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    while self._last <= cursor and not self._closed:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            return
                        self._cond.wait(left)
        finally:
            self.subscribers -= 1

    async def follow_async(self, after: int | None = None, *,
                           session_id: str | None = None) -> AsyncIterator[Change]:
        """Yield changes like ``follow``, without blocking the event loop (the HTTP feed)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        cursor = await asyncio.to_thread(self.start_cursor, after)
        with self._cond:
            self._loops.setdefault(loop, {}).setdefault(session_id, set()).add(event)
        self.subscribers += 1
        try:
            while not self._closed:
                event.clear()
                got = self._from_ring(cursor, session_id)
                if got is None:
                    changes, cursor = await asyncio.to_thread(self._from_log, cursor,
                                                              session_id)
                    for c in changes:
                        yield c
                    continue
                changes, cursor = got
                for c in changes:
                    yield c
                await event.wait()
        finally:
            self.subscribers -= 1
            with self._cond:
                by_sid = self._loops.get(loop, {})
                events = by_sid.get(session_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del by_sid[session_id]
                if not by_sid:
                    self._loops.pop(loop, None)


def _set_all(events: list[asyncio.Event]) -> None:
    for e in events:
        e.set()
