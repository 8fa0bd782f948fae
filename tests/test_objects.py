from __future__ import annotations

import math

import pytest

from cas_store import InvalidMessage, InvalidMetadata
from cas_store.errors import CorruptObject
from cas_store.objects import (
    Kind,
    canonical_json,
    compress,
    decompress,
    encode_item,
    encode_metadata,
    object_id,
)


def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, 2, {"d": None, "c": "é"}]}) == (
        '{"a":[1,2,{"c":"é","d":null}],"b":1}'.encode()
    )


def test_id_depends_on_kind_and_payload() -> None:
    p = b'{"a":1}'
    assert object_id(Kind.CHUNK, p) != object_id(Kind.META, p)
    assert object_id(Kind.CHUNK, p) == object_id(Kind.CHUNK, p)
    assert len(object_id(Kind.CHUNK, p)) == 32


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        "text",
        None,
        {"x": math.nan},
        {"x": math.inf},
        {"x": object()},
        {"x": "\ud800"},
        {1: "int key"},
        {"nested": {2: "int key"}},
    ],
)
def test_bad_items_are_rejected_with_their_index(bad: object) -> None:
    with pytest.raises(InvalidMessage) as exc:
        encode_item(bad, 7, field="messages", require_object=True, limit=1000)
    assert exc.value.index == 7
    assert "messages[7]" in str(exc.value)


def test_item_over_the_limit_is_rejected() -> None:
    with pytest.raises(InvalidMessage, match="over the limit"):
        encode_item({"c": "x" * 100}, 0, field="messages", require_object=True, limit=50)


def test_deep_nesting_is_rejected_not_crashing() -> None:
    value: object = {}
    for _ in range(100_000):
        value = {"a": value}
    with pytest.raises(InvalidMessage):
        encode_item(value, 0, field="messages", require_object=True, limit=10**9)


def test_metadata_must_be_an_object() -> None:
    with pytest.raises(InvalidMetadata):
        encode_metadata([1], 100)
    assert encode_metadata({"t": 1}, 100) == b'{"t":1}'


def test_frames_round_trip_and_the_zstd_checksum_catches_flipped_bytes() -> None:
    # verify=False: no BLAKE3 re-hash, so what catches each flip is the frame checksum.
    payload = canonical_json({"content": "hello " * 100})
    oid = object_id(Kind.CHUNK, payload)
    frame = compress(payload)
    assert decompress(oid, frame, verify=False) == payload
    caught = 0
    for i in range(len(frame)):
        broken = bytearray(frame)
        broken[i] ^= 0x40
        try:
            out = decompress(oid, bytes(broken), verify=False)
        except CorruptObject:
            caught += 1
            continue
        # Some header bits do not change the content (e.g. flags that are ignored); then
        # the payload must still be exactly right.
        assert out == payload
    assert caught >= len(frame) - 8


def test_verify_catches_a_valid_frame_of_other_content() -> None:
    # A swapped object: a well-formed frame (its checksum is right) of different content.
    # Only the hash can tell, and only when asked to verify.
    mine = canonical_json({"content": "mine"})
    other = canonical_json({"content": "someone else's"})
    oid = object_id(Kind.CHUNK, mine)
    swapped = compress(other)
    assert decompress(oid, swapped, verify=False) == other
    with pytest.raises(CorruptObject, match="does not match its hash") as exc:
        decompress(oid, swapped, verify=True, kind=Kind.CHUNK)
    assert exc.value.object_id == oid.hex()
    assert decompress(oid, compress(mine), verify=True, kind=Kind.CHUNK) == mine
    # The kind is part of the id: the right bytes under the wrong kind do not verify.
    with pytest.raises(CorruptObject):
        decompress(oid, compress(mine), verify=True, kind=Kind.META)
