"""Storage backends: the interface every backend implements, and the backends themselves.

``base`` holds the interface (objects + version log); each other module is one backend.
The engine imports only ``base``; a backend module is imported when a store names it
(``open_backend``), so a SQLite user never needs the PostgreSQL driver installed.
"""

from __future__ import annotations

import os
import re

from ..errors import InvalidArgument, StorageError
from .base import (
    Backend,
    Commit,
    CommitWatch,
    HeadRow,
    IndexUpdate,
    LogEntry,
    ObjectInfo,
    ObjectWrite,
    Retry,
    SearchHit,
    SearchTerm,
    summary_matches,
)

__all__ = [
    "Backend",
    "Commit",
    "CommitWatch",
    "HeadRow",
    "IndexUpdate",
    "LogEntry",
    "ObjectInfo",
    "ObjectWrite",
    "Retry",
    "SearchHit",
    "SearchTerm",
    "is_url",
    "open_backend",
    "summary_matches",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str | os.PathLike[str]) -> bool:
    """Return True if location names a networked store (scheme://...), not a SQLite file."""
    return isinstance(location, str) and _URL.match(location) is not None


def open_backend(location: str | os.PathLike[str], *, objects: str | None = None,
                 synchronous: str = "FULL") -> Backend:
    """Open the backend a store location names: a postgresql:// URL or a SQLite file path.

    ``objects`` (``s3://bucket/prefix``) puts object bytes in that store; only a
    PostgreSQL store takes it, and records it, so later opens without it use it too.
    ``synchronous`` is SQLite's durability knob.
    """
    text = os.fspath(location)
    if text.startswith(POSTGRES_SCHEMES):
        try:
            from .postgres import PostgresBackend
        except ImportError:
            raise StorageError(
                "a postgresql:// store needs psycopg: pip install 'cas-store[postgres]'"
            ) from None
        return PostgresBackend(text, objects=objects)
    if is_url(text):
        raise InvalidArgument(
            f"unsupported store URL {text.partition('://')[0]}:// (use a file path or"
            " postgresql://user:pass@host:port/db)", field="store")
    if objects:
        raise InvalidArgument("--objects needs a postgresql:// store", field="objects")
    from .sqlite import SQLiteBackend

    return SQLiteBackend(text, synchronous=synchronous)
