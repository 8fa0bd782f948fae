"""Garbage collection: expire versions by a retention policy, then delete what nothing reaches.

Three steps, each safe to interrupt at any point:

1. **Retention.** Per session, the version log is cut to what the policy keeps (always
   the head, and every version recovery may still replay); a deleted session whose
   deletion is older than ``deleted_retention`` goes entirely. Each session is one
   transaction that never deletes the head.
2. **Mark.** From every version still in the log — listed after step 1 finished, then
   re-listed for versions committed meanwhile — through manifests and pages to chunks.
   The mark set is a bitmap over the backend's object ordinals (1 bit an object: 1.25 MB
   for 10 million), and it doubles as the memo that stops a page shared by thousands of
   versions from being walked twice.
3. **Sweep.** Every unmarked object written before ``start - grace`` is deleted, in
   batches; the backend re-checks the write time in the deleting transaction, so an
   object a writer has just reused (a dedup hit refreshes its write time) survives.

Why this never breaks a version a writer is creating meanwhile is argued in
docs/design.md ("Garbage collection").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import recovery
from .backends import Backend, HeadRow, LogEntry
from .errors import CasError, InvalidArgument, StoreDamaged, StoreLocked
from .objects import Kind, Oid, decompress
from .packs import pack_id
from .walk import Damage, Refs, children

if TYPE_CHECKING:
    from .store import Store

DAY = 86400.0
_BATCH = 500  # ids per backend call: matches the backends' IN (...) batches
_RESCANS = 5  # re-listings for versions committed during the mark (see _mark_new)
LEASE_TTL = 120.0  # a killed GC blocks the next one for at most this long

#: progress(phase, done, total): phase is "retention", "mark" or "sweep"; total may be None.
Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True, slots=True)
class GCReport:
    """What a GC run removed (or, with ``dry_run``, would remove), and what it kept."""

    dry_run: bool
    started_at: float
    cutoff: float  # objects written at or after this time were spared whatever they are
    sessions: int
    sessions_dropped: int
    versions_pruned: int
    versions_kept: int
    objects_marked: int
    objects_swept: int
    bytes_swept: int  # stored (compressed) bytes
    missing: int  # objects the mark needed but could not find or read (run fsck)
    mark_seconds: float
    sweep_seconds: float
    seconds: float
    damaged_sessions: tuple[str, ...] = ()  # sessions those objects affect (force only)
    forced: bool = False  # swept although the store is damaged
    # Manifests of pruned versions kept because a kept version's delta manifest builds on
    # them (with the pages and chunks they reach): they go once no delta needs them.
    delta_bases_kept: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "cutoff": self.cutoff,
            "sessions": self.sessions,
            "sessions_dropped": self.sessions_dropped,
            "versions_pruned": self.versions_pruned,
            "versions_kept": self.versions_kept,
            "objects_marked": self.objects_marked,
            "objects_swept": self.objects_swept,
            "bytes_swept": self.bytes_swept,
            "missing": self.missing,
            "damaged_sessions": list(self.damaged_sessions),
            "forced": self.forced,
            "delta_bases_kept": self.delta_bases_kept,
            "mark_seconds": round(self.mark_seconds, 3),
            "sweep_seconds": round(self.sweep_seconds, 3),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class Retention:
    """Which versions of a session survive: the policy and the clock it is applied at."""

    keep_last: int | None
    keep_within: float | None
    now: float
    deleted_before: float  # deleted sessions whose deletion is older than this go

    def keeps(self, head: HeadRow, entries: Sequence[LogEntry]) -> set[int]:
        """Return the seqs to keep of a session's ascending log entries."""
        everything = {e.seq for e in entries}
        if head.deleted or (self.keep_last is None and self.keep_within is None):
            # A deleted session keeps its whole history until it expires: restore
            # brings any of it back.
            return everything
        keep = {head.seq}
        if self.keep_last is not None:
            keep.update(e.seq for e in entries[-self.keep_last:])
        if self.keep_within is not None:
            since = self.now - self.keep_within
            keep.update(e.seq for e in entries if e.created_at >= since)
        keep.update(self.recovery_needs(entries))
        return keep & everything | {head.seq}

    def recovery_needs(self, entries: Sequence[LogEntry]) -> list[int]:
        """Return the seqs recovery may still replay, oldest first.

        That is the larger side of the first unresolved suspect shrink, however old (a
        recovery acts on it whenever it runs), and every version from it to the head: the
        replay needs the contiguous run. The recovery window plays no part here: pruning
        the larger side of an unreviewed shrink would make its loss permanent.
        """
        start = len(entries) - 1
        # Recovery only reads the contiguous run ending at the head (Store._recent_entries).
        while start > 0 and entries[start - 1].seq == entries[start].seq - 1:
            start -= 1
        run = entries[start:]
        i = recovery.first_unresolved_shrink(run)
        return [] if i is None else [e.seq for e in run[i - 1:]]

    def expired(self, head: HeadRow) -> bool:
        """Return True if this is a deleted session past its deleted-retention."""
        return head.deleted and head.updated_at < self.deleted_before


