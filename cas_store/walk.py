"""The object graph: what each stored object points at, and the damage under each version.

fsck and GC's mark walk the same graph (manifest -> delta base, metadata, chunks and page
roots; page -> child pages or chunks). ``children`` is the one place that says what an
object points at; ``Damage`` finds, per version, the missing or unreadable objects it
needs (fsck's report, and the sessions GC names when it refuses to sweep).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from . import manifest as M
from .backends import Backend
from .errors import CasError
from .objects import Kind, Oid, decode_page, decompress

#: What an object points at: (manifests it builds on, leaves, page roots).
Refs = tuple[list[Oid], list[Oid], list[Oid]]


def children(kind: Kind, payload: bytes) -> Refs:
    """Return what an object of this kind points at; raise ValueError if it is malformed."""
    if kind == Kind.MANIFEST:
        try:
            return M.references(M.decode(payload))
        except UnicodeDecodeError as exc:
            raise ValueError(str(exc)) from None
    if kind == Kind.PAGE:
        height, kids = decode_page(payload)
        return ([], kids, []) if height == 0 else ([], [], kids)
    return [], [], []


def read(backend: Backend, oid: Oid, kind: Kind) -> tuple[bytes | None, str]:
    """Return (payload, "") of a stored object of this kind, or (None, why it is damaged)."""
    got = backend.get_frames([oid]).get(oid)
    if got is None:
        return None, "missing"
    if got[0] != kind:
        return None, f"is a {got[0].name.lower()}, expected a {kind.name.lower()}"
    try:
        return decompress(oid, got[1], verify=False), ""
    except CasError as exc:
        return None, str(exc)


class Damage:
    """The missing or unreadable objects under each version, each object walked once.

    ``bad`` holds objects known to be corrupt (fsck re-hashed them); the walk adds those
    it cannot read or decode, and records missing ones in ``missing``. Results are
    memoised per object, so pages shared by thousands of versions are walked once.
    """

    def __init__(self, backend: Backend, bad: Mapping[Oid, str] | None = None, *,
                 lost: Collection[Oid] = ()) -> None:
        self.backend = backend
        self.bad: dict[Oid, str] = dict(bad or {})
        # Indexed but without bytes (a blob store lost them): missing, though the index,
        # which ``Backend.missing`` consults, still lists them.
        self.lost = frozenset(lost)
        self.missing: set[Oid] = set()
        self._below: dict[Oid, frozenset[Oid]] = {}
        # Per manifest: (problems under its metadata, problems under its lists). A delta
        # names its own metadata and takes only the lists of its base, so a bad metadata
        # object of a base does not affect the deltas built on it.
        self._parts: dict[Oid, tuple[frozenset[Oid], frozenset[Oid]]] = {}
        self._open: set[Oid] = set()  # manifests whose walk has begun and not ended

    def version(self, manifest: Oid) -> frozenset[Oid]:
        """Return the damaged objects a version (named by its manifest) needs."""
        meta, lists = self._manifest(manifest)
        return meta | lists

    def _leaves(self, oids: list[Oid]) -> set[Oid]:
        out = {o for o in oids if o in self.bad}
        gone = self.lost.intersection(oids) | self.backend.missing(
            o for o in oids if o not in self.bad and o not in self.lost)
        self.missing.update(gone)
        return out | gone

    def _load(self, oid: Oid, kind: Kind) -> Refs | None:
        """Return what oid points at, or None after recording why it cannot be read."""
        if oid in self.bad or oid in self.missing:
            return None
        payload, why = read(self.backend, oid, kind)
        if payload is None:
            if why == "missing":
                self.missing.add(oid)
            else:
                self.bad[oid] = why
            return None
        try:
            return children(kind, payload)
        except ValueError:
            self.bad[oid] = f"{kind.name.lower()} is malformed"
            return None

    def _page(self, root: Oid) -> frozenset[Oid]:
        if root in self._below:
            return self._below[root]
        refs = self._load(root, Kind.PAGE)
        if refs is None:
            found: set[Oid] = {root}
        else:
            _, leaves, pages = refs
            found = self._leaves(leaves)
            for c in pages:
                found |= self._page(c)
        self._below[root] = frozenset(found)
        return self._below[root]

    def _manifest(self, oid: Oid) -> tuple[frozenset[Oid], frozenset[Oid]]:
        if oid in self._parts:
            return self._parts[oid]
        if oid in self._open:
            # Its chain of bases came back to it (only a damaged id index reads one id as
            # another): damage, and the end of the walk down this chain.
            self.bad.setdefault(oid, "manifest's chain of bases comes back to itself")
            return frozenset({oid}), frozenset({oid})
        self._open.add(oid)
        try:
            return self._walk_manifest(oid)
        finally:
            self._open.discard(oid)

    def _walk_manifest(self, oid: Oid) -> tuple[frozenset[Oid], frozenset[Oid]]:
        payload, why = (None, "") if oid in self.bad else read(self.backend, oid, Kind.MANIFEST)
        if payload is None:
            if why == "missing":
                self.missing.add(oid)
            elif why:
                self.bad[oid] = why
            self._parts[oid] = (frozenset({oid}), frozenset({oid}))
            return self._parts[oid]
        try:
            raw = M.decode(payload)
        except (ValueError, UnicodeDecodeError):
            self.bad[oid] = "manifest is malformed"
            self._parts[oid] = (frozenset({oid}), frozenset({oid}))
            return self._parts[oid]
        bases, leaves, roots = M.references(raw)
        meta = frozenset(self._leaves([raw.meta]))
        found = self._leaves([o for o in leaves if o != raw.meta])
        for base in bases:  # a delta's chain is short (MAX_DEPTH) and memoised
            found |= self._manifest(base)[1]
        for root in roots:
            found |= self._page(root)
        self._parts[oid] = (meta, frozenset(found))
        return self._parts[oid]
