"""fsck: re-hash every object, then walk every version and check what it names exists.

Read-only by construction: it calls no backend method that writes (FTS5's integrity
check of the search index is spelled as an INSERT, but changes nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import manifest as M
from .errors import CasError
from .model import FsckProblem, FsckReport
from .objects import Oid, decode_page, decompress, object_id

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
            if object_id(kind, payload) != oid:
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

    # Pass 2: walk each version. below[x] = the bad or missing objects under x (memoised,
    # so pages shared by thousands of versions are walked once).
    missing: set[Oid] = set()
    below: dict[Oid, frozenset[Oid]] = {}
    empty: frozenset[Oid] = frozenset()

    def absent(oids: list[Oid]) -> set[Oid]:
        return lost.intersection(oids) | backend.missing(o for o in oids if o not in lost)

    def problems_in(oids: list[Oid]) -> set[Oid]:
        out = {o for o in oids if o in bad}
        gone = absent([o for o in oids if o not in bad])
        missing.update(gone)
        return out | gone

    def page_tree(root: Oid) -> frozenset[Oid]:
        if root in below:
            return below[root]
        found: set[Oid] = set()
        if root in bad or root in missing or absent([root]):
            missing.update(absent([root]))
            below[root] = frozenset({root})
            return below[root]
        got = backend.get_frames([root])[root][1]
        height, children = decode_page(decompress(root, got, verify=False))
        if height == 0:
            found |= problems_in(children)
        else:
            for c in children:
                found |= page_tree(c)
        below[root] = frozenset(found) if found else empty
        return below[root]

    # Per manifest: (problems under its metadata, problems under its lists). A delta
    # names its own metadata and takes only the lists of its base, so a bad metadata
    # object of a base does not affect the deltas built on it.
    parts: dict[Oid, tuple[frozenset[Oid], frozenset[Oid]]] = {}

    def manifest_parts(oid: Oid) -> tuple[frozenset[Oid], frozenset[Oid]]:
        if oid in parts:
            return parts[oid]
        if oid in bad or absent([oid]):
            if oid not in bad:
                missing.add(oid)
            parts[oid] = (frozenset({oid}), frozenset({oid}))
            return parts[oid]
        frame = backend.get_frames([oid])[oid][1]
        try:
            raw = M.decode(decompress(oid, frame, verify=False))
        except ValueError:
            bad[oid] = "manifest is malformed"
            parts[oid] = (frozenset({oid}), frozenset({oid}))
            return parts[oid]
        bases, leaves, roots = M.references(raw)
        meta = frozenset(problems_in([raw.meta]))
        found = problems_in([o for o in leaves if o != raw.meta])
        for base in bases:  # a delta's chain is short (MAX_DEPTH) and memoised
            found |= manifest_parts(base)[1]
        for root in roots:
            found |= page_tree(root)
        parts[oid] = (meta or empty, frozenset(found) if found else empty)
        return parts[oid]

    def manifest_tree(oid: Oid) -> frozenset[Oid]:
        meta, lists = manifest_parts(oid)
        return meta | lists

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
            for oid in manifest_tree(e.manifest):
                affects.setdefault(oid, []).append((e.sid, e.seq))
        if progress:
            progress("versions", versions)

    problems = [
        FsckProblem("corrupt", oid.hex(), why, affects.get(oid, []))
        for oid, why in sorted(bad.items())
    ]
    problems += [
        FsckProblem("missing", oid.hex(), "referenced but not stored", affects.get(oid, []))
        for oid in sorted(missing)
    ]
    # The search index must match the heads (a contained check: see search.check), once
    # every object is sound: a corrupt or missing one is named above, and a reindex
    # after the repair rebuilds what the index held of it.
    from .search import check as check_search

    return FsckReport(checked, versions, sessions,
                      problems + head_problems
                      + ([] if bad or missing else check_search(store)))
