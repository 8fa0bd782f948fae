"""OpenAI Agents SDK's SQLiteSession (openai-agents): add_items per message, no versions.

The SDK's own class, on a file database, with PRAGMA synchronous=FULL added to the
connection set-up it already does (WAL). Its API is async and runs each call on a
worker thread (asyncio.to_thread); one event loop serves every call, as in a server.
Needs no network and no API key: the session never talks to a model.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from agents.memory import SQLiteSession

from .base import Adapter, Message


class _FullSyncSession(SQLiteSession):
    """SQLiteSession whose connections use synchronous=FULL like every other store here."""

    @staticmethod
    def _configure_connection(conn: sqlite3.Connection) -> None:
        SQLiteSession._configure_connection(conn)
        conn.execute("PRAGMA synchronous=FULL")


class OpenAISessionAdapter(Adapter):
    key = "openai"
    label = "OpenAI Agents SQLiteSession"
    versions = False
    growth = "bulk"
    durability = "SQLite WAL, synchronous=FULL (set by the harness)"
    meta_read = "get_items(limit=1) (its cheapest read)"
    full_read = "get_items()"
    version_read = ""

    session: _FullSyncSession | None = None

    def open(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.session = _FullSyncSession("bench-conversation", db_path=self.root / "agents.db")
        # The session opens its connection at its first call. Open it now, as a server's
        # would be: a cold read on a fresh connection is then not the file's only one
        # (which would set up and remove the WAL files each time), as cas-store's is not.
        self.load_meta()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
            self.loop.close()

    def _s(self) -> _FullSyncSession:
        assert self.session is not None
        return self.session

    def synchronous(self) -> list[int]:
        """Return PRAGMA synchronous of every open connection (2 = FULL)."""
        return [c.execute("PRAGMA synchronous").fetchone()[0] for c in self._s()._connections]

    def append(self, message: Message) -> None:
        self.loop.run_until_complete(self._s().add_items([message]))  # type: ignore[list-item]

    def append_many(self, messages: list[Message]) -> None:
        self.loop.run_until_complete(self._s().add_items(messages))  # type: ignore[arg-type]

    def load(self) -> list[Message]:
        items: Any = self.loop.run_until_complete(self._s().get_items())
        return list(items)

    def fresh_load(self) -> list[Message] | None:
        session = _FullSyncSession("bench-conversation", db_path=self.root / "agents.db")
        try:
            items: Any = self.loop.run_until_complete(session.get_items())
            return list(items)
        finally:
            session.close()

    def cold_meta(self) -> Any:
        # SQLiteSession's own query for get_items(limit=1), as raw SQL on a fresh connection.
        con = sqlite3.connect(self.root / "agents.db")
        try:
            return con.execute(
                "SELECT message_data FROM agent_messages WHERE session_id = ?"
                " ORDER BY id DESC LIMIT ?", ("bench-conversation", 1)).fetchall()
        finally:
            con.close()

    def load_meta(self) -> Any:
        return self.loop.run_until_complete(self._s().get_items(limit=1))
