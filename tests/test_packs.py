"""Packs (cas_store/packs.py, backends/sqlite_packs.py): a leaf page's messages kept together.

Each test builds its store through the public API and checks what a user sees (loads,
windows, fsck, GC) together with the stored form that is the point of packs.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from support import msgs

from cas_store import CorruptObject, Store, gc, loading, open_store, packs
from cas_store import lists as L
from cas_store.objects import Kind, object_id, orjson_exact

PACKED = 6  # the stored kind of a chunk kept in a pack


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "packs.db"


def _rows(path: Path, kind: int) -> int:
    with sqlite3.connect(path) as con:
        return int(con.execute("SELECT count(*) FROM objects WHERE kind = ?", (kind,))
                   .fetchone()[0])


def _units(store: Store, sid: str) -> list[tuple[bytes, int, list[tuple[bytes, int]]]]:
    io = store.io()
    man = io.manifest(bytes.fromhex(store.load_meta(sid).manifest))  # type: ignore[arg-type]
    return L.units(man.messages, io)  # type: ignore[return-value]


def _packed(store: Store, pages: list[bytes]) -> dict[bytes, int]:
    """Return the member count of each of these pages' packs that is stored and sound."""
    got = packs.bodies(store.backend.pack_frames(pages))  # type: ignore[arg-type]
    return {page: n for page, (n, _, _) in got.items()}


def _closed(store: Store, page: bytes) -> bool:
    return L.closed(store.io().pages([page])[page])  # type: ignore[list-item,index]


def test_pages_are_packed_by_level_1_page_once_closed_and_read_back(path: Path) -> None:
    grown, saved = msgs(0, 1200), msgs(2000, 6000)
    with open_store(path) as store:
        store.create("grown")
        for m in grown:  # one append at a time: pages freeze one by one
            store.append("grown", [m])
        store.create("saved", {}, saved)  # one commit: every page at once
        open_units = 0
        for sid, want in (("grown", grown), ("saved", saved)):
            units = _units(store, sid)
            closed = [u for u, _, _ in units if _closed(store, u)]
            assert len(closed) >= 2
            open_units += len(units) - len(closed)
            whole = _packed(store, [u for u, _, _ in units])
            assert set(whole) == set(closed)  # a closed level-1 page: one pack of it all
            assert all(whole[u] == n for u, n, _ in units if u in whole)
            for u, _, kids in units:
                by_leaf = _packed(store, [leaf for leaf, _ in kids])
                if u in whole:  # its leaves' own packs are gone (an append made them)
                    assert by_leaf == {}
                else:
                    assert by_leaf == dict(kids)
            assert store.load(sid).messages == want
            for offset in (0, 1, 15, 16, 17, 200, 300, len(want) - 3):
                assert store.messages(sid, offset, 40) == want[offset : offset + 40]
        assert open_units > 0  # some leaves were checked to keep packs of their own
        assert store.stats().objects["pack"] == _rows(path, int(Kind.PACK)) > 0
        assert store.fsck().ok
    # Packed members keep their rows (found by id), without a frame of their own.
    assert _rows(path, PACKED) >= 5000


def _leaves(store: Store, sid: str) -> list[tuple[bytes, int]]:
    return [leaf for _, _, kids in _units(store, sid) for leaf in kids]


def test_a_full_load_reads_no_level_1_page_whose_pack_it_finds(path: Path) -> None:
    # A level-1 page's count is in its parent and its pack is named by its id, so a load
    # reads the pages above level 1 and the last level-1 page (the one appends leave
    # open), not the others: their packs are found without them.
    with open_store(path) as store:
        store.create("a", {}, msgs(0, 3000))
        units = _units(store, "a")
        io = store.io()
        above, level = 0, [io.manifest(bytes.fromhex(  # type: ignore[arg-type]
            store.load_meta("a").manifest)).messages.tree]
        while level and io.pages(level)[level[0]].height >= 2:  # type: ignore[index]
            above += len(level)
            level = [kid for page in io.pages(level).values() for kid in page]  # type: ignore[arg-type]
    assert len(units) > 8 and above >= 1
    with open_store(path) as store:
        assert store.load("a").messages == msgs(0, 3000)
        assert store.reads["page"] == above + 1


