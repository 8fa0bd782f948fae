"""fsck: re-hash every object, then walk every version and check what it names exists.

Read-only by construction: it calls no backend method that writes (FTS5's integrity
check of the search index is spelled as an INSERT, but changes nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import packs
from .errors import CasError
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

    def _page(page: Oid) -> Page | None:
        # A stored page that hashes to its id, decoded; None otherwise (its own damage
        # is reported as the page's).
        got = backend.get_frames([page]).get(page)
        if got is None or got[0] != Kind.PAGE:
            return None
        try:
            raw = decompress(page, got[1], verify=False)
            return decode_page_full(raw) if object_id(Kind.PAGE, raw) == page else None
        except (CasError, ValueError):
            return None

    def _check_pack(oid: Oid, payload: bytes) -> str:
        why = packs.check(oid, payload)
        if why:
            return why
        kids = _page(packs.Pack(payload).page)
        if kids is not None and kids.height == 1:
            # A level-1 page's pack holds the items of all its leaves, in order.
            leaves = [_page(leaf) for leaf in kids]
            if any(leaf is None or leaf.height != 0 for leaf in leaves):
                return ""  # the members still named are checked as chunks
            kids = Page([c for leaf in leaves if leaf is not None for c in leaf], 0)
        return "" if kids is None else packs.check(oid, payload, kids)

    def verify(ids: list[Oid]) -> None:
        nonlocal checked
        got = backend.get_frames(ids)
        lost.update(o for o in ids if o not in got)
        for oid, (kind, frame) in got.items():
            checked += 1
            try:
                payload = decompress(oid, frame, verify=False)
            except CasError as exc:
                bad[oid] = str(exc)
                continue
            if kind == Kind.PACK:
                why = _check_pack(oid, payload)
                if why:
                    bad[oid] = why
            elif object_id(kind, payload) != oid:
                bad[oid] = f"{kind.name.lower()} does not hash to its id"
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
