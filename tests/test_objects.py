from __future__ import annotations

import json
import math
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    parse_json,
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


# --- canonical bytes: orjson on the fast path, byte for byte the standard library's ----------



def _stdlib(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


_leaves = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70,
           max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text() | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                                        blacklist_categories=("Cs",))))
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=5)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(_values)
def test_canonical_bytes_equal_the_standard_librarys(value: object) -> None:
    assert canonical_json(value) == _stdlib(value)


@pytest.mark.parametrize("value", [
    {"unicode": "é\u2028\u2029\x7f\x00\x1f<>&\"\\/ 𝄞 中文"},
    {"floats": [0.1, 1e-05, 1e-7, 1e16, 1e22, -0.0, 5e-324, 1.7976931348623157e308, 2.5]},
    {"ints": [2**63 - 1, 2**63, 2**64 - 1, 2**64, -2**63, -2**63 - 1, 10**40, -10**40]},
    {"z": 1, "a": {"y": [True, False, None], "b": ()}},
    [{"deep": [[[[[[[[[["x"]]]]]]]]]]}],
    {"n": [[]] * 3},
])
def test_canonical_bytes_of_edge_values(value: object) -> None:
    assert canonical_json(value) == _stdlib(value)


def test_nesting_orjson_refuses_still_encodes_like_the_standard_library() -> None:
    value: object = "x"
    for _ in range(300):  # orjson stops at 255 levels, the standard library does not
        value = [value]
    assert canonical_json(value) == _stdlib(value)


@pytest.mark.parametrize("bad", [{"u": uuid.UUID(int=1)}, {"t": {1, 2}}, {"nan": [math.nan]},
                                 {"k": {(1, 2): 3}}, {"s": "\udfff"}])
def test_values_orjson_would_take_are_refused_as_before(bad: object) -> None:
    with pytest.raises(InvalidMessage):
        encode_item(bad, 0, field="messages", require_object=True, limit=10_000)


def test_str_and_int_subclasses_encode_as_the_standard_library_does() -> None:
    import enum

    class Colour(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    value = {"c": Colour.RED, Name("k"): Name("v"), "b": True}
    assert canonical_json(value) == _stdlib(value)


def test_canonical_bytes_of_small_values_hold_about_their_size() -> None:
    # orjson's output keeps its 4 KiB write buffer: 100,000 small messages held at once
    # (a big save, an import) cost 390 MiB of memory until the bytes were copied exact.
    import tracemalloc

    value = {"role": "tool", "content": [{"type": "x", "v": 1}] * 16}
    size = len(canonical_json(value))
    tracemalloc.start()
    try:
        held = [canonical_json(value) for _ in range(10_000)]
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(held) == 10_000
    assert used < 10_000 * (size + 200), (used, size)


@pytest.mark.parametrize("value", [
    {"n": 10**30, "m": -(2**63) - 1, "u": 2**64, "k": 2**64 - 1, "f": 1e308, "g": 0.1},
    [-0.0, 5e-324, 123456789012345678, 1234567890123456789, "\u00e9\U0001f600", None],
    {"deep": [[{"a": [1, 2.5, "x"]}]], "empty": {}, "t": True, "s": "a\"b\\c\n"},
])
def test_parse_json_reads_stored_json_exactly_as_json_loads(value: object) -> None:
    # orjson reads a 64-bit-overflowing integer as a float: parse_json must not.
    data = canonical_json(value)
    got = parse_json(data)
    assert got == json.loads(data)
    assert repr(got) == repr(json.loads(data))  # ints stay ints, -0.0 stays -0.0


def test_parse_json_refuses_what_json_refuses() -> None:
    for bad in (b"{", b"[1,]", b"\xff", b"nul"):
        with pytest.raises(ValueError):
            parse_json(bad)
    assert parse_json(b"NaN") != parse_json(b"NaN")  # json's reading, not orjson's refusal


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                           allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids,
                                                               max_size=4),
    max_leaves=20))
def test_parse_json_agrees_with_json_loads_on_any_stored_value(value: object) -> None:
    data = canonical_json(value)
    assert repr(parse_json(data)) == repr(json.loads(data))
