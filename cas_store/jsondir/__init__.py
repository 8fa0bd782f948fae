"""Import and export of JSON session directories: one ``<sid>.json`` file per session.

The layout is the one chat web UIs keep: ``<sid>.json`` holds an object with a
``messages`` list and any other top-level fields (title, model, timestamps, token
counts, lineage ids, ...); ``<sid>.json.bak`` is the copy written before a shrinking
save; ``_index.json`` is the sidebar's index (ignored: the store lists sessions itself).

Mapping (see docs/import.md and the "JSON directories" section of docs/design.md):

* ``messages`` becomes the session's message list;
* any other top-level field whose value is a list, whose name is a valid list name and
  whose canonical JSON is at least ``LIST_FIELD_MIN_BYTES`` becomes a **named list**
  (content-addressed, so a metadata update never rewrites it);
* every other field (small lists included) stays in the metadata, verbatim.

Export merges the three back, so a file round-trips as an equal JSON value. A
``.bak`` is imported as the version before its live file; an orphaned ``.bak`` as a
deleted session. Each session's versions are committed in one transaction (a batch),
so a session is imported entirely or not at all; a re-run adds nothing for unchanged
files. Files larger than ``STREAM_MIN_BYTES`` are parsed incrementally, one list item
at a time, so memory stays a small multiple of the file's size.
"""


from .exporter import (
    ExportReport,
    document_layout,
    export_dir,
    export_session,
    fsync_dir,
    write_atomic,
    write_session,
)
from .importer import (
    BATCH_BYTES,
    BATCH_SESSIONS,
    PREFETCH_MIN_SESSIONS,
    SHRINK_MARKERS,
    DirEntry,
    ImportReport,
    SkippedFile,
    import_json_dir,
    marks_intentional_shrink,
    scan_dir,
)
from .reader import (
    BAK_SUFFIX,
    INDEX_FILE,
    LIST_FIELD_MIN_BYTES,
    LIVE_SUFFIX,
    STREAM_MIN_BYTES,
    DocumentError,
    _Doc,
    _Reader,
    epoch_seconds,
    read_document,
    session_id_of,
    split_document,
)

__all__ = [
    "BAK_SUFFIX",
    "BATCH_BYTES",
    "BATCH_SESSIONS",
    "INDEX_FILE",
    "LIST_FIELD_MIN_BYTES",
    "LIVE_SUFFIX",
    "PREFETCH_MIN_SESSIONS",
    "SHRINK_MARKERS",
    "STREAM_MIN_BYTES",
    "DirEntry",
    "DocumentError",
    "ExportReport",
    "ImportReport",
    "SkippedFile",
    "_Doc",
    "_Reader",
    "document_layout",
    "epoch_seconds",
    "export_dir",
    "export_session",
    "fsync_dir",
    "import_json_dir",
    "marks_intentional_shrink",
    "read_document",
    "scan_dir",
    "session_id_of",
    "split_document",
    "write_atomic",
    "write_session",
]
