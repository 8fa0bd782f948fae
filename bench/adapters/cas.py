"""cas-store through its public API: one version per appended message, every version kept."""

from __future__ import annotations

from typing import Any

from cas_store import Store, open_store

from .base import Adapter, Message

SID = "bench-conversation"


class CasStoreAdapter(Adapter):
    key = "cas"
    label = "cas-store"
    versions = True
    growth = "bulk"
    durability = "SQLite WAL, synchronous=FULL (the default)"
    meta_read = "store.load_meta"
    full_read = "store.load"
    version_read = "store.load_version(seq)"

    store: Store | None = None
    _seqs: dict[int, int]

    def open(self) -> None:
        self.store = open_store(self.root / "store.db", synchronous="FULL")
        if not hasattr(self, "_seqs"):
            self._seqs = {}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def _s(self) -> Store:
        assert self.store is not None
        return self.store

    def create(self) -> None:
        v = self._s().create(SID, self.metadata, [])
        self._last = v
        self._seqs[0] = v.seq

    def append(self, message: Message) -> None:
        self._last = self._s().append(SID, [message])

    def append_many(self, messages: list[Message]) -> None:
        self._last = self._s().append(SID, messages)

    def mark_version(self, count: int) -> None:
        assert self._last.message_count == count
        self._seqs[count] = self._last.seq

    def load(self) -> list[Message]:
        return self._s().load(SID).messages

    def load_meta(self) -> Any:
        return self._s().load_meta(SID)

    def cold_meta(self) -> Any:
        with open_store(self.root / "store.db", synchronous="FULL") as fresh:
            return fresh.load_meta(SID)

    def fresh_load(self) -> list[Message] | None:
        with open_store(self.root / "store.db", synchronous="FULL") as fresh:
            return fresh.load(SID).messages

    def load_code(self) -> str | None:
        return (f"from cas_store import open_store\n"
                f"s = open_store({str(self.root / 'store.db')!r})\n"
                f"got = s.load({SID!r}).messages\n")

    def load_version(self, count: int) -> list[Message]:
        return self._s().load_version(SID, self._seqs[count]).messages
