"""cas-store: a content-addressed, versioned store for chat and agent sessions."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from .backends import Backend, open_backend
from .backends.sqlite import SQLiteBackend
from .errors import (
    AlreadyExists,
    CasError,
    Conflict,
    CorruptObject,
    CorruptStore,
    IntegrityError,
    InvalidArgument,
    InvalidInput,
    InvalidMessage,
    InvalidMetadata,
    InvalidSessionId,
    NotFound,
    ObjectNotFound,
    SessionExists,
    SessionNotFound,
    StorageError,
    StoreDamaged,
    StoreLocked,
    VersionNotFound,
)
from .gc import GCReport, gc
from .inputs import Limits, validate_session_id
from .metadata import merge_patch
from .model import (
    ANY,
    Diff,
    FsckReport,
    Op,
    RecoveryAction,
    RecoveryReport,
    Session,
    SessionMeta,
    SessionPage,
    SessionSummary,
    StoreStats,
    Version,
)
from .store import Store

__version__ = "0.1.0"


def default_store_path() -> Path:
    """Return the default store file: sessions.db in the user's data directory (XDG)."""
    return Path(platformdirs.user_data_dir("cas-store")) / "sessions.db"


def open_store(location: str | os.PathLike[str], *, objects: str | None = None,
               synchronous: str = "FULL", limits: Limits | None = None) -> Store:
    """Open (creating if needed) the store at location: a SQLite file path or a URL.

    ``postgresql://user:pass@host:port/db`` (or ``postgres://``) opens a PostgreSQL
    store, creating or migrating its schema; ``objects`` (``s3://bucket/prefix``) then
    keeps object bytes in that object store. ``synchronous`` is SQLite's durability
    knob: FULL (default: an acknowledged save survives power loss), NORMAL (survives a
    crash of the process; the last saves may roll back on power loss), EXTRA.
    """
    return Store(open_backend(location, objects=objects, synchronous=synchronous),
                 limits=limits)


__all__ = [
    "ANY",
    "AlreadyExists",
    "Backend",
    "CasError",
    "Conflict",
    "CorruptObject",
    "CorruptStore",
    "Diff",
    "FsckReport",
    "GCReport",
    "IntegrityError",
    "InvalidArgument",
    "InvalidInput",
    "InvalidMessage",
    "InvalidMetadata",
    "InvalidSessionId",
    "Limits",
    "NotFound",
    "ObjectNotFound",
    "Op",
    "RecoveryAction",
    "RecoveryReport",
    "SQLiteBackend",
    "Session",
    "SessionExists",
    "SessionMeta",
    "SessionNotFound",
    "SessionPage",
    "SessionSummary",
    "StorageError",
    "Store",
    "StoreDamaged",
    "StoreLocked",
    "StoreStats",
    "Version",
    "VersionNotFound",
    "default_store_path",
    "gc",
    "merge_patch",
    "open_store",
    "validate_session_id",
]
