"""The floor: one JSON line appended and fsynced per message, nothing else."""

from __future__ import annotations

import json
import os
from typing import Any

from .base import Adapter, Message, fsync_dir


class RawAppendAdapter(Adapter):
    key = "raw"
    label = "raw append (floor)"
    versions = False
    growth = "bulk"
    durability = "write + fsync per append"
    meta_read = "read the first line"
    full_read = "read and parse every line"
    version_read = ""

    fd: int | None = None

    @property
    def path(self) -> str:
        return str(self.root / "session.jsonl")

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _write(self, data: bytes) -> None:
        assert self.fd is not None
        os.write(self.fd, data)
        os.fsync(self.fd)

    def create(self) -> None:
        self._write(json.dumps({"metadata": self.metadata}).encode() + b"\n")
        fsync_dir(self.root)

    def append(self, message: Message) -> None:
        self._write(json.dumps(message, ensure_ascii=False).encode() + b"\n")

    def append_many(self, messages: list[Message]) -> None:
        self._write(b"".join(json.dumps(m, ensure_ascii=False).encode() + b"\n"
                             for m in messages))

    def load(self) -> list[Message]:
        with open(self.path, "rb") as f:
            f.readline()
            return [json.loads(line) for line in f]

    def fresh_load(self) -> list[Message] | None:
        return self.load()

    def load_meta(self) -> Any:
        with open(self.path, "rb") as f:
            return json.loads(f.readline())
