"""Request and response models: the API's contract, and what /openapi.json publishes.

Response models mirror the engine's ``to_json()`` shapes (cas_store/model.py) field for
field; timestamps are float seconds since the epoch, as the engine keeps them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ..inputs import SESSION_ID_MAX, SESSION_ID_RE

#: A session id as the engine accepts it (also the pattern of the {sid} path segment).
SESSION_ID_PATTERN = f"^{SESSION_ID_RE.pattern}$"
#: Largest version number the API accepts in a parameter (JSON-safe integer range).
MAX_SEQ = 2**53 - 1

SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN, min_length=1,
                                 max_length=SESSION_ID_MAX,
                                 examples=["chat-1"])]
Message = Annotated[dict[str, Any], Field(examples=[{"role": "user", "content": "hello"}])]
Metadata = Annotated[dict[str, Any], Field(examples=[{"title": "Trip to Rome"}])]
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# --- requests -----------------------------------------------------------------------------


class SessionCreate(_Strict):
    """Create a session; the id is generated when absent."""

    session_id: SessionId | None = None
    metadata: Metadata = Field(default_factory=dict)
    messages: list[Message] = Field(default_factory=list)


class SessionReplace(_Strict):
    """Replace metadata and the whole message list (a shrink is flagged unless intentional)."""

    metadata: Metadata
    messages: list[Message]
    intentional_shrink: bool = False


class MessagesAppend(_Strict):
    """Messages to append, in order, atomically."""

    messages: list[Message]


class Rewind(_Strict):
    """Keep the first ``keep`` messages, then append ``messages``; an intentional change."""

    keep: int = Field(ge=0, le=MAX_SEQ)
    messages: list[Message] = Field(default_factory=list)


class Restore(_Strict):
    """The version to bring back as the new head."""

    seq: Seq


class Fork(_Strict):
    """Start a new session from this one's head (or version ``seq``)."""

    session_id: SessionId | None = None
    seq: Seq | None = None


# --- responses ----------------------------------------------------------------------------


class VersionPublic(BaseModel):
    """One entry of a session's version log; also what every write returns."""

    session_id: str
    seq: int
    manifest: str
    created_at: float
    op: str
    message_count: int
    bytes: int
    intentional_shrink: bool
    suspect_shrink: bool


class SessionMetaPublic(BaseModel):
    """A session without its messages."""

    session_id: str
    seq: int
    manifest: str
    metadata: dict[str, Any]
    message_count: int
    bytes: int
    created_at: float
    updated_at: float
    list_counts: dict[str, int]


class SessionPublic(SessionMetaPublic):
    """A whole session: metadata, messages and any extra named lists."""

    messages: list[dict[str, Any]]
    lists: dict[str, list[Any]]


class SessionSummary(BaseModel):
    """A row of the session list (read from beside the head; no messages)."""

    session_id: str
    title: str
    seq: int
    message_count: int
    bytes: int
    created_at: float
    updated_at: float
    suspect_shrink: bool
    deleted: bool
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="The head's values of the store's summary keys (pinned, archived, ...).")


class SessionPage(BaseModel):
    """A page of sessions, newest update first; pass next_cursor to get the next page."""

    sessions: list[SessionSummary]
    next_cursor: str | None


class MessagesPage(BaseModel):
    """A slice of a session's messages at version ``seq``."""

    session_id: str
    seq: int
    message_count: int
    offset: int = Field(description="Index of the first message returned.")
    messages: list[dict[str, Any]]


class VersionPage(BaseModel):
    """Versions newest first; pass next_before as ``before`` to get older ones."""

    session_id: str
    versions: list[VersionPublic]
    next_before: int | None


class MetadataChange(BaseModel):
    """A metadata key's value before and after (null: absent)."""

    model_config = ConfigDict(populate_by_name=True)

    from_: Any = Field(alias="from")
    to: Any


class DiffPublic(BaseModel):
    """How version ``to`` differs from version ``from``."""

    model_config = ConfigDict(populate_by_name=True)

    session_id: str
    from_: int = Field(alias="from")
    to: int
    common_prefix: int
    removed: list[Any]
    added: list[Any]
    metadata_changes: dict[str, MetadataChange]


class RecoveryActionPublic(BaseModel):
    """What recovery did (or would do) for one session."""

    session_id: str
    action: str = Field(description="recovered, would_recover or skipped")
    shrink_seq: int
    from_count: int
    to_count: int
    new_seq: int | None
    reason: str


class RecoveryReportPublic(BaseModel):
    """Every session recovery looked at."""

    dry_run: bool
    actions: list[RecoveryActionPublic]


class Health(BaseModel):
    """Liveness, and (to a caller with the token, if any) which store this server serves."""

    status: str
    version: str
    backend: str | None = None
    store: str | None = None


class ErrorDetail(BaseModel):
    """An error: a stable code, a message, and details such as field, index, current_seq."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(examples=["session_not_found"])
    message: str


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    error: ErrorDetail
