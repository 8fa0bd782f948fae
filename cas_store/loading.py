"""The full load's decompression, shared between the loading thread and a worker.

A load reads about a thousand items a batch: one query for their packs, one
decompression, one parse. zstd releases the GIL and orjson does not, so a worker
thread decompresses while the loading thread parses: half of the first batch each,
then batch i + 1 while batch i parses (docs/design.md, "Packs"). Queries and parses
stay on the loading thread, inside its snapshot.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson

from . import packs
from .backends import LOAD_BATCH
from .errors import CorruptObject
from .model import JSON
from .objects import Oid

Unit = tuple[Oid, int, list[tuple[Oid, int]]]  # a level-1 page, its count, its leaves
#: A load hands decompression to a worker only from this many compressed bytes in a
#: batch (a hand-over costs about what decompressing this much takes).
HANDOVER_BYTES = 64 * 1024
#: The worker's share of a batch's compressed bytes: of the first (both threads only
#: decompress), and of each next one (decompressed while this thread parses).
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


def unpack_ahead(frames: Sequence[tuple[Oid, bytes]], *, wait: bool = True
                 ) -> Future[Sequence[bytes | memoryview]]:
    """Start decompressing packs on a worker thread; with wait, return once it has begun.

    The worker needs the GIL to begin, and a parse (orjson, in C) would not give it up
    until it ends; once begun, zstd releases the GIL, so decompression and the caller's
    parse run on two cores. A caller that decompresses next (releasing the GIL) need
    not wait.
    """
    begun = threading.Event()

    def work() -> Sequence[bytes | memoryview]:
        begun.set()
        return packs.payloads(frames)

    future = pool().submit(work)
    if wait:
        begun.wait()
    return future


def share(frames: Sequence[tuple[Oid, bytes]], fraction: float, *, wait: bool
          ) -> tuple[Sequence[tuple[Oid, bytes]], Sequence[tuple[Oid, bytes]],
                     Future[Sequence[bytes | memoryview]] | None]:
    """Split frames into this thread's and a worker's (the last ones, about fraction of the bytes).

    Returns (this thread's, the worker's, the worker's future); below HANDOVER_BYTES
    all stay on this thread and the future is None. With wait, return only once the
    worker has begun (see ``unpack_ahead``).
    """
    sizes = [len(f) for _, f in frames]
    total = sum(sizes)
    if total < HANDOVER_BYTES:
        return frames, (), None
    target, cut, theirs = fraction * total, len(frames), 0
    while cut and abs(theirs + sizes[cut - 1] - target) < abs(theirs - target):
        cut -= 1
        theirs += sizes[cut]
    if cut == len(frames):
        return frames, (), None
    return frames[:cut], frames[cut:], unpack_ahead(frames[cut:], wait=wait)


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
    """Parse a JSON array of canonical items; with exact, by orjson (see packs.exact).

    Raises CorruptObject if the stored bytes do not parse (a frame sound by its checksum
    but holding something else; fsck names the object).
    """
    value: Any = None
    if exact:
        # orjson parses faster and, for bytes without a 19-digit run, exactly alike;
        # anything it refuses is json's to decide.
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(data)
    if value is None:
        try:
            value = json.loads(data)
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
