"""The values the engine hands out: frozen dataclasses, plain JSON inside."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

#: JSON values as the engine returns them.
JSON = Any


class _Any(enum.Enum):
    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


#: Pass as ``expected`` to apply a change to whatever the head is (no compare-and-swap).
ANY = _Any.ANY
Expected = int | _Any


class Op(enum.StrEnum):
    """Why the pointer moved."""

    CREATE = "create"
    SAVE = "save"
    APPEND = "append"
    REWIND = "rewind"
    UPDATE_METADATA = "update_metadata"
    RESTORE = "restore"
    RECOVER = "recover"
    FORK = "fork"
    DELETE = "delete"
    IMPORT = "import"


@dataclass(frozen=True, slots=True)
class Version:
    """One entry of a session's version log."""

    session_id: str
    seq: int
    manifest: str
    created_at: float
    op: str
    message_count: int
    bytes: int
    intentional_shrink: bool = False
    suspect_shrink: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (every field, by name)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SessionMeta:
    """A session without its messages. It has no messages, so it cannot be saved whole."""

    session_id: str
    seq: int
    manifest: str
    metadata: dict[str, JSON]
    message_count: int
    bytes: int
    created_at: float
    updated_at: float
    list_counts: dict[str, int] = field(default_factory=dict)
    deleted: bool = False
    #: The document's top-level names in order, when one was recorded (an import does).
    key_order: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "session_id": self.session_id,
            "seq": self.seq,
            "manifest": self.manifest,
            "metadata": self.metadata,
            "message_count": self.message_count,
            "bytes": self.bytes,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "list_counts": self.list_counts,
        }


@dataclass(frozen=True, slots=True)
class Session:
    """A session as of one version: metadata, messages and any extra named lists."""

    meta: SessionMeta
    messages: list[JSON]
    lists: dict[str, list[JSON]] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self.meta.session_id

    @property
    def seq(self) -> int:
        """The version this state is."""
        return self.meta.seq

    @property
    def metadata(self) -> dict[str, JSON]:
        """The session's metadata object."""
        return self.meta.metadata

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out = self.meta.to_json()
        out["messages"] = self.messages
        out["lists"] = self.lists
        return out


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What a session list shows; read from beside the head, no manifest read."""

    session_id: str
    title: str
    seq: int
    message_count: int
    bytes: int
    created_at: float
    updated_at: float
    suspect_shrink: bool
    deleted: bool
    #: The head's values of the store's summary keys (pinned, archived, project_id, ...).
    metadata: dict[str, JSON] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (every field, by name)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of a session list and the cursor for the next (None at the end)."""

    sessions: list[SessionSummary]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Diff:
    """How version ``to_seq`` differs from ``from_seq``."""

    session_id: str
    from_seq: int
    to_seq: int
    common_prefix: int
    removed: list[JSON]
    added: list[JSON]
    metadata_changes: dict[str, dict[str, JSON]]

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "session_id": self.session_id,
            "from": self.from_seq,
            "to": self.to_seq,
            "common_prefix": self.common_prefix,
            "removed": self.removed,
            "added": self.added,
            "metadata_changes": self.metadata_changes,
        }


@dataclass(frozen=True, slots=True)
class RecoveryAction:
    """What recovery did (or, in a dry run, would do) for one session."""

    session_id: str
    action: str  # "recovered" | "would_recover" | "skipped"
    shrink_seq: int
    from_count: int
    to_count: int
    new_seq: int | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (every field, by name)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """Every session recovery looked at, and what it did."""

    actions: list[RecoveryAction]
    dry_run: bool

    @property
    def recovered(self) -> list[RecoveryAction]:
        """The sessions whose messages were (or would be) brought back."""
        return [a for a in self.actions if a.action in ("recovered", "would_recover")]

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"dry_run": self.dry_run, "actions": [a.to_json() for a in self.actions]}


@dataclass(frozen=True, slots=True)
class FsckProblem:
    """One thing fsck found wrong, and which versions it affects."""

    kind: str  # "corrupt" | "missing" | "bad_head"
    object_id: str
    detail: str
    affects: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FsckReport:
    """The result of a full check. ``ok`` is True when nothing is wrong."""

    objects_checked: int
    versions_checked: int
    sessions_checked: int
    problems: list[FsckProblem]

    @property
    def ok(self) -> bool:
        """True if every object hashes right and every retained version is complete."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "ok": self.ok,
            "objects_checked": self.objects_checked,
            "versions_checked": self.versions_checked,
            "sessions_checked": self.sessions_checked,
            "problems": [
                {
                    "kind": p.kind,
                    "object_id": p.object_id,
                    "detail": p.detail,
                    "affects": [{"session_id": s, "seq": q} for s, q in p.affects],
                }
                for p in self.problems
            ],
        }


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts and sizes of a store."""

    backend: str
    location: str
    sessions: int
    deleted_sessions: int
    versions: int
    objects: dict[str, int]
    payload_bytes: int
    stored_bytes: int
    disk_bytes: int

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (every field, by name)."""
        return asdict(self)
