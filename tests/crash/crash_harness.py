"""Kill a writing process with SIGKILL at random moments and check that nothing acknowledged
is lost.

The child is ``crash_writer.py`` started with ``subprocess`` (so the kill is a real
SIGKILL of a real process, mid-transaction or not). The harness reads the child's
``intent``/``ack`` lines, kills it after a random delay, and then checks the store:

* it opens, and ``fsck`` is clean;
* every version acknowledged in the round (and the newest acknowledged version of every
  session ever written) loads with exactly the acknowledged digest;
* every session's head is at or past its newest acknowledged version;
* the write in flight when the kill came either did not land, or landed whole (its
  version holds exactly the digest announced before the call) and is the head;
* a new write succeeds.

One store is reused across all kills, so each round also recovers from all the crashes
before it.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crash_writer
from crash_writer import digest

from cas_store import Store, open_store

WRITER = Path(__file__).with_name("crash_writer.py")
READY_TIMEOUT = 60.0


def kill_count(default_ci: int = 200, default_local: int = 200) -> int:
    """Return the number of kills to do: CAS_CRASH_KILLS, else the CI or local default."""
    env = os.environ.get("CAS_CRASH_KILLS")
    if env:
        return int(env)
    return default_ci if os.environ.get("CI") == "true" else default_local


@dataclass
class Figures:
    """What a harness run did and checked (for the report)."""

    kills: int = 0
    kills_before_ready: int = 0
    acks: int = 0
    acks_checked: int = 0
    in_flight_landed: int = 0
    in_flight_not_landed: int = 0
    probes: int = 0
    fsck_runs: int = 0
    pruned_acks: int = 0
    gc_runs: int = 0
    kills_mid_gc: int = 0
    exec_children: int = 0
    ops: Counter[str] = field(default_factory=Counter)

    def as_properties(self) -> dict[str, Any]:
        """Return the figures as flat name/value pairs."""
        out: dict[str, Any] = {k: v for k, v in vars(self).items() if k != "ops"}
        out["ops"] = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
        return out


class Child:
    """A writer process, and the lines it wrote.

    With ``fork`` (the default) the process is forked from this one, so it starts in
    milliseconds with the engine already imported; otherwise it is a fresh interpreter
    started with ``subprocess``. Either way it is a real process, killed with a real
    SIGKILL, and its lines come through a pipe that outlives it.
    """

    def __init__(self, mode: str, path: Path, seed: int, sync: str, *,
                 fork: bool = True) -> None:
        self.buf = b""
        self.lines: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        # fork() copies only the calling thread: with other threads alive, one of them
        # might hold a lock the child needs, so start a fresh interpreter instead.
        self.forked = fork = fork and threading.active_count() == 1
        if fork:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns into the caller
                code = 1
                try:
                    os.close(r)
                    crash_writer.OUT_FD = w
                    crash_writer.run(mode, str(path), seed, sync)
                    code = 0
                except BaseException:
                    import traceback

                    traceback.print_exc()
                finally:
                    os._exit(code)
            os.close(w)
            self.pid, self.fd = pid, r
        else:
            self.proc = subprocess.Popen(
                [sys.executable, str(WRITER), mode, str(path), str(seed), sync],
                stdout=subprocess.PIPE, cwd=str(WRITER.parent),
            )
            assert self.proc.stdout is not None
            self.pid, self.fd = self.proc.pid, self.proc.stdout.fileno()
        self.status: int | None = None

    def _pump(self, timeout: float | None) -> bool:
        """Read what is available (waiting up to timeout); return False at end of file."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        data = os.read(self.fd, 65536)
        if not data:
            return False
        self.buf += data
        *whole, self.buf = self.buf.split(b"\n")
        self.lines.extend(json.loads(x) for x in whole)
        return True

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait for the child's ready line."""
        deadline = time.monotonic() + timeout
        while not any(x.get("ready") for x in self.lines):
            left = deadline - time.monotonic()
            if left <= 0 or not self._pump(left):
                self.kill(check=False)
                raise AssertionError(f"child {self.pid} never became ready")

    def _reap(self) -> int:
        if self.status is None:
            if self.proc is not None:
                self.status = self.proc.wait()
            else:
                self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.status

    def kill(self, *, check: bool = True) -> list[dict[str, Any]]:
        """SIGKILL the child, wait until it is gone; return every complete line it wrote."""
        exited = os.waitpid(self.pid, os.WNOHANG)[0] != 0 if self.proc is None \
            else self.proc.poll() is not None
        if exited and self.proc is None:
            self.status = 1  # waitpid reaped it: it ended by itself
        if not exited:
            os.kill(self.pid, signal.SIGKILL)
        status = self._reap()
        while self._pump(5.0):
            pass  # a line cut short by the kill stays in buf: it was never acknowledged
        if self.proc is None:
            os.close(self.fd)
        else:
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        if check and status != -signal.SIGKILL:
            raise AssertionError(f"child {self.pid} ended by itself (status {status})")
        return self.lines

    def finish(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Wait for a child that ends by itself; fail unless it exited with status 0."""
        deadline = time.monotonic() + timeout
        while self._pump(max(0.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                self.kill(check=False)
                raise AssertionError(f"child {self.pid} did not finish")
        status = self._reap()
        if self.proc is None:
            os.close(self.fd)
        if status != 0:
            raise AssertionError(f"child {self.pid} failed with status {status}")
        return self.lines


@contextmanager
def opened(path: Path, sync: str) -> Iterator[Store]:
    """Open the store after a crash (the open itself is part of what is checked)."""
    store = open_store(path, synchronous=sync)
    try:
        yield store
    finally:
        store.close()


class Ledger:
    """Everything the writers were told, and the checks against it."""

    def __init__(self, figures: Figures, *, pruning: bool = False) -> None:
        self.acked: dict[tuple[str, int], str] = {}
        self.last: dict[str, int] = {}
        self.figures = figures
        self.pruning = pruning  # GC with keep_last runs: old versions may go, never heads

    def record(self, lines: list[dict[str, Any]]) -> tuple[list[tuple[str, int]],
                                                           dict[str, Any] | None]:
        """Take a round's lines; return the new acks and the write in flight (or None)."""
        new: list[tuple[str, int]] = []
        pending: dict[str, Any] | None = None
        for line in lines:
            if "intent" in line:
                pending = line
            elif "ack" in line:
                key = (line["sid"], line["seq"])
                if key in self.acked and self.acked[key] != line["digest"]:
                    raise AssertionError(f"version {key} acknowledged twice, differently")
                self.acked[key] = line["digest"]
                self.last[line["sid"]] = max(self.last.get(line["sid"], 0), line["seq"])
                self.figures.acks += 1
                self.figures.ops[line["ack"]] += 1
                new.append(key)
                pending = None
            elif "gc" in line:
                self.figures.gc_runs += 1
        return new, pending

    def check_version(self, store: Store, sid: str, seq: int, want: str) -> None:
        """Check that an acknowledged version loads with its digest (or was pruned by GC)."""
        if self.pruning and store.backend.version(sid, seq) is None:
            if seq == self.last[sid]:
                raise AssertionError(f"newest acknowledged version {sid}@{seq} is gone")
            self.figures.pruned_acks += 1
            return
        s = store.load_version(sid, seq)
        got = digest(list(s.messages), dict(s.metadata))
        if got != want:
            raise AssertionError(f"{sid}@{seq} does not hold what was acknowledged")
        self.figures.acks_checked += 1

    def check(self, store: Store, new: list[tuple[str, int]],
              pending: dict[str, Any] | None) -> None:
        """Run every after-crash check on an opened store."""
        report = store.fsck()
        self.figures.fsck_runs += 1
        if not report.ok:
            raise AssertionError(f"fsck after a crash: {report.to_json()}")
        for sid, seq in new:
            self.check_version(store, sid, seq, self.acked[(sid, seq)])
        for sid, seq in self.last.items():
            self.check_version(store, sid, seq, self.acked[(sid, seq)])
            head = store.versions(sid, limit=1)[0].seq
            if head < seq:
                raise AssertionError(f"{sid}: head {head} is behind acknowledged {seq}")
        if pending is not None:
            sid, seq = pending["sid"], pending["seq"]
            if store.backend.version(sid, seq) is None:
                self.figures.in_flight_not_landed += 1
            else:
                s = store.load_version(sid, seq)
                if digest(list(s.messages), dict(s.metadata)) != pending["digest"]:
                    raise AssertionError(f"{sid}@{seq} landed but is not what was written")
                if store.versions(sid, limit=1)[0].seq != seq:
                    raise AssertionError(f"{sid}@{seq} landed but is not the head")
                self.figures.in_flight_landed += 1

    def probe(self, store: Store, rng: random.Random) -> None:
        """Check that the next write succeeds, on a session the writer was writing.

        The probe is acknowledged like a writer's write: later rounds check it too.
        """
        live = [s for s in self.last if s.startswith("s")] or ["s0"]
        sid = rng.choice(live)
        probe = {"role": "user", "content": "probe after crash", "probe": self.figures.kills}
        if sid not in self.last:
            v = store.create(sid, {}, [probe])
            want = digest([probe], {})
        else:
            before = store.load(sid)
            v = store.append(sid, [probe], expected=before.seq)
            want = digest([*before.messages, probe], dict(before.metadata))
        assert store.messages(sid, -1) == [probe]
        self.acked[(sid, v.seq)] = want
        self.last[sid] = v.seq
        self.check_version(store, sid, v.seq, want)
        self.figures.probes += 1

    def check_all(self, store: Store) -> None:
        """Check every version ever acknowledged (at the end of a run)."""
        for (sid, seq), want in sorted(self.acked.items()):
            self.check_version(store, sid, seq, want)


def run_kills(path: Path, kills: int, seed: int, *, sync: str = "FULL",
              with_gc: bool = False, max_delay: float = 0.1) -> Figures:
    """Kill writers (and, with_gc, a GC loop beside them) ``kills`` times; check each time."""
    rng = random.Random(seed)
    figures = Figures()
    ledger = Ledger(figures, pruning=with_gc)
    for k in range(kills):
        # Every 20th writer is a fresh interpreter (exec), the rest are forked.
        writer = Child("ops", path, seed * 100_000 + k, sync, fork=k % 20 != 19)
        figures.exec_children += not writer.forked
        collector = Child("gc", path, seed * 100_000 + k, sync) if with_gc else None
        early = rng.random() < 0.05
        if early:
            # Sometimes kill during start-up: opening the store writes its schema.
            time.sleep(rng.uniform(0.0, 0.01))
            figures.kills_before_ready += 1
        else:
            for child in (writer, collector):
                if child is not None:
                    child.wait_ready()
            time.sleep(rng.uniform(0.002, max_delay))
        if collector is not None:
            # GC and writer die at different moments: either may be mid-transaction.
            lines_gc = collector.kill() if rng.random() < 0.5 else None
            lines = writer.kill()
            if lines_gc is None:
                time.sleep(rng.uniform(0.0, max_delay / 4))
                lines_gc = collector.kill()
            ledger.record(lines_gc)
            starts = [x for x in lines_gc if {"gc_start", "gc", "gc_locked"} & set(x)]
            if starts and "gc_start" in starts[-1]:
                figures.kills_mid_gc += 1
        else:
            lines = writer.kill()
        figures.kills += 1
        new, pending = ledger.record(lines)
        with opened(path, sync) as store:
            ledger.check(store, new, pending)
            ledger.probe(store, rng)
    with opened(path, sync) as store:
        ledger.check_all(store)
        if not store.fsck().ok:
            raise AssertionError("fsck after the last crash")
    return figures
