"""S3-compatible blob store (``s3://bucket/prefix``) on obstore, the Rust object_store client.

Endpoint and credentials come from the standard ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``. Every put is
conditional (``If-None-Match: *``): a 412 means the content is already there, which is
success, and nothing is ever overwritten. Why obstore and this key layout: docs/design.md,
"Object storage client".

Key layout: ``<prefix>/objects/<hex[0:2]>/<hex[2:4]>/<hex>``. Ids are uniform hashes, so
the two levels spread keys evenly over 65,536 "directories": S3 partitions its index by
key prefix and splits hot ranges on any character, and the stores that map keys onto a
file system or a per-directory index (SeaweedFS's filer, MinIO) keep each directory
around 15,000 entries even at 10^9 objects. Listing order stays the id order.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn, TypeVar

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from ..errors import InvalidArgument, StorageError
from ..objects import Oid
from .blobs import BlobInfo, BlobStore

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

# obstore raises some errors as the matching built-in (a missing key is FileNotFoundError),
# others as its own classes: each outcome is caught as both.
_MISSING = (NotFoundError, FileNotFoundError)
_EXISTS = (AlreadyExistsError, PreconditionError, FileExistsError)
_FAILED = (BaseError, OSError)
_REFUSED = (PermissionDeniedError, UnauthenticatedError, PermissionError)

T = TypeVar("T")
R = TypeVar("R")

# S3's bucket rule: 3-63 lowercase letters, digits, dots and hyphens, letters or digits at
# both ends.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HEX = re.compile(r"[0-9a-f]{64}")
DEFAULT_CONCURRENCY = 16
# A store that is down should fail a request in seconds, not after object_store's default
# of ten retries over three minutes: the API answers 503 and the caller retries.
_RETRY: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=15),
    "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(seconds=2),
                "base": 2},
}


def parse_s3_url(url: str) -> tuple[str, str]:
    """Return (bucket, prefix) of an ``s3://bucket/prefix`` URL, or raise InvalidArgument."""
    if not url.startswith("s3://"):
        raise InvalidArgument(f"not an s3:// URL: {url!r}", field="objects")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidArgument(
            f"not an S3 bucket name: {bucket!r} (3-63 lowercase letters, digits, '.', '-')",
            field="objects")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise InvalidArgument(f"not a usable key prefix: {prefix!r}", field="objects")
    return bucket, prefix


def blob_key(oid: Oid) -> str:
    """Return the key of an id below the prefix: ``objects/ab/cd/abcd…`` (64 hex digits)."""
    h = oid.hex()
    return f"objects/{h[:2]}/{h[2:4]}/{h}"


def _oid_of_key(key: str) -> Oid | None:
    name = key.rpartition("/")[2]
    return Oid(bytes.fromhex(name)) if _HEX.fullmatch(name) else None