def test_integers_beyond_64_bits_load_exactly_from_a_pack(path: Path) -> None:
    big = [{"role": "tool", "n": 2**70 + i, "m": -(2**63) - i} for i in range(300)]
    with open_store(path) as store:
        store.create("a", {}, big)
        assert store.load("a").messages == big
        assert all(type(m["n"]) is int for m in store.load("a").messages)


def test_a_store_written_without_packs_opens_loads_and_packs_from_then_on(path: Path) -> None:
    with open_store(path) as store:
        store.backend.packs = False  # type: ignore[misc]
        store.create("old", {}, msgs(0, 500))
        assert store.stats().objects["pack"] == 0
    with open_store(path) as store:
        assert store.load("old").messages == msgs(0, 500)
        store.append("old", msgs(500, 800))
        assert store.stats().objects["pack"] > 0  # the new pages only
        assert store.load("old").messages == msgs(0, 800)
        assert store.messages("old", 490, 20) == msgs(490, 510)
        assert store.fsck().ok


def _flip(path: Path, oid: bytes) -> None:
    with sqlite3.connect(path) as con:
        (data,) = con.execute("SELECT data FROM objects WHERE oid = ?", (oid,)).fetchone()
        broken = bytearray(data)
        broken[len(broken) // 2] ^= 0xFF
        con.execute("UPDATE objects SET data = ? WHERE oid = ?", (bytes(broken), oid))


@pytest.mark.parametrize("which", ["level-1", "leaf"])
def test_a_corrupted_pack_is_named_by_fsck_with_the_sessions_it_affects(
        path: Path, which: str) -> None:
    with open_store(path) as store:
        store.create("a", {}, msgs(0, 1000))  # three closed level-1 pages and an open one
        store.create("other", {}, msgs(2000, 2300))
        units = _units(store, "a")
        if which == "level-1":
            page = next(u for u, _, _ in units if _closed(store, u))
        else:
            page = next(kids[0][0] for u, _, kids in units if not _closed(store, u))
        assert _packed(store, [page])
    victim = packs.pack_id(page)  # type: ignore[arg-type]
    _flip(path, victim)
    with open_store(path) as store:
        report = store.fsck()
        assert not report.ok
        by_id = {p.object_id: p for p in report.problems}
        assert by_id[victim.hex()].kind == "corrupt"
        assert by_id[victim.hex()].affects == [("a", 1)]
        members = [p for p in report.problems if p.object_id != victim.hex()]
        assert members and all(victim.hex() in p.detail and p.affects == [("a", 1)]
                               for p in members)
        # A load needs those messages: it fails naming one, never returns others.
        with pytest.raises(CorruptObject):
            store.load("a")
        assert store.load("other").messages == msgs(2000, 2300)


def test_gc_keeps_a_partly_dead_pack_whole_and_sweeps_dead_ones(path: Path) -> None:
    with open_store(path) as store:
        store.create("a", {}, msgs(0, 300))
        kept = msgs(0, 300)[100]
        store.create("b", {}, [kept])  # shares one chunk, stored packed in a's pack
        held = store.backend.packed_in([object_id(Kind.CHUNK, _canonical(kept))])
        [(_, pack)] = held.items()
        packs_before = store.stats().objects["pack"]
        store.delete("a")
        report = gc(store, deleted_retention=0, grace=0)
        assert report.sessions_dropped == 1 and report.objects_swept > 0
        # The one pack a live chunk still names stays; every other pack of a went.
        with sqlite3.connect(path) as con:
            left = {bytes(r[0]) for r in con.execute(
                "SELECT oid FROM objects WHERE kind = ?", (int(Kind.PACK),))}
        assert left == {pack} and packs_before > 1
        assert store.load("b").messages == [kept]
        assert store.messages("b", 0, 1) == [kept]
        assert store.fsck().ok
        # Once nothing names it, the next run sweeps it too.
        store.delete("b")
        gc(store, deleted_retention=0, grace=0)
        assert store.stats().objects["pack"] == 0
        assert store.fsck().ok


def _canonical(m: object) -> bytes:
    from cas_store.objects import canonical_json

    return canonical_json(m)


def test_pack_check_names_each_kind_of_damage() -> None:
    members = [_canonical(m) for m in msgs(0, 5)]
    page = [object_id(Kind.CHUNK, m) for m in members]
    leaf = object_id(Kind.PAGE, bytes((0,)) + b"".join(page))
    payload = packs.encode(leaf, members)  # type: ignore[arg-type]
    oid = packs.pack_id(leaf)  # type: ignore[arg-type]
    assert packs.check(oid, payload, page) == ""  # type: ignore[arg-type]
    assert [packs.Pack(payload).member(i) for i in range(5)] == members
    assert "does not belong" in packs.check(packs.pack_id(page[0]), payload)  # type: ignore[arg-type]
    assert "does not hash" in packs.check(oid, packs.encode(leaf, [members[1], *members[1:]]),  # type: ignore[arg-type]
                                          page)  # type: ignore[arg-type]
    assert "holds 4" in packs.check(oid, packs.encode(leaf, members[:4]), page)  # type: ignore[arg-type]
    assert packs.check(oid, payload[:-3]) != ""
    assert packs.check(oid, b"\x07" + payload[1:]) != ""
    assert packs.parse_ref(packs.ref(oid, 300)) == (oid, 300)
    with pytest.raises(ValueError):
        packs.parse_ref(oid)


def test_a_damaged_packed_chunk_row_is_named_and_its_window_read_fails(path: Path) -> None:
    with open_store(path) as store:
        store.create("a", {}, msgs(0, 300))
        store.append("a", msgs(300, 301))
        victim = object_id(Kind.CHUNK, _canonical(msgs(0, 300)[40]))
        assert store.backend.packed_in([victim])
    _flip(path, victim)  # the row's reference now names no stored pack
    with open_store(path) as store:
        [problem] = store.fsck().problems
        assert (problem.kind, problem.object_id) == ("corrupt", victim.hex())
        assert "not stored" in problem.detail and sorted(problem.affects) == [("a", 1), ("a", 2)]
        with pytest.raises(CorruptObject):
            store.messages("a", 40, 1)
        # The full load reads the page's pack, which still holds the message.
        assert store.load("a").messages == msgs(0, 301)


def test_search_follows_chunks_into_their_packs(path: Path) -> None:
    with open_store(path) as store:
        store.create("a")
        for i in range(200):
            store.append("a", [{"role": "user", "content": f"word{i} common"}])
            if i in (5, 50, 120):
                # A search puts pending words into FTS5; the appends after it move
                # those chunks into packs (new rowids), and their entries with them.
                assert [h.index for h in store.search("word3").hits] == [3]
        for i in (3, 7, 60, 150, 199):
            assert [(h.session_id, h.index) for h in store.search(f"word{i}").hits] == [
                ("a", i)]
        assert len(store.search("common", limit=100).hits) == 100
        assert store.backend.packed_in([object_id(Kind.CHUNK, _canonical(
            {"role": "user", "content": "word7 common"}))])
        assert store.fsck().ok  # includes FTS5's own integrity check
        store.delete("a")
        gc(store, deleted_retention=0, grace=0)
        assert store.search("common").hits == [] and store.fsck().ok


def _pack_of(members: list[bytes]) -> tuple[bytes, bytes, list[bytes]]:
    """Return (pack id, payload, page ids) of a pack built over these members."""
    page = [object_id(Kind.CHUNK, m) for m in members]
    leaf = object_id(Kind.PAGE, bytes((0,)) + b"".join(page))
    return packs.pack_id(leaf), packs.encode(leaf, members), page  # type: ignore[arg-type,return-value]


def test_pack_layout_round_trips_lengths_across_every_leb128_width() -> None:
    # Lengths at each LEB128 boundary (one byte below 128, two below 16,384, three above).
    members = [b'"' + b"x" * (n - 2) + b'"'
               for n in (2, 126, 127, 128, 129, 300, 16383, 16384, 70000)]
    oid, payload, page = _pack_of(members)
    pack = packs.Pack(payload)
    assert len(pack) == len(members)
    assert [pack.member(i) for i in range(len(pack))] == members
    assert packs.check(oid, payload, page) == ""  # type: ignore[arg-type]
    body = packs.body(payload, pack.page)
    assert body is not None and bytes(body) == b",".join(members)
    # A pack of many members: the count itself takes two bytes.
    many = [b"%d" % i for i in range(200)]
    _, payload, _ = _pack_of(many)
    assert [packs.Pack(payload).member(i) for i in range(200)] == many
    assert packs.parse_ref(packs.ref(oid, 200)) == (oid, 200)  # type: ignore[arg-type]


def test_pack_exact_flag_follows_long_digit_runs() -> None:
    _, plain, _ = _pack_of([b'{"n":123456789012345678}', b'"text"'])  # 18 digits
    _, long_run, _ = _pack_of([b'{"n":1234567890123456789}'])  # 19 digits
    assert packs.Pack(plain).exact and not packs.Pack(long_run).exact
    assert orjson_exact(b"[1,2]") and not orjson_exact(b'"a 9999999999999999999 b"')
    oid, payload, _ = _pack_of([b'{"n":1234567890123456789}'])
    flagged = payload[:1] + bytes((packs.EXACT,)) + payload[2:]  # a lie about the digits
    assert packs.check(oid, flagged) == (
        "pack is flagged exact for orjson but holds a long digit run")


def test_pack_headers_that_lie_are_refused_with_why() -> None:
    oid, payload, page = _pack_of([b'"a"', b'"bb"'])
    leaf = packs.Pack(payload).page
    start = packs.FIXED
    assert packs.check(oid, payload[: start - 1]) == "not a pack (bad format byte or too short)"
    assert packs.check(oid, payload[:start]) == "not a pack (bad format byte or too short)"
    assert packs.check(oid, b"\x02" + payload[1:]) == "not a pack (bad format byte or too short)"
    # The member count's LEB128 never ends: truncated.
    cut = payload[:start] + b"\x80\x80"
    assert packs.check(oid, cut) == "pack header is truncated"
    zero = payload[:start] + b"\x00" + payload[start + 3 :]
    assert packs.check(oid, zero) == "pack member count is out of range"
    assert packs.check(oid, payload + b"x") == "pack body length does not match its header"
    assert packs.check(packs.pack_id(page[0]), payload) == (  # type: ignore[arg-type]
        "pack does not belong to the page it names")
    assert packs.check(oid, payload, page[:1]) == "pack holds 2 messages, its page 1"  # type: ignore[arg-type]
    # body() reads the fixed header only: each of its checks refuses on its own.
    assert packs.body(payload, leaf) is not None
    assert packs.body(payload, page[0]) is None  # type: ignore[arg-type]
    assert packs.body(b"\x02" + payload[1:], leaf) is None
    assert packs.body(payload[: start - 1], leaf) is None
    for bad_start in (start, len(payload) + 1, 0):
        head = payload[: 2 + 32] + bad_start.to_bytes(4, "little") + payload[start:]
        assert packs.body(head, leaf) is None, bad_start
    for short in (oid, oid[:5], b""):
        with pytest.raises(ValueError, match=r"^packed chunk reference is truncated$"):
            packs.parse_ref(short)
    with pytest.raises(ValueError, match=r"^pack header is truncated$"):
        packs.parse_ref(oid + b"\x80")
    with pytest.raises(ValueError, match=r"^packed chunk reference has trailing bytes$"):
        packs.parse_ref(packs.ref(oid, 3) + b"\x00")  # type: ignore[arg-type]


def test_a_save_that_shares_leaves_of_a_packed_level_1_page_reads_them_by_chunk(
        path: Path) -> None:
    # Closing a level-1 page retires its leaves' own packs; a session holding some of
    # those leaves under other level-1 pages reads them through the larger pack.
    with open_store(path) as store:
        store.create("a")
        for m in msgs(0, 700):
            store.append("a", [m])
        cut = [*msgs(0, 300), {"role": "user", "content": "edited"}, *msgs(301, 700)]
        store.create("b", {}, cut)
        for sid, want in (("a", msgs(0, 700)), ("b", cut)):
            assert store.load(sid).messages == want
            assert store.messages(sid, 290, 20) == want[290:310]
        assert store.fsck().ok
        store.delete("a")
        gc(store, deleted_retention=0, grace=0)
        assert store.load("b").messages == cut
        assert store.fsck().ok


def test_a_level_1_pack_with_members_out_of_order_is_named_by_fsck(path: Path) -> None:
    # A sound frame and header, the right page, but two members swapped: only the
    # check against every leaf's ids can tell.
    from cas_store.objects import compress, decompress

    with open_store(path) as store:
        store.create("a", {}, msgs(0, 1000))
        unit = next(u for u, _, _ in _units(store, "a") if _closed(store, u))
    victim = packs.pack_id(unit)  # type: ignore[arg-type]
    with sqlite3.connect(path) as con:
        (data,) = con.execute("SELECT data FROM objects WHERE oid = ?", (victim,)).fetchone()
        pack = packs.Pack(decompress(victim, data))
        members = [pack.member(i) for i in range(len(pack))]
        members[0], members[1] = members[1], members[0]
        forged = compress(packs.encode(unit, members))  # type: ignore[arg-type]
        con.execute("UPDATE objects SET data = ? WHERE oid = ?", (forged, victim))
    with open_store(path) as store:
        by_id = {p.object_id: p for p in store.fsck().problems}
        assert by_id[victim.hex()].detail == "pack member 0 does not hash to its chunk id"
        assert by_id[victim.hex()].affects == [("a", 1)]


@pytest.mark.parametrize("ahead", [True, False], ids=["worker-thread", "one-thread"])
def test_a_long_load_reads_alike_with_or_without_the_worker_and_fails_on_damage(
        path: Path, monkeypatch: pytest.MonkeyPatch, ahead: bool) -> None:
    # A load shares the decompression of its batches with a worker thread (part of the
    # first, the next one while this one parses: loading.HANDOVER_BYTES); the items, their
    # order and a damaged pack's failure must not depend on which path ran.
    started: list[int] = []
    real_put = loading.Pipeline.put

    def start(self: loading.Pipeline, frames: list[tuple[bytes, bytes]], **kw: bool) -> object:
        started.append(len(frames))
        return real_put(self, frames, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(loading.Pipeline, "put", start)
    monkeypatch.setattr(loading, "HANDOVER_BYTES", 0 if ahead else 10**12)
    want = msgs(0, 5000)
    with open_store(path) as store:
        store.create("a", {}, want)
        store.create("b", {}, msgs(6000, 9000))
        assert store.load("a").messages == want
        assert (len(started) >= 4) == ahead and (started == []) != ahead
        closed = [u for u, _, _ in _units(store, "a") if _closed(store, u)]
    _flip(path, packs.pack_id(closed[len(closed) // 2]))  # type: ignore[arg-type]
    with open_store(path) as store:
        for _ in range(4):  # more failed loads than the pool has workers
            with pytest.raises(CorruptObject):
                store.load("a")
        # A load that failed lets its worker go: one left waiting for batches that never
        # come would hold a pool thread for ever, and later loads would wait on it.
        got: list[object] = []
        t = threading.Thread(target=lambda: got.append(store.load("b").messages))
        t.start()
        t.join(timeout=60)
        assert got == [msgs(6000, 9000)]


@pytest.mark.parametrize("n", [20, 3000], ids=["by-chunks", "by-packs"])
def test_a_few_integers_beyond_64_bits_among_others_load_exactly(path: Path, n: int) -> None:
    # Loads parse with orjson where a batch holds no digit run of 19 or more: orjson would
    # read a larger integer as a float. A short list is read by its chunks, a long one by
    # its packs; both must give back the very integers saved, and the others unchanged.
    big = [2**64, -(2**63) - 1, 10**30, 12345678901234567890123]
    want = msgs(0, n)
    for i, value in enumerate(big):
        want[i * (n // len(big))] = {"role": "tool", "content": "n", "value": value}
    with open_store(path) as store:
        store.create("a", {}, want)
        store.create("b", {}, msgs(5000, 5000 + n))
        got = store.load("a").messages
        assert got == want
        values = [m["value"] for m in got if isinstance(m, dict) and "value" in m]
        assert values == big and all(type(v) is int for v in values)
        assert store.load("b").messages == msgs(5000, 5000 + n)
        assert store.messages("a", 0, 1) == want[:1]


def test_a_sound_frame_holding_bad_json_fails_the_load_as_damage(path: Path) -> None:
    # zstd's checksum passes and reads do not re-hash (fsck does): a chunk or a pack
    # member that does not parse must fail the read as a CorruptObject naming the
    # session (and the chunk where one is read alone), never a JSON parser's error.
    from cas_store.objects import compress, decompress

    with open_store(path) as store:
        store.create("short", {}, msgs(0, 10))
        store.create("long", {}, msgs(100, 3100))
        store.create("other", {}, msgs(5000, 5010))
        man = bytes.fromhex(store.load_meta("short").manifest)
        ids = L.read_ids(store.io().manifest(man).messages, store.io())  # type: ignore[arg-type]
        unit = next(u for u, _, _ in _units(store, "long") if _closed(store, u))
    victim = packs.pack_id(unit)  # type: ignore[arg-type]
    with sqlite3.connect(path) as con:
        con.execute("UPDATE objects SET data = ? WHERE oid = ?",
                    (compress(b'{"role": "user", "content": '), ids[3]))
        (data,) = con.execute("SELECT data FROM objects WHERE oid = ?", (victim,)).fetchone()
        pack = packs.Pack(decompress(victim, data))
        members = [pack.member(i) for i in range(len(pack))]
        members[5] = b'{"role": "user", "content": '
        con.execute("UPDATE objects SET data = ? WHERE oid = ?",
                    (compress(packs.encode(unit, members)), victim))  # type: ignore[arg-type]
    with open_store(path) as store:
        with pytest.raises(CorruptObject) as err:
            store.load("short")
        assert err.value.object_id == ids[3].hex() and "'short'" in str(err.value)
        with pytest.raises(CorruptObject) as err:
            store.messages("short", 2, 3)
        assert err.value.object_id == ids[3].hex()
        with pytest.raises(CorruptObject) as err:
            store.load("long")
        assert "'long'" in str(err.value) and "fsck" in str(err.value)
        assert store.load("other").messages == msgs(5000, 5010)
        named = {p.object_id for p in store.fsck().problems}
        assert {ids[3].hex(), victim.hex()} <= named


@pytest.mark.parametrize("damage", ["flipped", "missing"])
def test_a_damaged_chunk_in_a_long_lists_tail_is_named_by_the_load(
        path: Path, damage: str) -> None:
    # A full load reads the tail (the chunks after the last frozen leaf) in one batch
    # beside the packs; a chunk there that does not decompress, or is gone, must fail the
    # load naming that chunk, as a read by ids does.
    from cas_store import ObjectNotFound

    want = msgs(0, 3000)
    with open_store(path) as store:
        store.create("a", {"title": "t"}, want)
        store.create("b", {}, msgs(5000, 5100))
        man = bytes.fromhex(store.load_meta("a").manifest)
        tail = list(store.io().manifest(man).messages.tail)  # type: ignore[arg-type]
        assert tail, "the list must end in chunks not yet in a frozen leaf"
        assert store.load("a").messages == want
    victim = tail[len(tail) // 2]
    if damage == "flipped":
        _flip(path, victim)
    else:
        with sqlite3.connect(path) as con:
            con.execute("DELETE FROM objects WHERE oid = ?", (victim,))
    error = CorruptObject if damage == "flipped" else ObjectNotFound
    with open_store(path) as store:
        with pytest.raises(error) as caught:
            store.load("a")
        assert caught.value.details["object_id"] == victim.hex()
        assert store.load("b").messages == msgs(5000, 5100)


def test_a_full_load_maps_the_file_and_a_metadata_read_does_not(tmp_path: Path) -> None:
    from cas_store.backends.sqlite import MMAP_BYTES

    path = tmp_path / "m.db"
    with open_store(path) as store:
        store.create("s", {"t": 1}, msgs(0, 1000))

    def mapped(store: Store) -> int:
        return int(store.backend._con().execute("PRAGMA mmap_size").fetchone()[0])  # type: ignore[attr-defined]

    with open_store(path) as cold:
        # Mapping and unmapping cost a metadata read more than it saves, so it reads.
        assert cold.load_meta("s").message_count == 1000
        assert mapped(cold) == 0
        assert cold.load("s").messages == msgs(0, 1000)
        assert mapped(cold) == MMAP_BYTES
        assert cold.fsck().ok
