"""The incident's design: the whole session JSON-dumped, fsynced and os.replaced per save."""

from __future__ import annotations

import json
import os
from typing import Any

from .base import Adapter, Message, fsync_dir


class JsonFileAdapter(Adapter):
    key = "json"
    label = "whole-JSON file"
    versions = False
    growth = "seed"
    durability = "fsync(file) + os.replace + fsync(dir) per save"
    meta_read = "json.load, drop messages"
    full_read = "json.load"
    version_read = ""

    session: dict[str, Any]

    @property
    def path(self) -> str:
        return str(self.root / "session.json")

    def _save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.session))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.root)

    def open(self) -> None:
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.session = json.load(f)

    def create(self) -> None:
        self.session = {"id": "bench-conversation", "metadata": self.metadata, "messages": []}
        self._save()

    def append(self, message: Message) -> None:
        self.session["messages"].append(message)
        self._save()

    def seed(self, messages: list[Message]) -> None:
        self.session["messages"] = list(messages)
        self._save()

    def load(self) -> list[Message]:
        with open(self.path, encoding="utf-8") as f:
            messages: list[Message] = json.load(f)["messages"]
        return messages

    def fresh_load(self) -> list[Message] | None:
        return self.load()

    def load_code(self) -> str | None:
        return f"import json\ngot = json.load(open({self.path!r}, encoding='utf-8'))['messages']\n"

    def load_meta(self) -> Any:
        # The naive read the incident began with: parse everything, keep the metadata.
        with open(self.path, encoding="utf-8") as f:
            session = json.load(f)
        session.pop("messages")
        return session
