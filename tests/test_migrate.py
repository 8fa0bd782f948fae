"""migrate: every session with its whole history, verified, resumable, idempotent.

Sources and destinations are parameters (``STORE_KINDS``): every test that takes
``source`` or ``dest`` runs unchanged on each kind of store, and on each pair. A backend
adds its kind to ``STORE_KINDS`` and a branch to ``location`` (which may ask the request
for a server fixture).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import fresh_location
from support import msg, msgs
from typer.testing import CliRunner

from cas_store import SessionExists, Store, gc, open_store
from cas_store.backends.base import Backend
from cas_store.cli import app
from cas_store.errors import CorruptObject, InvalidArgument
from cas_store.migrate import migrate

STORE_KINDS = ["sqlite", "postgres", "postgres+s3"]
T0 = time.time() - 86400.0  # inside the recovery window


@dataclass
class Location:
    """One store a migration reads or writes: its URL, and its object store if any."""

    kind: str
    url: str
    objects: str | None = None

    def open(self) -> Store:
        return open_store(self.url, objects=self.objects)

    def store_args(self) -> list[str]:
        """The global options naming this store as the source."""
        return ["--store", self.url, *(["--objects", self.objects] if self.objects else [])]

    def cli_args(self) -> list[str]:
        """The migrate options naming this store as the destination."""
        return ["--to", self.url, *(["--objects", self.objects] if self.objects else [])]


def location(kind: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> Location:
    if kind == "sqlite":
        return Location(kind, str(tmp_path / f"{name}.db"))
    if kind in ("postgres", "postgres+s3"):
        # A PostgreSQL store records its object location on first open (tests/servers.py).
        return Location(kind, str(fresh_location(kind, tmp_path, request)))
    raise AssertionError(f"unknown store kind {kind!r}")


@pytest.fixture(params=STORE_KINDS)
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    return location(request.param, request, tmp_path, "dest")


@pytest.fixture(params=STORE_KINDS)
def source_location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    return location(request.param, request, tmp_path, "source")


@pytest.fixture
def source(source_location: Location) -> Iterator[Store]:
    s = source_location.open()
    build_source(s)
    yield s
    s.close()


def build_source(s: Store, sessions: int = 6, rounds: int = 4) -> None:
    """A source with every kind of version: appends, saves, rewinds, metadata updates,
    named lists, restores, forks, a suspect shrink and its recovery, a deletion, a
    session re-created under a deleted id, and gaps from GC pruning."""
    t = T0

    def at() -> float:
        nonlocal t
        t += 1.5
        return t

    for i in range(sessions):
        sid = f"chat-{i}"
        s.create(sid, {"title": f"Chat {i}", "model": "m1"}, msgs(0, 3 + i), at=at())
        for r in range(rounds):
            s.append(sid, msgs(10 * r + 3, 10 * r + 3 + 20), at=at())  # freezes pages
            s.update_metadata(sid, {"turn": r}, at=at())
        s.rewind(sid, 5, [msg(999, content="retry")], at=at())
        s.save(sid, msgs(0, 40), {"title": f"Chat {i} renamed"}, intentional_shrink=True,
               lists={"tool_calls": [{"id": n} for n in range(30)]}, at=at())
    s.restore("chat-0", 2, at=at())
    s.fork("chat-1", "chat-1-fork", at=at())
    s.append("chat-1-fork", msgs(50, 52), at=at())
    s.save("chat-2", msgs(0, 2), at=at())  # an accidental wipe: suspect shrink
    s.save("chat-3", msgs(0, 1), at=at())  # another, left pending
    s.recover("chat-2")
    s.delete("chat-4", at=at())
    s.delete("chat-5", at=at())
    s.create("chat-5", {"title": "second life"}, msgs(0, 2), at=at())
    s.create("empty", at=at())
    # GC prunes old versions of every session (keep the newest 4): seq gaps.
    gc(s, keep_last=4, deleted_retention=10 * 365 * 86400.0)


def snapshot(b: Backend) -> dict[str, object]:
    """Everything a migration must reproduce: heads and every log entry."""
    return {h.sid: (h, b.versions(h.sid, ascending=True)) for h in b.iter_heads()}


def objects_of(b: Backend) -> dict[bytes, tuple[int, float]]:
    return {i.oid: (i.size, i.wtime) for i in b.iter_objects()}


def same_content(a: Store, b: Store, step: int = 1) -> None:
    for h in a.backend.iter_heads():
        for e in a.backend.versions(h.sid)[::step]:
            x, y = a.load_version(h.sid, e.seq), b.load_version(h.sid, e.seq)
            assert (x.messages, x.metadata, x.lists) == (y.messages, y.metadata, y.lists)


def test_copies_every_version_exactly(source: Store, dest: Location) -> None:
    seen: list[tuple[str, int, int]] = []
    with dest.open() as d:
        report = migrate(source.backend, d.backend,
                         progress=lambda phase, n, total: seen.append((phase, n, total)))
        assert report.ok, report.problems
        assert snapshot(d.backend) == snapshot(source.backend)
        want = snapshot(source.backend)
        assert report.sessions == len(want) == 8
        assert report.versions == report.versions_copied == sum(len(v[1]) for v in want.values())
        assert report.versions_verified == report.versions
        assert report.objects_copied > 0 and report.objects_verified >= report.objects_copied
        # Gaps from pruning are kept as they are.
        seqs = [e.seq for e in d.backend.versions("chat-0", ascending=True)]
        assert seqs[0] > 1 and seqs == sorted(seqs)
        same_content(source, d)
        assert d.fsck().ok
        # Flags, ops and deletions survived.
        assert d.backend.head("chat-3").suspect_pending
        assert d.backend.head("chat-4").deleted
        assert d.load("chat-5").metadata == {"title": "second life"}
        assert {e.op for _, es in snapshot(d.backend).values() for e in es} >= {
            "append", "save", "rewind", "update_metadata", "restore", "fork", "recover",
            "delete", "create"}
    assert seen[-1] == ("verifying", 8, 8)
    assert ("copying", 8, 8) in seen


def test_a_second_run_changes_nothing(source: Store, dest: Location) -> None:
    with dest.open() as d:
        migrate(source.backend, d.backend)
        before, objs = snapshot(d.backend), objects_of(d.backend)
        again = migrate(source.backend, d.backend)
        assert again.ok
        assert (again.versions_copied, again.objects_copied, again.sessions_copied) == (0, 0, 0)
        assert snapshot(d.backend) == before
        assert objects_of(d.backend) == objs  # not even a write time moved


def test_an_interrupted_run_continues_where_it_stopped(source: Store, dest: Location) -> None:
    def stop_after_three(phase: str, done: int, total: int) -> None:
        if phase == "copying" and done == 3:
            raise KeyboardInterrupt

    with dest.open() as d:
        with pytest.raises(KeyboardInterrupt):
            migrate(source.backend, d.backend, progress=stop_after_three)
        partial = snapshot(d.backend)
        assert 0 < len(partial) < 8
        report = migrate(source.backend, d.backend)
        assert report.ok
        assert report.versions_copied == report.versions - sum(len(v[1]) for v in
                                                               partial.values())
        assert snapshot(d.backend) == snapshot(source.backend)
        same_content(source, d)


def test_the_source_moving_on_is_copied_by_the_next_run(source: Store, dest: Location) -> None:
    with dest.open() as d:
        migrate(source.backend, d.backend)
        source.append("chat-1", msgs(100, 103))
        source.create("late", {"title": "new"}, msgs(0, 1))
        report = migrate(source.backend, d.backend)
        assert (report.sessions_copied, report.versions_copied) == (2, 2)
        assert snapshot(d.backend) == snapshot(source.backend)


def test_a_source_written_during_the_run_is_checked_as_copied(source: Store,
                                                                dest: Location) -> None:
    def write_behind(phase: str, done: int, total: int) -> None:
        # chat-0 was copied first; it moves on before the verification pass.
        if phase == "copying" and done == total:
            source.append("chat-0", msgs(200, 201))

    with dest.open() as d:
        report = migrate(source.backend, d.backend, progress=write_behind)
        assert report.ok, report.problems
        assert report.sessions_changed == 1
        again = migrate(source.backend, d.backend)
        assert (again.versions_copied, again.sessions_changed) == (1, 0)
        assert snapshot(d.backend) == snapshot(source.backend)


def test_a_different_history_on_the_destination_is_refused(source: Store, dest: Location) -> None:
    with dest.open() as d:
        d.create("chat-1", {"title": "someone else's"}, msgs(0, 1))
        with pytest.raises(SessionExists, match="chat-1"):
            migrate(source.backend, d.backend)


def test_the_same_store_is_refused(source: Store) -> None:
    with pytest.raises(InvalidArgument, match="same store"):
        migrate(source.backend, source.backend)


def corrupt_one_chunk(path: Path) -> None:
    con = sqlite3.connect(path)
    with con:
        oid = con.execute("SELECT oid FROM objects WHERE kind = 1 LIMIT 1").fetchone()[0]
        con.execute("UPDATE objects SET data = ? WHERE oid = ?",
                    (open_store_frame(b'{"content":"forged","role":"user"}'), oid))
    con.close()


def open_store_frame(payload: bytes) -> bytes:
    from cas_store.objects import compress

    return compress(payload)


def test_a_corrupt_source_object_stops_the_copy(tmp_path: Path, dest: Location) -> None:
    src_path = tmp_path / "bad.db"
    with open_store(src_path) as s:
        s.create("a", {}, msgs(0, 3))
    corrupt_one_chunk(src_path)
    with open_store(src_path) as s, dest.open() as d:
        with pytest.raises(CorruptObject, match="corrupt in the source"):
            migrate(s.backend, d.backend)
        assert snapshot(d.backend) == {}


def test_verification_reports_a_damaged_destination(source: Store, tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    with open_store(path) as d:
        migrate(source.backend, d.backend)
    corrupt_one_chunk(path)
    with open_store(path) as d:
        report = migrate(source.backend, d.backend)
    assert not report.ok
    assert any("does not hash to its id" in p for p in report.problems)
    assert report.versions_copied == 0


# --- the command line -------------------------------------------------------------------------

runner = CliRunner()


def cli(store: Path | str, *args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["--store", str(store), *args])
    return r.exit_code, r.stdout, r.stderr


def test_cli_migrate_copies_and_reports(source: Store, source_location: Location,
                                        dest: Location) -> None:
    args = source_location.store_args()
    r = runner.invoke(app, [*args, "migrate", *dest.cli_args()])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "copied" in r.stdout and r.stdout.rstrip().endswith("ok")
    r = runner.invoke(app, [*args, "migrate", *dest.cli_args(), "--json"])
    assert r.exit_code == 0
    report = json.loads(r.stdout)
    assert report["ok"] and report["versions_copied"] == 0
    assert report["versions_verified"] == report["versions"]
    with dest.open() as d:
        assert snapshot(d.backend) == snapshot(source.backend)


def test_cli_migrate_errors_are_one_line(source: Store, source_location: Location,
                                         tmp_path: Path) -> None:
    src = source_location.url
    code, _, err = cli(tmp_path / "missing.db", "migrate", "--to", str(tmp_path / "x.db"))
    assert code == 3 and "no store" in err
    code, _, err = cli(src, "migrate", "--to", str(tmp_path / "x.db"),
                       "--objects", "s3://bucket/prefix")
    assert code == 5 and "postgresql://" in err and "Traceback" not in err
    with open_store(tmp_path / "other.db") as o:
        o.create("chat-1", {}, msgs(0, 1))
    code, _, err = cli(src, "migrate", "--to", str(tmp_path / "other.db"))
    assert code == 4 and "different history" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def versions_in(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT count(*) FROM versions").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    """A real process killed with SIGKILL while it copies; the next run finishes the job."""
    src_path, dst_path = tmp_path / "big.db", tmp_path / "copy.db"
    with open_store(src_path, synchronous="NORMAL") as s, s.batch():
        for i in range(40):
            sid = f"s{i:02d}"
            s.create(sid, {"title": sid}, msgs(0, 2), at=T0 + i)
            for k in range(60):
                s.append(sid, [msg(k, content=f"{sid} message {k} " + "x" * 200)],
                         at=T0 + i + k / 100)
    total = 40 * 61
    cmd = [sys.executable, "-m", "cas_store.cli", "--store", str(src_path), "migrate",
           "--to", str(dst_path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        copied = 0
        while time.monotonic() < deadline and proc.poll() is None:
            copied = versions_in(dst_path) if dst_path.exists() else 0
            if copied > 0:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the migration finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    partial = versions_in(dst_path)
    assert 0 < partial < total
    with open_store(dst_path) as d:
        assert d.fsck().ok  # consistent after the kill: whole versions only
    code, out, err = cli(src_path, "migrate", "--to", str(dst_path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["versions_copied"] == total - partial
    with open_store(src_path) as s, open_store(dst_path) as d:
        assert snapshot(d.backend) == snapshot(s.backend)
        same_content(s, d, step=7)
