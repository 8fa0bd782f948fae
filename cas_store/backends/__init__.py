"""Storage backends: the interface every backend implements, and the backends themselves.

``base`` holds the interface (objects + version log); each other module is one backend.
The engine imports only ``base``; a backend module is imported when a store names it.
"""

from __future__ import annotations

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
)

__all__ = ["Backend", "Commit", "CommitWatch", "HeadRow", "IndexUpdate", "LogEntry",
           "ObjectInfo", "ObjectWrite", "Retry", "SearchHit", "SearchTerm"]
