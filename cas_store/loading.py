"""The full load's decompression, shared between the loading thread and a worker.

A load reads about a thousand items a batch: one query for their packs, one
decompression, one parse. zstd releases the GIL and orjson does not, so a worker
thread decompresses while the loading thread parses: part of the first batch while
the loading thread reads the rest of what the load needs and decompresses the other
part, then batch i + 1 while batch i parses (``Pipeline``; docs/design.md, "Packs").
Queries and parses stay on the loading thread, inside its snapshot.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from . import packs
from .backends import LOAD_BATCH
from .errors import CorruptObject
from .model import JSON
from .objects import Oid, parse_json

#: A level-1 page, its item count, and its leaves (None: not read, for its pack is expected).
Unit = tuple[Oid, int, list[tuple[Oid, int]] | None]
#: A load hands decompression to a worker only from this many compressed bytes in a
#: batch (a hand-over costs about what decompressing this much takes).
HANDOVER_BYTES = 64 * 1024
#: The worker's share of a batch's compressed bytes: of the first (while this thread
#: reads the metadata and the tail and decompresses the rest: measured best at 0.6-0.7),
#: and of each next one (decompressed while this thread parses).
FIRST_SHARE = 0.6
NEXT_SHARE = 1.0
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def pool() -> ThreadPoolExecutor:
    """Return this process's load workers (made anew after fork: threads do not survive it)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                                                 thread_name_prefix="cas-load"))
    return _POOL[1]


class Pipeline:
    """One worker decompressing a load's packs, batch after batch, in the order handed over.

    zstd releases the GIL and orjson does not, so the worker decompresses while the
    loading thread parses. But the worker needs the GIL to begin a batch, and a parse
    would hold it until it ends: so a batch handed over is waited for until begun (see
    ``put``). The load hands batch i + 1 over before it waits for batch i, and the
    worker goes from one to the next without a pause; then batch i is done by the time
    batch i + 1 has begun, and each batch costs one wake-up of the loading thread, not
    two (a wake-up costs about 0.05-0.1 ms on these machines). Use it as a context
    manager: leaving it lets the worker go.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._running = False
        self._closed = False

    def put(self, frames: Sequence[tuple[Oid, bytes]], *, wait: bool = True,
            last: bool = False) -> Future[Sequence[bytes | memoryview]]:
        """Hand packs to the worker; with wait, return once it has begun them.

        The future gives their payloads (see packs.payloads). A caller that
        decompresses next itself (releasing the GIL) need not wait. ``last``: nothing
        follows, so the worker leaves after these without waiting to be told.
        """
        job = _Job(frames)
        self._queue.put(job)
        if last:
            self._queue.put(None)
            self._closed = True
        if not self._running:
            pool().submit(self._run)
            self._running = True
        if wait:
            job.begun.wait()
        return job.future

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._running and not self._closed:
            self._queue.put(None)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            job.begun.set()
            try:
                job.future.set_result(packs.payloads(job.frames))
            except BaseException as exc:  # the loading thread's to raise
                job.future.set_exception(exc)


class _Job:
    """Packs handed to a pipeline's worker, the event it sets on taking them, their result."""

    __slots__ = ("begun", "frames", "future")

    def __init__(self, frames: Sequence[tuple[Oid, bytes]]) -> None:
        self.frames = frames
        self.begun = threading.Event()
        self.future: Future[Sequence[bytes | memoryview]] = Future()


def cut(frames: Sequence[tuple[Oid, bytes]], fraction: float
        ) -> tuple[Sequence[tuple[Oid, bytes]], Sequence[tuple[Oid, bytes]]]:
    """Split frames into this thread's and a worker's (the last ones, about fraction of the bytes).

    Below HANDOVER_BYTES in all, the worker gets none.
    """
    sizes = [len(f) for _, f in frames]
    total = sum(sizes)
    if total < HANDOVER_BYTES:
        return frames, ()
    target, at, theirs = fraction * total, len(frames), 0
    while at and abs(theirs + sizes[at - 1] - target) < abs(theirs - target):
        at -= 1
        theirs += sizes[at]
    return frames[:at], frames[at:]


def batches(units: Sequence[Unit]) -> list[list[Unit]]:
    """Cut consecutive level-1 units into batches of about LOAD_BATCH items.

    One parse per thousand items: orjson parses 8.7 MB in 15 ms as ten arrays and in
    20 ms as one (measured).
    """
    out: list[list[Unit]] = []
    cur: list[Unit] = []
    n = 0
    for u in units:
        cur.append(u)
        n += u[1]
        if n >= LOAD_BATCH:
            out.append(cur)
            cur, n = [], 0
    if cur:
        out.append(cur)
    return out


def parse_array(data: bytes, exact: bool) -> list[JSON]:
    """Parse a JSON array of canonical items; with exact, by orjson (objects.parse_json).

    Raises CorruptObject if the stored bytes do not parse (a frame sound by its checksum
    but holding something else; fsck names the object).
    """
    try:
        value = parse_json(data, exact)
    except ValueError:
        value = None
    if not isinstance(value, list):
        raise CorruptObject("stored messages do not parse as JSON; run `cas-store fsck` to"
                            " find the damaged object", object_id="")
    return value


def json_array(payloads: Sequence[bytes | memoryview]) -> bytes:
    """Return canonical JSON payloads joined into one JSON array."""
    # One json.loads over the joined payloads is several times faster than one call per
    # message, and each payload is a canonical JSON value already.
    return b"[" + b",".join(payloads) + b"]"
