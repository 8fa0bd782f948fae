"""LangGraph's SqliteSaver: a compiled StateGraph over MessagesState, one checkpoint per message.

A node appends the message given in the run's context; ``durability="exit"`` writes the
run's final checkpoint (one per message) before ``invoke`` returns. Every checkpoint is
kept (the saver's default) and holds the whole message list, so bytes grow with N².
The saver gets a real sqlite3 connection; it sets WAL itself, the harness sets
synchronous=FULL.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.runtime import Runtime

from .base import Adapter, Message

THREAD = "bench-conversation"


@dataclass
class _Incoming:
    message: Message


def _append(state: MessagesState, runtime: Runtime[_Incoming]) -> dict[str, Any]:
    return {"messages": [runtime.context.message]}


class LangGraphAdapter(Adapter):
    key = "langgraph"
    label = "LangGraph SqliteSaver"
    versions = True
    growth = "capped"
    durability = "SQLite WAL, synchronous=FULL (set by the harness)"
    meta_read = "saver.get_tuple (no metadata-only read: decodes the checkpoint)"
    full_read = "graph.get_state"
    version_read = "graph.get_state(checkpoint_id)"

    conn: sqlite3.Connection | None = None
    _ids: dict[int, str]

    def open(self) -> None:
        self.conn = sqlite3.connect(self.root / "checkpoints.sqlite", check_same_thread=False)
        self.saver = SqliteSaver(self.conn)
        self.saver.setup()
        self.conn.execute("PRAGMA synchronous=FULL")
        assert self.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        builder = StateGraph(MessagesState, context_schema=_Incoming)
        builder.add_node("append", _append)
        builder.add_edge(START, "append")
        builder.add_edge("append", END)
        self.graph = builder.compile(checkpointer=self.saver)
        self.config: Any = {"configurable": {"thread_id": THREAD}}
        if not hasattr(self, "_ids"):
            self._ids = {}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def append(self, message: Message) -> None:
        self.graph.invoke({"messages": []}, self.config, context=_Incoming(message),
                          durability="exit")

    def mark_version(self, count: int) -> None:
        assert self.conn is not None
        row = self.conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? "
            "ORDER BY rowid DESC LIMIT 1", (THREAD,)).fetchone()
        self._ids[count] = row[0]

    def load(self) -> list[Message]:
        messages: list[Message] = self.graph.get_state(self.config).values["messages"]
        return messages

    def load_meta(self) -> Any:
        return self.saver.get_tuple(self.config)

    def load_version(self, count: int) -> list[Message]:
        config: Any = {"configurable": {"thread_id": THREAD, "checkpoint_id": self._ids[count]}}
        messages: list[Message] = self.graph.get_state(config).values["messages"]
        return messages
