"""S3BlobStore against a real SeaweedFS: put-if-absent, parallel reads, deletes, listing, errors."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3server import SeaweedServer

from cas_store.backends.blobs import BlobStore, open_blob_store
from cas_store.backends.s3 import S3BlobStore, blob_key, parse_s3_url
from cas_store.errors import InvalidArgument, StorageError
from cas_store.objects import Kind, Oid, compress, decompress, object_id


def rand_oid() -> Oid:
    return Oid(os.urandom(32))


def frames(n: int) -> list[tuple[Oid, bytes]]:
    out = []
    for i in range(n):
        payload = f'{{"content":"message {i}","role":"user"}}'.encode() * (1 + i % 7)
        out.append((object_id(Kind.CHUNK, payload), compress(payload)))
    return out


@pytest.fixture
def blobs(s3_url: str) -> Iterator[BlobStore]:
    store = open_blob_store(s3_url)
    yield store
    store.close()


def test_put_is_put_if_absent(blobs: BlobStore) -> None:
    oid = rand_oid()
    assert blobs.put(oid, b"first") is True
    assert blobs.put(oid, b"first") is False  # already there: success, not an error
    assert blobs.put(oid, b"other bytes") is False
    assert blobs.get(oid) == b"first"  # never overwritten


def test_put_many_writes_in_parallel_and_names_those_already_there(blobs: BlobStore) -> None:
    items = frames(120)
    assert blobs.put_many(items[:20]) == set()
    assert blobs.put_many(items) == {oid for oid, _ in items[:20]}
    assert blobs.put_many([]) == set()
    got = blobs.get_many([oid for oid, _ in items])
    assert got == dict(items)


def test_racing_puts_of_one_id_have_exactly_one_winner(blobs: BlobStore) -> None:
    for _ in range(10):
        oid = rand_oid()
        barrier = threading.Barrier(8)
        wrote: dict[int, bool] = {}

        def put(i: int, oid: Oid = oid, barrier: threading.Barrier = barrier,
                wrote: dict[int, bool] = wrote) -> None:
            barrier.wait()
            wrote[i] = blobs.put(oid, f"body {i}".encode())

        threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, w in wrote.items() if w]
        assert len(winners) == 1
        assert blobs.get(oid) == f"body {winners[0]}".encode()


def test_put_many_writes_a_repeated_id_once(blobs: BlobStore) -> None:
    oid = rand_oid()
    assert blobs.put_many([(oid, b"x"), (oid, b"x"), (oid, b"x")]) == set()
    assert blobs.get(oid) == b"x"


def test_get_many_returns_exact_bytes_and_leaves_out_missing(blobs: BlobStore) -> None:
    items = frames(50)
    blobs.put_many(items)
    missing = [rand_oid() for _ in range(5)]
    got = blobs.get_many(missing[:2] + [oid for oid, _ in items] + missing[2:])
    assert set(got) == {oid for oid, _ in items}
    for oid, frame in items:
        assert got[oid] == frame
        payload = decompress(oid, got[oid], verify=True, kind=Kind.CHUNK)
        assert object_id(Kind.CHUNK, payload) == oid
    assert blobs.get_many([]) == {}
    assert blobs.get_many(missing) == {}
    assert blobs.get(missing[0]) is None


def test_empty_frame_round_trips(blobs: BlobStore) -> None:
    oid = rand_oid()
    assert blobs.put(oid, b"")
    assert blobs.get_many([oid]) == {oid: b""}


def test_parallel_readers_from_many_threads(blobs: BlobStore) -> None:
    items = frames(40)
    blobs.put_many(items)
    want = dict(items)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(3):
                assert blobs.get_many(list(want)) == want
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_key_layout_fans_out_by_two_hex_levels(s3_server: SeaweedServer, s3_url: str,
                                               blobs: BlobStore) -> None:
    oid = Oid(bytes.fromhex("abcd" + "01" * 30))
    blobs.put(oid, b"x")
    bucket, prefix = parse_s3_url(s3_url)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"{prefix}/objects/ab/cd/{oid.hex()}"]
    assert blob_key(oid) == f"objects/ab/cd/{oid.hex()}"
    # Without a prefix the layout starts at the bucket's root.
    root = open_blob_store(f"s3://{bucket}")
    try:
        other = rand_oid()
        root.put(other, b"y")
        assert list(root.iter_oids()) == [other]
        assert root.get(other) == b"y" and root.get(oid) is None
    finally:
        root.close()
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"objects/{other.hex()[:2]}/{other.hex()[2:4]}/{other.hex()}" in keys


def test_delete_many_deletes_those_named_and_ignores_missing(blobs: BlobStore) -> None:
    items = frames(1005)  # more than one DeleteObjects request (1,000 keys each)
    blobs.put_many(items)
    gone = [oid for oid, _ in items[:1003]]
    blobs.delete_many([*gone, rand_oid()])
    assert blobs.get_many([oid for oid, _ in items]) == dict(items[1003:])
    assert list(blobs.iter_oids()) == sorted(oid for oid, _ in items[1003:])
    blobs.delete_many([])
    blobs.delete_many(gone[:3])  # deleting again is harmless
    # A deleted id can be written again (a GC swept it, a writer needs it back).
    assert blobs.put(*items[0]) is True


def test_iter_oids_lists_every_id_in_order_and_only_ours(s3_server: SeaweedServer, s3_url: str,
                                                        blobs: BlobStore) -> None:
    assert list(blobs.iter_oids()) == []
    items = frames(30)
    blobs.put_many(items)
    bucket, prefix = parse_s3_url(s3_url)
    raw = s3_server.client()
    # Keys that are not ours, under our prefix and beside it, are not listed.
    raw.put_object(Bucket=bucket, Key=f"{prefix}/objects/README", Body=b"not an object")
    raw.put_object(Bucket=bucket, Key=f"{prefix}-other/objects/ab/cd/{'ab' * 32}", Body=b"x")
    other = open_blob_store(f"s3://{bucket}/{prefix}/nested")
    try:
        other.put(rand_oid(), b"another store's object, under a longer prefix")
    finally:
        other.close()
    assert list(blobs.iter_oids()) == sorted(oid for oid, _ in items)
    infos = list(blobs.iter_blobs())
    assert [i.oid for i in infos] == sorted(oid for oid, _ in items)
    sizes = dict(items)
    for info in infos:
        assert info.size == len(sizes[info.oid])
        assert abs(info.modified - time.time()) < 300


def test_bad_urls_are_invalid_input() -> None:
    for url in ("s3://ab/x", "s3://Bad_Bucket/x", "http://bucket/x", "s3:///x",
                "s3://bucket/a//b", "s3://bucket/../x"):
        with pytest.raises(InvalidArgument):
            parse_s3_url(url)
    with pytest.raises(InvalidArgument):
        open_blob_store("file:///tmp/x")
    assert parse_s3_url("s3://abc") == ("abc", "")
    assert parse_s3_url("s3://my-bucket.1/a/b/") == ("my-bucket.1", "a/b")


def test_missing_bucket_and_wrong_keys_are_storage_errors(s3_server: SeaweedServer,
                                                          s3_env: dict[str, str]) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        S3BlobStore("s3://no-such-bucket-here/cas")
    bucket = s3_server.make_bucket()
    with pytest.raises(StorageError, match="credentials were refused"):
        S3BlobStore(f"s3://{bucket}/cas", secret_access_key="not-the-secret")


def test_server_down_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server of its own, so stopping it leaves the shared one alone.
    server = SeaweedServer.start(tmp_path)
    try:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        store = open_blob_store(f"s3://{server.make_bucket()}/cas")
        items = frames(10)
        store.put_many(items)
        server.stop()
        oid = items[0][0]
        ops = [
            lambda: store.put(rand_oid(), b"x"),
            lambda: store.put_many(frames(3)),
            lambda: store.get(oid),
            lambda: store.get_many([o for o, _ in items]),
            lambda: store.delete_many([oid]),
            lambda: list(store.iter_oids()),
        ]
        for op in ops:
            t0 = time.monotonic()
            with pytest.raises(StorageError, match="unreachable") as info:
                op()
            assert time.monotonic() - t0 < 30  # fails, does not hang
            # One line naming the store, no client exception chained behind it.
            assert info.value.__suppress_context__ and info.value.__cause__ is None
            assert "\n" not in str(info.value) and server.endpoint in str(info.value)
        store.close()
        with pytest.raises(StorageError, match="unreachable"):
            open_blob_store(f"s3://{server.buckets[-1]}/cas")
    finally:
        server.stop()


def test_a_child_forked_after_use_is_refused_not_hung(blobs: BlobStore) -> None:
    # The S3 client's I/O threads do not survive fork(): a request in the child would
    # hang for ever, so the child gets a StorageError at once instead.
    oid = rand_oid()
    blobs.put(oid, b"x")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what happened, never return into pytest
        code = 1
        try:
            import signal

            signal.alarm(20)  # a hang ends the child, and the test fails below
            blobs.get(oid)
        except StorageError as exc:
            os.write(write, str(exc).encode()[:500])
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    message = os.read(read, 1000).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0, message
    assert "forked" in message
    assert blobs.get(oid) == b"x"  # the parent's client is unaffected