class S3BlobStore(BlobStore):
    """Frames as S3 objects, written with ``If-None-Match: *`` and fetched in parallel."""

    name = "s3"

    def __init__(self, url: str, *, endpoint: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 region: str | None = None, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        """Open the bucket a URL names; raise StorageError if it cannot be listed."""
        self.bucket, self.prefix = parse_s3_url(url)
        self.location = f"s3://{self.bucket}/{self.prefix}" if self.prefix else \
            f"s3://{self.bucket}"
        env = os.environ
        self.endpoint = endpoint or env.get("AWS_ENDPOINT_URL") or None
        config: dict[str, str] = {"region": region or env.get("AWS_REGION") or "us-east-1"}
        if self.endpoint:
            config["endpoint"] = self.endpoint
        key_id = access_key_id or env.get("AWS_ACCESS_KEY_ID")
        secret = secret_access_key or env.get("AWS_SECRET_ACCESS_KEY")
        if key_id and secret:
            config["access_key_id"] = key_id
            config["secret_access_key"] = secret
            if env.get("AWS_SESSION_TOKEN") and not access_key_id:
                config["session_token"] = env["AWS_SESSION_TOKEN"]
        client: ClientConfig = {
            "connect_timeout": timedelta(seconds=3),
            "timeout": timedelta(seconds=30),
            "pool_max_idle_per_host": str(concurrency * 2),
            # Plain HTTP only when the endpoint says so (a local SeaweedFS or MinIO).
            "allow_http": bool(self.endpoint and self.endpoint.startswith("http://")),
        }
        self._config, self._client = config, client
        self._concurrency = max(1, concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pid = os.getpid()
        self._s3 = self._connect()
        self._check_bucket()

    # --- BlobStore ------------------------------------------------------------------------

    def put(self, oid: Oid, frame: bytes) -> bool:
        """Store frame under oid with ``If-None-Match: *``; False if the key existed (412)."""
        try:
            # One request (no multipart upload): a conditional create is one atomic PUT.
            obstore.put(self._store, blob_key(oid), frame, mode="create", use_multipart=False)
        except _EXISTS:
            return False
        except _FAILED as exc:
            raise self._error(exc, f"write object {oid.hex()}") from None
        return True

    def put_many(self, items: Iterable[tuple[Oid, bytes]]) -> set[Oid]:
        """Store every (oid, frame) as ``put`` does, in parallel; return the ids already there."""
        # One request per id: two racing puts of one id would report it as already there.
        pairs = list(dict(items).items())
        written = self._parallel(lambda p: self.put(*p), pairs)
        return {oid for (oid, _), wrote in zip(pairs, written, strict=True) if not wrote}

    def get_many(self, oids: Sequence[Oid]) -> dict[Oid, bytes]:
        """Return the stored frame of each id that exists, fetched in parallel; missing left out."""
        frames = self._parallel(self._get_one, list(oids))
        return {oid: f for oid, f in zip(oids, frames, strict=True) if f is not None}

    def delete_many(self, oids: Sequence[Oid]) -> None:
        """Delete these ids (bulk DeleteObjects, 1,000 keys a request); missing ids are ignored."""
        keys = [blob_key(oid) for oid in oids]
        for i in range(0, len(keys), 1000):
            try:
                obstore.delete(self._store, keys[i : i + 1000])
            except _MISSING:
                pass
            except _FAILED as exc:
                raise self._error(exc, f"delete {len(keys)} objects") from None

    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Yield every blob under ``<prefix>/objects/`` in key (= id) order, 1,000 a page."""
        try:
            for chunk in obstore.list(self._store, "objects", chunk_size=1000):
                for meta in chunk:
                    oid = _oid_of_key(meta["path"])
                    if oid is not None:  # a key that is not one of ours is left alone
                        yield BlobInfo(oid, meta["size"], meta["last_modified"].timestamp())
        except _FAILED as exc:
            raise self._error(exc, "list objects") from None

    def close(self) -> None:
        """Stop the fetch threads; the HTTP connections close with the client."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # --- internals ----------------------------------------------------------------------------

    def _connect(self) -> S3Store:
        global _RUNTIME_PID
        if _RUNTIME_PID is not None and os.getpid() != _RUNTIME_PID:
            _refuse_forked_child(self.location)
        _RUNTIME_PID = os.getpid()
        try:
            return S3Store(self.bucket, prefix=self.prefix or None,
                           config=self._config,  # type: ignore[arg-type]
                           client_options=self._client, retry_config=_RETRY)
        except _FAILED as exc:
            raise self._error(exc, "configure the client") from None

    @property
    def _store(self) -> S3Store:
        if self._pid != os.getpid():
            _refuse_forked_child(self.location)
        return self._s3

    def _get_one(self, oid: Oid) -> bytes | None:
        try:
            result = obstore.get(self._store, blob_key(oid))
            data = result.bytes().to_bytes()
        except _MISSING as exc:
            if "NoSuchBucket" in str(exc):
                raise self._error(exc, "read objects") from None
            return None
        except _FAILED as exc:
            raise self._error(exc, f"read object {oid.hex()}") from None
        if len(data) != result.meta["size"]:
            raise StorageError(
                f"object {oid.hex()} came back with {len(data)} of {result.meta['size']} bytes"
                f" from {self.location}")
        return data

    def _parallel(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        # One item needs no thread; a batch runs on the pool and every request finishes
        # before the first failure is raised, so none is left running behind the caller.
        if len(items) <= 1:
            return [fn(x) for x in items]
        pool = self._executor()
        futures: list[Future[R]] = [pool.submit(fn, x) for x in items]
        wait(futures)
        return [f.result() for f in futures]

    def _executor(self) -> ThreadPoolExecutor:
        self._store  # noqa: B018 - refuses a forked child before its pool (no threads) hangs
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="cas-s3")
            return self._pool

    def _check_bucket(self) -> None:
        try:
            stream = obstore.list(self._store, "objects", chunk_size=1)
            next(iter(stream), None)
        except _FAILED as exc:
            raise self._error(exc, "open the bucket") from None

    def _error(self, exc: Exception, action: str) -> StorageError:
        where = f"{self.location}" + (f" at {self.endpoint}" if self.endpoint else "")
        text = str(exc)
        if "NoSuchBucket" in text:
            why = f"bucket {self.bucket!r} does not exist"
        elif isinstance(exc, _REFUSED) or any(
                code in text for code in ("SignatureDoesNotMatch", "InvalidAccessKeyId",
                                          "AccessDenied")):
            why = "the credentials were refused (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        elif any(s in text.lower() for s in ("connect", "timed out", "timeout", "dns")):
            why = "the object store is unreachable"
        else:
            why = _first_line(text)
        return StorageError(f"could not {action} on {where}: {why}", objects=self.location)


# obstore runs its requests on one tokio runtime per process, started by the first client,
# and a forked child inherits it without its threads: any request there hangs for ever,
# also through a client made in the child. So a process forked after this one used S3
# is refused with an error instead (it can still exec, or be started with "spawn").
_RUNTIME_PID: int | None = None


def _refuse_forked_child(location: str) -> NoReturn:
    raise StorageError(
        f"cannot use {location} in a process forked after its parent used S3 (the S3"
        " client's I/O threads do not survive fork); start the process fresh (exec, or"
        " multiprocessing's 'spawn' method)", objects=location)


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line if len(line) <= limit else line[:limit] + "…"


__all__ = ["S3BlobStore", "blob_key", "parse_s3_url"]
