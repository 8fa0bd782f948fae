"""The process the crash harness kills: writes to a store in a seeded loop and reports.

Run as ``python crash_writer.py MODE STORE SEED SYNCHRONOUS``. Every line on stdout is
one JSON object, written with a single flushed ``write`` (atomic on a pipe below 4 KiB):

* ``{"ready": true}`` once the store is open;
* ``{"intent": ..., "sid", "seq", "digest"}`` just before a write is handed to the store:
  if the process dies after this line, version ``seq`` either does not exist or holds
  exactly ``digest``;
* ``{"ack": ..., "sid", "seq", "op", "count", "digest"}`` after the store returned: the
  version is acknowledged and must never be lost or change.

The digest is of the writer's own model of the session (messages and metadata), not of
what the store returns, so a version that loads with that digest holds what was meant.

Modes: ``ops`` (append, save, shrink, metadata, rewind, restore, fork, delete), ``gc``
(GC in a loop, one ``{"gc": n}`` line per finished run) and ``recover`` (one recovery
run, then ``{"recovered": n}``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from typing import Any

from cas_store import (
    Conflict,
    SessionNotFound,
    Store,
    StoreLocked,
    VersionNotFound,
    gc,
    open_store,
)
from cas_store.gc import Lease

SESSIONS = ("s0", "s1", "s2")
FORKS = ("f0", "f1")
MAX_MESSAGES = 40
#: Where lines go: stdout, or the pipe a forking harness set up.
OUT_FD = 1


def digest(messages: list[Any], metadata: dict[str, Any]) -> str:
    """Return the digest of a session state (canonical JSON, sha256)."""
    body = json.dumps({"messages": messages, "metadata": metadata}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def say(**fields: Any) -> None:
    """Write one JSON line in a single write(2): whole on the pipe, or not at all."""
    os.write(OUT_FD, (json.dumps(fields, separators=(",", ":")) + "\n").encode())


class Writer:
    """One session model per id, kept equal to what the writer was acknowledged."""

    def __init__(self, store: Store, rng: random.Random, seed: int) -> None:
        self.store = store
        self.rng = rng
        self.seed = seed
        self.n = 0
        self.state: dict[str, tuple[int, list[Any], dict[str, Any], bool]] = {}

    def message(self) -> dict[str, Any]:
        self.n += 1
        text = "".join(self.rng.choice("abcdé漢🙂 \n\"\\") for _ in range(self.rng.randint(1, 80)))
        return {"role": self.rng.choice(["user", "assistant", "tool"]), "content": text,
                "w": self.seed, "n": self.n}

    def head(self, sid: str) -> tuple[int, list[Any], dict[str, Any], bool] | None:
        """Return (seq, messages, metadata, deleted) of the head, read from the store once."""
        if sid not in self.state:
            try:
                versions = self.store.versions(sid, limit=1)
            except SessionNotFound:
                return None
            seq = versions[0].seq
            s = self.store.load_version(sid, seq)
            self.state[sid] = (seq, list(s.messages), dict(s.metadata),
                               versions[0].op == "delete")
        return self.state[sid]

    def write(self, sid: str, op: str, messages: list[Any], metadata: dict[str, Any],
              call: Any, *, deleted: bool = False) -> None:
        """Announce, perform and acknowledge one write whose outcome is (messages, metadata)."""
        current = self.head(sid)
        seq = (current[0] if current else 0) + 1
        d = digest(messages, metadata)
        say(intent=op, sid=sid, seq=seq, digest=d)
        v = call()
        if current is not None and v.seq == current[0] and d == digest(current[1], current[2]):
            return  # a change to the state it already had: the store made no new version
        if v.seq != seq:
            raise AssertionError(f"{op} on {sid}: got seq {v.seq}, expected {seq}")
        self.state[sid] = (v.seq, messages, metadata, deleted)
        say(ack=op, sid=sid, seq=v.seq, op=v.op, count=len(messages), digest=d)

    def step(self) -> None:
        """Perform one random operation (each one a single version)."""
        rng, store = self.rng, self.store
        sid = rng.choice(SESSIONS + FORKS if rng.random() < 0.3 else SESSIONS)
        current = self.head(sid)
        if current is None or current[3]:
            if sid in FORKS:
                self.fork(sid)
            elif current is None:
                meta = {"title": f"session {sid}", "w": self.seed}
                msgs = [self.message() for _ in range(rng.randint(0, 3))]
                self.write(sid, "create", msgs, meta, lambda: store.create(sid, meta, msgs))
            else:
                self.restore(sid, current[0] - 1)
            return
        seq, msgs, meta, _ = current
        r = rng.random()
        if len(msgs) > MAX_MESSAGES:
            keep = rng.randint(0, 10)
            new = [*msgs[:keep], self.message()]
            self.write(sid, "rewind", new, meta,
                       lambda: store.rewind(sid, keep, new[keep:], expected=seq))
        elif r < 0.35:
            add = [self.message() for _ in range(rng.randint(1, 4))]
            self.write(sid, "append", msgs + add, meta,
                       lambda: store.append(sid, add, expected=seq))
        elif r < 0.5:
            new = [*msgs, self.message()]
            meta2 = {**meta, "saved": self.n}
            self.write(sid, "save", new, meta2,
                       lambda: store.save(sid, new, meta2, expected=seq))
        elif r < 0.6 and msgs:
            # A shrink nobody declared: accepted, flagged suspect, left for recovery.
            new = msgs[: rng.randrange(len(msgs))]
            self.write(sid, "save", new, meta, lambda: store.save(sid, new, meta, expected=seq))
        elif r < 0.7 and msgs:
            new = [*msgs[:rng.randrange(len(msgs))], self.message()]
            self.write(sid, "save", new, meta, lambda: store.save(
                sid, new, meta, expected=seq, intentional_shrink=True))
        elif r < 0.85:
            self.n += 1
            patch = {"poll": self.n, "active_stream_id": None if rng.random() < 0.5 else "x"}
            meta2 = {k: v for k, v in {**meta, **patch}.items() if v is not None}
            self.write(sid, "update_metadata", msgs, meta2,
                       lambda: store.update_metadata(sid, patch, expected=seq))
        elif r < 0.93 and seq > 1:
            self.restore(sid, rng.randint(max(1, seq - 6), seq - 1))
        elif r < 0.97 and sid in FORKS:
            self.write(sid, "delete", msgs, meta, lambda: store.delete(sid, expected=seq),
                       deleted=True)
        else:
            keep = rng.randint(0, len(msgs))
            new = [*msgs[:keep], self.message()]
            self.write(sid, "rewind", new, meta,
                       lambda: store.rewind(sid, keep, new[keep:], expected=seq))

    def restore(self, sid: str, target: int) -> None:
        """Restore version target of sid (skipped if GC pruned it meanwhile)."""
        current = self.head(sid)
        assert current is not None
        try:
            old = self.store.load_version(sid, target)
            self.write(sid, "restore", list(old.messages), dict(old.metadata),
                       lambda: self.store.restore(sid, target, expected=current[0]))
        except VersionNotFound:
            pass

    def fork(self, sid: str) -> None:
        """Fork a main session's head into sid (which does not exist or is deleted)."""
        src = self.rng.choice(SESSIONS)
        head = self.head(src)
        if head is None or head[3]:
            return
        self.write(sid, "fork", head[1], head[2],
                   lambda: self.store.fork(src, sid, seq=head[0]))


def run(mode: str, path: str, seed: int, sync: str) -> None:
    """Run one mode until killed (or done)."""
    store = open_store(path, synchronous=sync)
    say(ready=True)
    if mode == "recover":
        report = store.recover()
        say(recovered=sum(a.action == "recovered" for a in report.actions))
        return
    if mode == "gc":
        # A killed GC keeps the store's GC lease until it expires (120 s by default), so
        # the next GC waits; shortened here so that GC runs in most rounds after a kill.
        Lease.__init__.__kwdefaults__["ttl"] = 0.4
        runs = 0
        while True:
            say(gc_start=runs + 1)
            try:
                gc(store, keep_last=3, grace=0.0)
            except StoreLocked:
                say(gc_locked=runs + 1)
                time.sleep(0.02)
                continue
            runs += 1
            say(gc=runs)
    writer = Writer(store, random.Random(seed), seed)
    while True:
        try:
            writer.step()
        except Conflict as exc:  # only one writer per store: a Conflict is a bug
            raise AssertionError(f"unexpected conflict: {exc}") from exc


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
