"""The surface the runner drives: create, append, bulk growth, reads, bytes on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

Message = dict[str, Any]


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in path durable (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Adapter:
    """A store holding one conversation, driven one message at a time.

    Subclasses use only the store's public API. ``key``: short name; ``label``: the
    table's name; ``versions``: every appended state stays readable; ``growth``: how
    the runner reaches a size it may not grow to one message at a time ("bulk": the
    store's own many-message write; "seed": one whole save, the store's only write;
    "capped": grown one at a time until the time or disk cap).
    """

    key: ClassVar[str] = ""
    label: ClassVar[str] = ""
    versions: ClassVar[bool] = False
    growth: ClassVar[str] = "bulk"
    durability: ClassVar[str] = ""
    meta_read: ClassVar[str] = ""
    full_read: ClassVar[str] = ""
    version_read: ClassVar[str] = ""

    def __init__(self, root: Path, metadata: dict[str, Any]) -> None:
        self.root = root
        self.metadata = metadata
        root.mkdir(parents=True, exist_ok=True)

    def open(self) -> None:
        """Open (or reopen) the store."""

    def close(self) -> None:
        """Close the store; SQLite stores checkpoint their WAL into the database here."""

    def create(self) -> None:
        """Create the empty conversation with its metadata."""

    def append(self, message: Message) -> None:
        """Append one message durably (one new version where the store keeps versions)."""
        raise NotImplementedError

    def append_many(self, messages: list[Message]) -> None:
        """Append many messages with one durable write (used only for bulk growth)."""
        raise NotImplementedError

    def seed(self, messages: list[Message]) -> None:
        """Replace the conversation with these messages in one save ("seed" growth)."""
        raise NotImplementedError

    def load(self) -> list[Message]:
        """Return every message of the conversation."""
        raise NotImplementedError

    def load_meta(self) -> Any:
        """Return the store's cheapest description of the conversation."""
        raise NotImplementedError

    def mark_version(self, count: int) -> None:
        """Remember the version that holds the first ``count`` messages (no-op without versions)."""

    def load_version(self, count: int) -> list[Message]:
        """Return the conversation as it was with ``count`` messages."""
        raise NotImplementedError

    def cold_meta(self) -> Any:
        """Open a fresh handle, read the metadata once, close it; None: no such read."""
        return None

    def fresh_load(self) -> list[Message] | None:
        """Open a fresh handle, load the whole conversation once, close it; None: not measured.

        A store that keeps nothing between loads (a file read whole) loads the same way
        as ``load``.
        """
        return None

    def load_code(self) -> str | None:
        """Return Python source that loads the whole conversation into ``got`` (run in a
        fresh interpreter to measure peak memory), or None."""
        return None

    def disk_bytes(self) -> int:
        """Return the size of every file the store keeps (call after close)."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                total += os.path.getsize(os.path.join(dirpath, f))
        return total
