"""An OpenAI Agents SDK session on cas-store: every change a version, nothing lost.

``CasSession(session_id, store)`` satisfies ``agents.memory.session.Session``. The
conversation is one cas-store session (``<prefix>.<session_id>``) whose messages are the
SDK's input items, so each ``add_items`` is one append (O(1) bytes whatever the length),
``pop_item`` and ``clear_session`` are intentional rewinds (never flagged suspect, always
undoable), and every earlier state stays readable: ``versions``, ``get_items_at``,
``restore``, ``branch`` and ``branch_from_turn`` go beyond the SDK's SQLiteSession.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import blake3
from agents.memory.session_settings import SessionSettings, resolve_session_limit

from ..errors import Conflict, SessionExists, SessionNotFound, StorageError
from ..inputs import SESSION_ID_RE
from ..model import Version
from ..store import Store

__all__ = ["CasSession"]

_POP_ATTEMPTS = 1000
_T = TypeVar("_T")
# Every session's store calls run on these few long-lived threads: the SQLite backend
# keeps a connection per calling thread, and callers may start a thread (or an event
# loop with its own executor) per request.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cas-agents")


async def _run(fn: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.wrap_future(_POOL.submit(fn, *args))


class CasSession:
    """The SDK's Session protocol over one cas-store session; safe across threads/processes."""

    def __init__(self, session_id: str, store: Store, *, prefix: str = "agents",
                 session_settings: SessionSettings | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}", prefix):
            raise ValueError("prefix must be 1-16 of A-Z a-z 0-9 _ -")
        self.session_id = session_id
        self.store = store
        self.prefix = prefix
        self.session_settings = session_settings
        sid = f"{prefix}.{session_id}"
        # An id the store cannot spell is hashed; the original stays in the metadata.
        self.store_id = sid if SESSION_ID_RE.fullmatch(sid) else (
            f"{prefix}.h.{blake3.blake3(session_id.encode('utf-8', 'surrogatepass')).hexdigest()}")

    # --- the Session protocol --------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """Return the latest ``limit`` items (all when None) in chronological order."""
        return await _run(self._get_items, limit)

    async def add_items(self, items: list[Any]) -> None:
        """Append items as one version; concurrent writers (threads, processes) all land."""
        await _run(self._add_items, items)

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item (None when empty): compare-and-swap, retried."""
        return await _run(self._pop_item)

    async def clear_session(self) -> None:
        """Remove every item as one intentional version (the history keeps them)."""
        await _run(self._clear)

    # --- beyond SQLiteSession ----------------------------------------------------------------

    def versions(self, limit: int | None = None) -> list[Version]:
        """Return this conversation's versions, newest first ([] before the first item)."""
        try:
            return self.store.versions(self.store_id, limit=limit)
        except SessionNotFound:
            return []

    def get_items_at(self, seq: int, limit: int | None = None) -> list[Any]:
        """Return the items as they were at version seq (latest ``limit`` when given)."""
        if limit is not None and limit <= 0:
            return []
        return self.store.messages(self.store_id, -limit if limit else 0, seq=seq)

    def restore(self, seq: int) -> Version:
        """Make version seq's items the current ones again (a new version)."""
        return self.store.restore(self.store_id, seq)

    def branch(self, new_session_id: str, *, seq: int | None = None) -> CasSession:
        """Return a new session starting from this one at seq (or now); shares every object."""
        other = CasSession(new_session_id, self.store, prefix=self.prefix,
                           session_settings=self.session_settings)
        self.store.fork(self.store_id, other.store_id, seq=seq)
        self.store.update_metadata(other.store_id, self._metadata(new_session_id))
        return other

    def branch_from_turn(self, turn: int, new_session_id: str) -> CasSession:
        """Return a new session holding the items before user turn ``turn`` (1-based).

        As AdvancedSQLiteSession's branches: the new session continues from just before the
        user message that started that turn, so the turn can be asked differently.
        """
        items = self._get_items(None)
        starts = [i for i, item in enumerate(items)
                  if isinstance(item, dict) and item.get("role") == "user"]
        if not 1 <= turn <= len(starts):
            raise ValueError(f"turn {turn} does not exist (the session has {len(starts)})")
        other = self.branch(new_session_id)
        other.store.rewind(other.store_id, starts[turn - 1])
        return other

    def scan_items(self, text: str, limit: int | None = None) -> list[tuple[int, Any]]:
        """Return (index, item) of items whose JSON contains text (case-insensitive).

        A linear scan of this session's items, not an index: the engine has no full-text
        search yet.
        """
        needle = text.casefold()
        out = []
        for i, item in enumerate(self._get_items(None)):
            if needle in json.dumps(item, ensure_ascii=False).casefold():
                out.append((i, item))
                if limit is not None and len(out) >= limit:
                    break
        return out

    # --- the blocking half -------------------------------------------------------------------

    def _metadata(self, session_id: str) -> dict[str, Any]:
        return {"title": f"Agents session {session_id}", "agents": {"session_id": session_id}}

    def _get_items(self, limit: int | None) -> list[Any]:
        limit = resolve_session_limit(limit, self.session_settings)
        if limit is not None and limit <= 0:
            return []
        try:
            return self.store.messages(self.store_id, -limit if limit else 0)
        except SessionNotFound:
            return []

    def _add_items(self, items: list[Any]) -> None:
        if not items:
            return
        try:
            self.store.append(self.store_id, items)
        except SessionNotFound:
            try:
                self.store.create(self.store_id, self._metadata(self.session_id), items)
            except SessionExists:
                self.store.append(self.store_id, items)

    def _pop_item(self) -> Any | None:
        for attempt in range(_POP_ATTEMPTS):
            try:
                head = self.store.load_meta(self.store_id)
            except SessionNotFound:
                return None
            if head.message_count == 0:
                return None
            last = self.store.messages(self.store_id, head.message_count - 1, 1,
                                       seq=head.seq)[0]
            try:
                # Only if nobody moved the head since it was read: then the item removed
                # is exactly the one returned, and two concurrent pops take two items.
                self.store.rewind(self.store_id, head.message_count - 1, expected=head.seq)
                return last
            except Conflict:
                time.sleep(min(0.02, 0.0005 * 2 ** min(attempt, 6)) * random.random())
        raise StorageError(f"session {self.store_id!r}: pop gave up after {_POP_ATTEMPTS} tries")

    def _clear(self) -> None:
        try:
            head = self.store.load_meta(self.store_id)
        except SessionNotFound:
            return
        if head.message_count:
            self.store.rewind(self.store_id, 0)
