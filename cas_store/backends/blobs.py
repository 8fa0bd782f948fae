"""Blob stores: immutable object bytes keyed by id, for backends that keep the index elsewhere.

A backend whose version log and object index live in a database (PostgreSQL) can keep
the objects' bytes in a blob store instead (S3). A blob store knows nothing of kinds,
sizes or write times; it holds exactly the frame it was given under each id, and never
replaces one: ids are content hashes, so a second put of an id is the same bytes, and
"already there" is a normal outcome. Verifying that a frame hashes to its id is the
engine's job (``verify_reads``, fsck); a blob store only promises to return the bytes
it stored.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from ..errors import InvalidArgument
from ..objects import Oid


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """One stored blob as a listing shows it: id, stored bytes, and the store's write time."""

    oid: Oid
    size: int
    modified: float  # seconds since the epoch, the blob store's own clock


class BlobStore(abc.ABC):
    """Immutable frames keyed by object id. Thread-safe; each process opens its own."""

    name: str = "abstract"
    location: str = ""

    @abc.abstractmethod
    def put(self, oid: Oid, frame: bytes) -> bool:
        """Store frame under oid unless the id is present; True if this call wrote it.

        Never overwrites. False means the id was already stored (the same content, since
        ids are hashes): a caller that relies on the blob staying must then check that
        nothing is deleting it, because an existing blob's write time is not refreshed.
        """

    def put_many(self, items: Iterable[tuple[Oid, bytes]]) -> set[Oid]:
        """Store every (oid, frame) as ``put`` does; return the ids that were already there.

        All puts have finished (or failed) when this returns. A failure raises after the
        others finished; the frames written so far stay (they are unreferenced until a
        pointer names them). Backends override this to write in parallel.
        """
        return {oid for oid, frame in items if not self.put(oid, frame)}

    @abc.abstractmethod
    def get_many(self, oids: Sequence[Oid]) -> dict[Oid, bytes]:
        """Return the stored frame of each id that exists; missing ids are left out."""

    def get(self, oid: Oid) -> bytes | None:
        """Return the stored frame of one id, or None."""
        return self.get_many([oid]).get(oid)

    @abc.abstractmethod
    def delete_many(self, oids: Sequence[Oid]) -> None:
        """Delete these ids; ids not stored are ignored. Deleted ids are gone when it returns."""

    @abc.abstractmethod
    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Yield every stored blob once, in ascending id order, a page at a time."""

    def iter_oids(self) -> Iterator[Oid]:
        """Yield every stored id once, in ascending id order (fsck and GC's orphan listing)."""
        return (info.oid for info in self.iter_blobs())

    def close(self) -> None:  # noqa: B027 - a blob store with nothing to release need not override
        """Release connections and threads held by this process."""

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_blob_store(url: str) -> BlobStore:
    """Return the blob store a URL names (``s3://bucket/prefix``), or raise InvalidArgument."""
    if url.startswith("s3://"):
        from .s3 import S3BlobStore

        return S3BlobStore(url)
    raise InvalidArgument(f"not an object location: {url!r} (expected s3://bucket/prefix)",
                          field="objects")