#: Largest row number GC marks (a 2 GiB bitmap): SQLite numbers rows from 1 up, one a
#: write, so a larger one is a damaged row, never 17 billion objects.
MAX_ORDINAL = 2**34


class Bitmap:
    """A growable set of non-negative integers, one bit each."""

    __slots__ = ("bits", "count")

    def __init__(self, size: int = 0) -> None:
        self.bits = bytearray((size >> 3) + 1)
        self.count = 0

    def add(self, n: int) -> bool:
        """Add n (never negative: a ValueError); return True if it was not in the set before."""
        if n < 0:
            raise ValueError(f"a bitmap holds no negative number ({n})")
        byte, bit = n >> 3, 1 << (n & 7)
        if byte >= len(self.bits):
            self.bits.extend(bytes(max(byte + 1 - len(self.bits), len(self.bits))))
        if self.bits[byte] & bit:
            return False
        self.bits[byte] |= bit
        self.count += 1
        return True

    def __contains__(self, n: object) -> bool:
        if not isinstance(n, int):
            return False
        byte = n >> 3
        return 0 <= byte < len(self.bits) and bool(self.bits[byte] & (1 << (n & 7)))

    @property
    def nbytes(self) -> int:
        """Bytes the bitmap occupies."""
        return len(self.bits)


class Lease:
    """The store-wide GC lease: two GC runs never interleave their steps."""

    def __init__(self, backend: Backend, *, held: bool, ttl: float = LEASE_TTL) -> None:
        self.backend = backend
        self.owner = uuid.uuid4().hex
        self.held = held  # a dry run writes nothing, so it takes no lease
        self.ttl = ttl
        self._renewed = -ttl

    def renew(self) -> None:
        """Take or renew the lease when a quarter of it has passed; raise if it is lost."""
        if not self.held or time.monotonic() - self._renewed < self.ttl / 4:
            return
        if not self.backend.lease("gc", self.owner, self.ttl):
            raise StoreLocked(
                "another gc is running on this store (one that was killed holds it for up"
                f" to {self.ttl:g}s); try again later"
            )
        self._renewed = time.monotonic()

    def release(self) -> None:
        """Give the lease up."""
        if self.held:
            self.backend.release("gc", self.owner)


