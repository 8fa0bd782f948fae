"""Storage backends: the interface every backend implements, and the backends themselves.

``base`` holds the interface (objects + version log); each other module is one backend.
The engine imports only ``base``; a backend module is imported when a store names it.
"""

from __future__ import annotations

from .base import (
    LOAD_BATCH,
    Backend,
    Commit,
    HeadRow,
    LogEntry,
    ObjectInfo,
    ObjectWrite,
    Retry,
)

__all__ = ["LOAD_BATCH", "Backend", "Commit", "HeadRow", "LogEntry", "ObjectInfo", "ObjectWrite",
           "Retry"]
