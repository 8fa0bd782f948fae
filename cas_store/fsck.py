"""fsck: re-hash every object, then walk every version and check what it names exists.

Read-only by construction: it calls no backend method that writes (FTS5's integrity
check of the search index is spelled as an INSERT, but changes nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import packs
from .errors import CasError, CorruptObject
from .model import FsckProblem, FsckReport
from .objects import Kind, Oid, Page, decode_page_full, decompress, object_id
from .walk import Damage

if TYPE_CHECKING:
    from .store import Store

_BATCH = 500


def run_fsck(store: Store, progress: Callable[[str, int], None] | None = None) -> FsckReport:
    """Check the whole store; see ``Store.fsck``. A damaged file is reported, not raised."""
    from .fsck_damage import guarded

    return guarded(store, lambda: _walk(store, progress))


def _walk(store: Store, progress: Callable[[str, int], None] | None) -> FsckReport:
    backend = store.backend
    bad: dict[Oid, str] = {}  # corrupt object -> why
    checked = 0

    # Pass 1: every stored object decompresses and hashes to its id.
    batch: list[Oid] = []

    # Indexed but without bytes: a blob store lost them (a backend keeping bytes and
    # index in one transaction never has such objects).
    lost: set[Oid] = set()

    def _pages(oids: list[Oid]) -> dict[Oid, Page]:
        # The stored pages among oids that hash to their ids, decoded, in one read (a
        # damaged one is reported as the page's own problem, not its pack's).
        out: dict[Oid, Page] = {}
        for page, (kind, frame) in backend.get_frames(oids).items():
            try:
                raw = decompress(page, frame, verify=False)
                if kind == Kind.PAGE and object_id(Kind.PAGE, raw) == page:
                    out[page] = decode_page_full(raw)
            except (CasError, ValueError):
                continue
        return out

    def _check_packs(found: list[tuple[Oid, bytes]]) -> None:
        # Each pack's header, then its members against its page's ids (a level-1
        # page's: all its leaves' ids, in order), the batch's pages read at once.
        sound: list[tuple[Oid, bytes, Oid]] = []
        for oid, payload in found:
            why = packs.check(oid, payload)
            if why:
                bad[oid] = why
            else:
                sound.append((oid, payload, packs.Pack(payload).page))
        pages = _pages([page for _, _, page in sound])
        leaves = _pages([leaf for _, _, page in sound if page in pages
                         and pages[page].height == 1 for leaf in pages[page]])
        for oid, payload, page in sound:
            kids = pages.get(page)
            if kids is not None and kids.height == 1:
                if not all(leaf in leaves and leaves[leaf].height == 0 for leaf in kids):
                    continue  # the members still named are checked as chunks
                kids = Page([c for leaf in kids for c in leaves[leaf]], 0)
            why = "" if kids is None else packs.check(oid, payload, kids)
            if why:
                bad[oid] = why

    def verify(ids: list[Oid]) -> None:
        nonlocal checked
        try:
            got = backend.get_frames(ids)
        except CorruptObject:
            # A row damaged beyond its frame (its kind) fails the batch: read them one by
            # one so the others are checked and that one is named.
            got = {}
            for oid in ids:
                try:
                    got.update(backend.get_frames([oid]))
                except CorruptObject as exc:
                    bad[oid] = exc.message
                    checked += 1
        lost.update(o for o in ids if o not in got and o not in bad)
        found: list[tuple[Oid, bytes]] = []
        for oid, (kind, frame) in got.items():
            checked += 1
            try:
                payload = decompress(oid, frame, verify=False)
            except CasError as exc:
                bad[oid] = str(exc)
                continue
            if kind == Kind.PACK:
                found.append((oid, payload))
            elif object_id(kind, payload) != oid:
                bad[oid] = f"{kind.name.lower()} does not hash to its id"
        _check_packs(found)
        if progress:
            progress("objects", checked)

    for info in backend.iter_objects():
        batch.append(info.oid)
        if len(batch) >= _BATCH:
            verify(batch)
            batch = []
    if batch:
        verify(batch)

    # A chunk kept in a damaged pack is damaged through it: say which pack, and name the
    # pack with the sessions of the chunks it held.
    holder = backend.packed_in(list(bad)) if bad else {}
    stored = set(backend.sizes(list(set(holder.values())))) if holder else set()
    for chunk, pack in holder.items():
        if pack in bad:
            bad[chunk] = f"chunk is kept in pack {pack.hex()}, which is damaged"
        elif pack not in stored:
            bad[chunk] = f"chunk is kept in pack {pack.hex()}, which is not stored"

    # Pass 2: walk each version (cas_store/walk.py, shared with gc), memoised per object.
    damage = Damage(backend, bad, lost=lost)

    affects: dict[Oid, list[tuple[str, int]]] = {}
    head_problems: list[FsckProblem] = []
    versions = sessions = 0
    for head in backend.iter_heads():
        sessions += 1
        entries = backend.versions(head.sid)
        if not entries or entries[0].seq != head.seq or entries[0].manifest != head.manifest:
            head_problems.append(FsckProblem(
                "bad_head", head.manifest.hex(),
                f"session {head.sid!r}: head row does not match its newest version",
                [(head.sid, head.seq)]))
        for e in entries:
            versions += 1
            for oid in damage.version(e.manifest):
                affects.setdefault(oid, []).append((e.sid, e.seq))
        if progress:
            progress("versions", versions)

    for chunk, pack in holder.items():
        if pack in damage.bad:
            held = affects.setdefault(pack, [])
            held.extend(a for a in affects.get(chunk, []) if a not in held)
    problems = [
        FsckProblem("corrupt", oid.hex(), why, affects.get(oid, []))
        for oid, why in sorted(damage.bad.items())
    ]
    problems += [
        FsckProblem("missing", oid.hex(), "referenced but not stored", affects.get(oid, []))
        for oid in sorted(damage.missing)
    ]
    # The search index must match the heads (a contained check: see search.check), once
    # every object is sound: a corrupt or missing one is named above, and a reindex
    # after the repair rebuilds what the index held of it.
    from .search import check as check_search

    return FsckReport(checked, versions, sessions,
                      problems + head_problems
                      + ([] if damage.bad or damage.missing else check_search(store)))