class Marker:
    """Marks everything reachable from manifests, walking each object at most once."""

    def __init__(self, backend: Backend, progress: Progress | None = None,
                 tick: Callable[[], None] = lambda: None) -> None:
        self.backend = backend
        self.tick = tick
        self.marked = Bitmap()
        # Manifests a version names, and manifests some delta builds on: a base no kept
        # version names is kept only for the deltas (report: delta_bases_kept).
        self.named = Bitmap()
        self.bases = Bitmap()
        #: Objects the mark needed but could not find or read, and why: a damaged store.
        self.damaged: dict[Oid, str] = {}
        self.progress = progress
        self._reported = 0

    def _fresh(self, oids: Iterable[Oid]) -> list[Oid]:
        """Mark these ids; return the ones that were not marked before."""
        out: list[Oid] = []
        self.tick()
        unique = list(dict.fromkeys(oids))
        ordinals = self.backend.ordinals(unique)
        for oid in unique:
            n = ordinals.get(oid)
            if n is None:
                # Referenced but not stored: a damaged store (fsck reports it). Nothing
                # below it can be found, so there is nothing more to mark.
                self.damaged[oid] = "missing"
            elif self._mark(oid, n):
                out.append(oid)
        if self.progress and self.marked.count - self._reported >= 10_000:
            self._reported = self.marked.count
            self.progress("mark", self.marked.count, None)
        return out

    def _mark(self, oid: Oid, n: int) -> bool:
        """Mark oid's ordinal; return True if it was not marked before.

        A negative or impossibly large ordinal is a damaged row number (SQLite checks
        none): recorded as damage, so that the sweep, which finds objects by these
        numbers, is refused (and the bitmap never grows to its size).
        """
        if not 0 <= n <= MAX_ORDINAL:
            self.damaged[oid] = "stored under a damaged row number"
            return False
        return self.marked.add(n)

    def _refs(self, oids: Sequence[Oid], kind: Kind) -> list[tuple[Oid, Refs]]:
        """Return what each readable object points at; record the others as damaged."""
        frames = self.backend.get_frames(oids)
        out = []
        for oid in oids:
            got = frames.get(oid)
            if got is None or got[0] != kind:
                self.damaged[oid] = "missing" if got is None else "of the wrong kind"
                continue
            try:
                out.append((oid, children(kind, decompress(oid, got[1], verify=False))))
            except (CasError, ValueError, IndexError) as exc:
                self.damaged[oid] = str(exc) or "malformed"
        return out

    def delta_bases_kept(self) -> int:
        """Return how many marked manifests no kept version names (delta bases only)."""
        named = self.named.bits
        return sum((b & ~(named[i] if i < len(named) else 0)).bit_count()
                   for i, b in enumerate(self.bases.bits))

    def _note(self, oids: Sequence[Oid], into: Bitmap) -> None:
        for n in self.backend.ordinals(oids).values():
            if 0 <= n <= MAX_ORDINAL:  # a damaged one: _fresh records it
                into.add(n)

    def manifests(self, oids: Sequence[Oid]) -> None:
        """Mark these manifests and everything under them (delta bases included)."""
        for i in range(0, len(oids), _BATCH):
            self._note(oids[i : i + _BATCH], self.named)
        pending = list(oids)
        while pending:
            batch = pending[-_BATCH:]
            del pending[-_BATCH:]
            leaves: list[Oid] = []
            roots: list[Oid] = []
            for _, (bases, chunks, trees) in self._refs(self._fresh(batch), Kind.MANIFEST):
                if bases:
                    self._note(bases, self.bases)
                pending.extend(bases)  # a delta's base must survive with it
                leaves.extend(chunks)
                roots.extend(trees)
            self._leaves(leaves)
            self._pages(roots)

    def _leaves(self, oids: Sequence[Oid]) -> None:
        for i in range(0, len(oids), _BATCH):
            fresh = self._fresh(oids[i : i + _BATCH])
            if fresh and self.backend.packs:
                # A live chunk kept in a pack keeps that pack (its page may be dead): the
                # sweep would refuse it anyway, and a dry run must count what a run does.
                packed = set(self.backend.packed_in(fresh).values())
                for pack, n in self.backend.ordinals(list(packed)).items():
                    self._mark(pack, n)

    def _pages(self, roots: list[Oid]) -> None:
        # Depth-first by batches: the pending list stays about tree height x batch x
        # fan-out ids long, however many pages there are.
        stack = list(roots)
        while stack:
            batch = stack[-_BATCH:]
            del stack[-_BATCH:]
            leaves: list[Oid] = []
            packed: list[Oid] = []
            for oid, (_, chunks, pages) in self._refs(self._fresh(batch), Kind.PAGE):
                leaves.extend(chunks)
                stack.extend(pages)
                packed.append(oid)
            self._leaves(leaves)
            if packed and self.backend.packs:
                # A live page keeps its pack, a leaf's or a level-1 page's (a load reads
                # the page's messages from it), also when every member is kept in
                # another pack too.
                for pack, n in self.backend.ordinals([pack_id(p) for p in packed]).items():
                    self._mark(pack, n)


