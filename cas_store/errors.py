"""The error tree: one root, grouped by what a caller would do about it.

Every error has a stable string ``code`` (codes are only ever added, never renamed),
so that the HTTP layer and the command line can map them in one place each.
"""

from __future__ import annotations

from typing import Any


class CasError(Exception):
    """Root of every error the engine raises on purpose."""

    code = "cas_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return self.message


# --- not found -----------------------------------------------------------------------


class NotFound(CasError, KeyError):
    """Something named by the caller does not exist."""

    code = "not_found"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class SessionNotFound(NotFound):
    """The session does not exist, or has been deleted."""

    code = "session_not_found"


class VersionNotFound(NotFound):
    """The session exists but has no such version (never had, or pruned by GC)."""

    code = "version_not_found"


# --- already exists / conflict ---------------------------------------------------------


class AlreadyExists(CasError):
    """The caller asked to create something that exists."""

    code = "already_exists"


class SessionExists(AlreadyExists):
    """A live session with that id exists already."""

    code = "session_exists"


class Conflict(CasError):
    """The session's head is not the one the caller expected (lost compare-and-swap)."""

    code = "conflict"

    def __init__(self, message: str, *, current: int, expected: int | None = None) -> None:
        super().__init__(message, current=current, expected=expected)
        self.current = current
        self.expected = expected


# --- invalid input ----------------------------------------------------------------------


class InvalidInput(CasError, ValueError):
    """The caller passed something the store will not accept; nothing was written."""

    code = "invalid_input"


class InvalidSessionId(InvalidInput):
    """A session id outside ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``."""

    code = "invalid_session_id"


class InvalidMessage(InvalidInput):
    """A message that is not a JSON object, not serialisable, or too large."""

    code = "invalid_message"

    def __init__(self, message: str, *, index: int, field: str = "messages") -> None:
        super().__init__(message, index=index, field=field)
        self.index = index
        self.field = field


class InvalidMetadata(InvalidInput):
    """Metadata or a metadata patch that is not a JSON object or is too large."""

    code = "invalid_metadata"


class InvalidArgument(InvalidInput):
    """Any other bad parameter (a negative count, an unknown list name, a bad cursor)."""

    code = "invalid_argument"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


# --- integrity and storage ----------------------------------------------------------------


class IntegrityError(CasError):
    """Stored bytes are not what their id promises, or an object a version needs is gone."""

    code = "integrity_error"

    def about(self, session_id: str) -> None:
        """Name the session whose read met the damage (once), in the message and details."""
        if "session_id" not in self.details:
            self.details["session_id"] = session_id
            self.message = f"{self.message} (session {session_id!r})"


class CorruptObject(IntegrityError):
    """An object failed to decompress or its bytes do not hash to its id."""

    code = "corrupt_object"

    def __init__(self, message: str, *, object_id: str, session_id: str | None = None) -> None:
        super().__init__(message, object_id=object_id)
        self.object_id = object_id
        if session_id is not None:
            self.about(session_id)


class ObjectNotFound(IntegrityError):
    """An object a version references is missing from the object store.

    Damage, not a caller's mistake: it is no ``NotFound`` (fsck names what it affects,
    and gc refuses to sweep a store that has one).
    """

    code = "missing_object"

    def __init__(self, message: str, *, object_id: str, session_id: str | None = None) -> None:
        super().__init__(message, object_id=object_id)
        self.object_id = object_id
        if session_id is not None:
            self.about(session_id)


class StoreDamaged(IntegrityError):
    """A deleting operation (gc) refused: objects the store needs are missing or unreadable.

    ``objects`` lists their ids, ``sessions`` the sessions affected; fsck tells more.
    """

    code = "store_damaged"

    def __init__(self, message: str, *, objects: list[str], sessions: list[str]) -> None:
        super().__init__(message, objects=objects, sessions=sessions)
        self.objects = objects
        self.sessions = sessions


class StorageError(CasError):
    """The backend failed (disk full, database locked for too long, read-only, I/O error)."""

    code = "storage_error"
    #: Whether the same request may succeed if simply retried soon (a busy store may; a
    #: read-only or full disk needs someone to act first).
    retryable = False


class StoreLocked(StorageError):
    """Another process held the store's write lock for longer than the busy timeout."""

    code = "store_locked"
    retryable = True




class CorruptStore(IntegrityError, StorageError):
    """The store's database file is damaged (SQLite reports it malformed or not a database).

    An integrity error first (HTTP 500, exit 6: what is stored is not what was written),
    and a storage failure too (the file, not one object). Run ``cas-store fsck``: it names
    what SQLite's integrity check finds and which sessions can still be read.
    """

    code = "corrupt_store"