def _duration(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidArgument(f"{name} must be a non-negative number of seconds", field=name)
    return float(value)


def gc(store: Store, *, keep_last: int | None = None, keep_within: float | None = None,
       deleted_retention: float = 30 * DAY, grace: float = 3600.0, dry_run: bool = False,
       progress: Progress | None = None, force: bool = False) -> GCReport:
    """Expire versions the policy does not keep, then delete objects no version reaches.

    Never breaks a retained version, also while writers keep writing. With the defaults
    every version is kept and only unreferenced objects older than ``grace`` seconds go.
    ``keep_last`` / ``keep_within`` (seconds) combine: a version survives if either keeps
    it. With ``dry_run`` nothing is written and the report says what would go.

    Never sweeps a damaged store: when an object some version needs is missing or
    unreadable, nothing is deleted (no version, no object) and StoreDamaged names the
    objects and the sessions affected. ``force`` sweeps anyway (the report then names
    them); the objects it deletes may be the ones a repair would have needed.
    """
    if keep_last is not None and (
        isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1
    ):
        raise InvalidArgument("keep_last must be a positive integer", field="keep_last")
    keep_within = _duration(keep_within, "keep_within")
    deleted_retention = _duration(deleted_retention, "deleted_retention") or 0.0
    grace = _duration(grace, "grace") or 0.0

    backend = store.backend
    started = backend.now()
    # The sweep compares with write times stamped by the backend's clock (wall time, the
    # database server's for a networked backend, so servers' clock skew does not matter);
    # the policy compares with version times stamped by the store's clock.
    cutoff = started - grace
    now = store.clock()
    policy = Retention(keep_last, keep_within, now, now - deleted_retention)

    lease = Lease(backend, held=not dry_run)
    lease.renew()
    try:
        # 0. The mark from every version in the log, before anything is deleted: an object
        # it cannot find or read means a damaged store, and a repair needs every object
        # that is left (git and restic refuse to prune the same way).
        t_mark = time.monotonic()
        marker = Marker(backend, progress, lease.renew)
        seen: dict[str, int] = {}
        kept = _mark_all(backend, marker, policy, seen, dry_run, everything=True)
        damaged = dict(marker.damaged)
        affected = _affected(backend, damaged) if damaged else []
        if damaged and not force:
            raise StoreDamaged(
                f"gc refused: {len(damaged)} objects the store needs are missing or"
                f" unreadable (sessions affected: {', '.join(affected) or 'none'});"
                " nothing was deleted. Run fsck; force=True sweeps anyway",
                objects=sorted(o.hex() for o in damaged), sessions=affected)
        mark_seconds = time.monotonic() - t_mark

        # 1. Retention. All pruning is done before the mark lists anything (design.md).
        sessions, dropped, pruned = _retention(backend, policy, dry_run, lease, progress)

        # 2. Mark. The first mark stands unless retention removed something: then again
        # from what it kept, so the pruned versions' objects go in this run.
        t_mark = time.monotonic()
        if dropped or pruned:
            marker = Marker(backend, progress, lease.renew)
            seen = {}
            kept = _mark_all(backend, marker, policy, seen, dry_run)
        if progress:
            progress("mark", marker.marked.count, None)
        for _ in range(_RESCANS):
            more = _mark_new(backend, marker, seen)
            kept += more
            if not more:
                break
        mark_seconds += time.monotonic() - t_mark
        if progress:
            progress("mark", marker.marked.count, marker.marked.count)

        # 3. Sweep.
        t_sweep = time.monotonic()
        swept, freed = _sweep(backend, marker.marked, cutoff, dry_run, lease, progress)
        sweep_seconds = time.monotonic() - t_sweep
    finally:
        lease.release()

    return GCReport(
        dry_run=dry_run, started_at=started, cutoff=cutoff, sessions=sessions,
        sessions_dropped=dropped, versions_pruned=pruned, versions_kept=kept,
        objects_marked=marker.marked.count, objects_swept=swept, bytes_swept=freed,
        missing=len(damaged | marker.damaged), mark_seconds=mark_seconds,
        sweep_seconds=sweep_seconds, seconds=backend.now() - started,
        damaged_sessions=tuple(affected), forced=bool(damaged),
        delta_bases_kept=marker.delta_bases_kept(),
    )


def _affected(backend: Backend, damaged: dict[Oid, str]) -> list[str]:
    """Return the sessions with a version that needs one of the damaged objects."""
    walk = Damage(backend, {o: why for o, why in damaged.items() if why != "missing"})
    out = []
    for head in backend.iter_heads():
        if any(walk.version(e.manifest) for e in backend.versions(head.sid)):
            out.append(head.sid)
    return out


def _retention(backend: Backend, policy: Retention, dry_run: bool, lease: Lease,
               progress: Progress | None) -> tuple[int, int, int]:
    """Prune every session's log to what the policy keeps; return (sessions, dropped, pruned)."""
    sessions = dropped = pruned = 0
    for head in backend.iter_heads():
        sessions += 1
        lease.renew()
        if progress and sessions % 100 == 0:
            progress("retention", sessions, None)
        entries = backend.versions(head.sid, ascending=True)
        if policy.expired(head):
            if dry_run or backend.drop_session(head.sid, head.seq):
                dropped += 1
                pruned += len(entries)
            continue  # a session that moved meanwhile is no longer expired: next run
        keep = policy.keeps(head, entries)
        gone = [e.seq for e in entries if e.seq not in keep]
        if gone:
            pruned += len(gone) if dry_run else backend.prune_versions(head.sid, gone)
    return sessions, dropped, pruned


def _retained(policy: Retention, head: HeadRow, entries: list[LogEntry],
              dry_run: bool) -> list[LogEntry]:
    # After a real retention step the log holds exactly what is kept (plus versions
    # committed since); a dry run changed nothing, so it applies the policy again.
    if not dry_run:
        return entries
    if policy.expired(head):
        return []
    keep = policy.keeps(head, entries)
    return [e for e in entries if e.seq in keep]


def _mark_all(backend: Backend, marker: Marker, policy: Retention, seen: dict[str, int],
              dry_run: bool, *, everything: bool = False) -> int:
    """Mark from the versions in the log; record each session's newest seq seen.

    A dry run marks only what the policy keeps, unless ``everything``.
    """
    kept = 0
    for head in backend.iter_heads():
        entries = backend.versions(head.sid, ascending=True)
        if not entries:
            continue
        seen[head.sid] = entries[-1].seq
        retained = entries if everything else _retained(policy, head, entries, dry_run)
        kept += len(retained)
        marker.manifests([e.manifest for e in retained])
    return kept


def _mark_new(backend: Backend, marker: Marker, seen: dict[str, int]) -> int:
    """Mark from versions committed since their session was last listed; return how many.

    Not needed for safety against writers (a new version only adds objects it wrote,
    which are fresh, to objects of versions that were marked), but it makes the mark
    independent of that argument where it is cheap: only moved heads are read again.
    """
    kept = 0
    for head in backend.iter_heads():
        last = seen.get(head.sid)
        if last is not None and head.seq == last:
            continue
        entries = backend.versions(head.sid, ascending=True)
        if not entries:
            continue
        # A head below what was seen is a session dropped and created again: all new.
        new = [e for e in entries if last is None or head.seq < last or e.seq > last]
        seen[head.sid] = entries[-1].seq
        # Marked whole also in a dry run: the policy needs the full log, and marking more
        # only understates what would go.
        kept += len(new)
        marker.manifests([e.manifest for e in new])
    return kept


def _sweep(backend: Backend, marked: Bitmap, cutoff: float, dry_run: bool, lease: Lease,
           progress: Progress | None) -> tuple[int, int]:
    """Delete (or count) unmarked objects written before the cutoff; return (count, bytes)."""
    total = sum(n for n, _, _ in backend.object_totals().values()) if progress else None
    count = freed = scanned = 0
    batch: list[Oid] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal count, freed, batch, pending_bytes
        if dry_run:
            count += len(batch)
            freed += pending_bytes
        else:
            lease.renew()  # a GC that stalled past its lease must not delete any more
            n, b = backend.delete_objects(batch, cutoff)
            count += n
            freed += b
        batch, pending_bytes = [], 0

    for ordinal, oid, stored in backend.iter_ordinals(cutoff):
        scanned += 1
        if ordinal not in marked:
            batch.append(oid)
            pending_bytes += stored
            if len(batch) >= _BATCH:
                flush()
                if progress:
                    progress("sweep", scanned, total)
    if batch:
        flush()
    # Bytes a killed writer put in a blob store but never indexed (none elsewhere).
    if not dry_run:
        lease.renew()
    n, b = backend.sweep_orphans(cutoff, dry_run)
    count += n
    freed += b
    if progress:
        progress("sweep", total or scanned, total)
    return count, freed


def report_lines(report: GCReport) -> list[str]:
    """Return the human-readable summary of a report (what the CLI prints)."""
    verb = "would go" if report.dry_run else "went"
    lines = [
        f"versions: {report.versions_pruned} {verb}"
        f" ({report.sessions_dropped} deleted sessions expired), {report.versions_kept} kept",
        f"objects: {report.objects_swept} {verb} ({_size(report.bytes_swept)}),"
        f" {report.objects_marked} in use",
    ]
    if report.delta_bases_kept:
        n = report.delta_bases_kept
        lines.append(
            f"kept: {n} {'manifest' if n == 1 else 'manifests'} of pruned versions, and what"
            f" {'it reaches' if n == 1 else 'they reach'}: kept versions are delta manifests"
            " built on them (they go once a later full manifest replaces the chain)")
    if report.forced:
        sessions = ", ".join(report.damaged_sessions) or "none"
        lines.append(
            f"warning: the store is damaged ({report.missing} objects missing or unreadable;"
            f" sessions affected: {sessions}); run fsck")
        lost = (f"{report.objects_swept} objects ({_size(report.bytes_swept)}) and"
                f" {report.versions_pruned} versions")
        lines.append(f"forced: {'would lose' if report.dry_run else 'lost'} {lost} that a"
                     " repair of those sessions might have needed")
    elif report.missing:
        lines.append(f"warning: {report.missing} referenced objects are missing; run fsck")
    return lines


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value, unit = n / 1024, "KB"
    for bigger in ("MB", "GB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"



_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}


def parse_duration(text: str) -> float:
    """Return the seconds of a duration like ``30d``, ``12h``, ``90m``, ``45s`` or ``0``.

    Raises ValueError with a message naming the accepted forms.
    """
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:]) if t else None
    number = t[:-1] if unit is not None else t
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not number or value < 0 or value != value or value == float("inf"):
        raise ValueError(
            f"bad duration {text!r}: use a number with s, m, h, d or w (e.g. 30d, 12h, 90m)"
        )
    return value * (unit or 1.0)
