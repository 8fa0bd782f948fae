"""Recovery beside live writers: its commit is a compare-and-swap on the head it planned from.

Recovery reads the versions, plans the recovered list, then commits. A writer that commits
in between must make that commit fail and the plan be made again: committing the old plan
over the new head would silently drop what the writer appended. Each test here fails if
``Store._commit_recovery`` commits with ``expected=ANY`` instead of the planned head.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import msg, msgs

from cas_store import SessionNotFound, Store, open_store, recovery

Writer = Callable[[Store], None]


def _between_plan_and_commit(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None],
                             times: int = 1) -> list[recovery.Plan | None]:
    """Run action right after recovery's first `times` plans; return every plan made."""
    real = recovery.plan
    plans: list[recovery.Plan | None] = []

    def plan(*args: Any, **kwargs: Any) -> recovery.Plan | None:
        p = real(*args, **kwargs)
        plans.append(p)
        if len(plans) <= times:
            action()
        return p

    monkeypatch.setattr(recovery, "plan", plan)
    return plans


@pytest.mark.parametrize(("write", "want"), [
    # An append is kept after everything recovery brings back.
    (lambda s: s.append("s", [msg(101)]), [*msgs(0, 10), msg(100), msg(101)]),
    # A second wipe changes nothing of what recovery owes the session.
    (lambda s: s.save("s", []), [*msgs(0, 10), msg(100)]),
    # A deliberate edit of the post-wipe part is kept as it is, never undone.
    (lambda s: s.rewind("s", 0, [msg(200)]), [*msgs(0, 10), msg(200)]),
])
def test_a_write_between_plan_and_commit_makes_recovery_plan_again(
        store_path: Path, monkeypatch: pytest.MonkeyPatch, write: Writer,
        want: list[Any]) -> None:
    store, other = open_store(store_path), open_store(store_path)
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])  # the accident
    store.append("s", [msg(100)])
    plans = _between_plan_and_commit(monkeypatch, lambda: write(other))
    report = store.recover()
    assert len(plans) == 2, "the lost compare-and-swap must make recovery plan again"
    assert [a.action for a in report.actions] == ["recovered"]
    assert store.load("s").messages == want
    assert report.actions[0].to_count == len(want)
    assert store.versions("s")[0].op == "recover"
    assert store.list_sessions().sessions[0].suspect_shrink is False
    other.close()
    store.close()


def test_recovery_gives_up_cleanly_when_the_session_never_stops_moving(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, other = open_store(store_path), open_store(store_path)
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])
    counter = iter(range(1000, 2000))
    plans = _between_plan_and_commit(
        monkeypatch, lambda: other.append("s", [msg(next(counter))]), times=10**6)
    report = store.recover()
    assert [(a.action, a.reason) for a in report.actions] == [
        ("skipped", "session kept changing")]
    assert len(plans) == 5
    # Nothing was committed by recovery: every append is there, the shrink still pending.
    assert store.load("s").messages == [msg(i) for i in range(1000, 1005)]
    assert store.versions("s")[0].op == "append"
    monkeypatch.undo()
    store.recover()
    assert store.load("s").messages == [*msgs(0, 10), *(msg(i) for i in range(1000, 1005))]
    other.close()
    store.close()


# --- live writers --------------------------------------------------------------------------

SIDS = ["r0", "r1", "r2"]
BASE = 20


def _seed(path: Path) -> None:
    with open_store(path) as s:
        for sid in SIDS:
            s.create(sid, {}, [{"sid": sid, "base": i} for i in range(BASE)])


def _slow_plans(monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
    """Widen the window between plan and commit of every other plan, so writers land in it
    often while the plans between still get through."""
    real = recovery.plan
    calls = [0]

    def plan(*args: Any, **kwargs: Any) -> recovery.Plan | None:
        p = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] % 2:
            time.sleep(delay)
        return p

    monkeypatch.setattr(recovery, "plan", plan)


def _wipe_and_recover_until(store: Store, done: Callable[[], bool]) -> int:
    """Wipe (metadata-only style and partial cuts) and recover until done; return recoveries."""
    recovered = 0
    i = 0
    while not done():
        sid = SIDS[i % len(SIDS)]
        head = store.load_meta(sid).message_count
        store.save(sid, [] if i % 2 else store.messages(sid, 0, head // 3))
        recovered += len(store.recover(sid).recovered)
        i += 1
    return recovered


def _check_nothing_lost(store: Store, appended: dict[str, list[Any]]) -> None:
    """Every session holds its base, then every appended message once, each writer's in order."""
    for sid in SIDS:
        got = store.load(sid).messages
        assert got[:BASE] == [{"sid": sid, "base": i} for i in range(BASE)]
        tail = got[BASE:]
        want = appended.get(sid, [])
        def key(m: Any) -> tuple[int, int]:
            return m["w"], m["i"]

        assert sorted(map(key, tail)) == sorted(map(key, want)), f"{sid}: appends lost"
        for w in {m["w"] for m in want}:
            assert [m["i"] for m in tail if m["w"] == w] == [
                m["i"] for m in want if m["w"] == w]


@pytest.mark.slow  # seconds, not minutes; left out of the per-mutant runs (tests/MUTATION.md)
def test_recovery_beside_appending_threads_loses_nothing(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(store_path)
    _slow_plans(monkeypatch, 0.01)
    appended: dict[str, list[Any]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        with open_store(store_path) as s:
            for i in range(60):
                sid = SIDS[(i + w) % len(SIDS)]
                m = {"w": w, "i": i}
                s.append(sid, [m])
                with lock:
                    appended.setdefault(sid, []).append(m)
                time.sleep(0.002)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    with open_store(store_path) as store:
        recovered = _wipe_and_recover_until(
            store, lambda: not any(t.is_alive() for t in threads))
        for t in threads:
            t.join()
        stop.set()
        store.recover()
        assert recovered >= 3
        _check_nothing_lost(store, appended)
        assert store.fsck().ok


_WRITER = """
import json, sys, time
from cas_store import open_store
path, w, n, sids = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
out = []
with open_store(path) as s:
    for i in range(n):
        sid = sids[(i + w) % len(sids)]
        s.append(sid, [{"w": w, "i": i}])
        out.append([sid, i])
        time.sleep(0.002)
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_STORE")}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _start_writers(path: Path, count: int, n: int) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(w), str(n),
                              ",".join(SIDS)], stdout=subprocess.PIPE, text=True, env=_env())
            for w in range(count)]


def _collect(procs: list[subprocess.Popen[str]]) -> dict[str, list[Any]]:
    import json

    appended: dict[str, list[Any]] = {}
    for w, p in enumerate(procs):
        stdout, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        for sid, i in json.loads(stdout):
            appended.setdefault(sid, []).append({"w": w, "i": i})
    return appended


@pytest.mark.slow
def test_recovery_beside_appending_processes_loses_nothing(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(store_path)
    _slow_plans(monkeypatch, 0.01)
    procs = _start_writers(store_path, 2, 80)
    try:
        with open_store(store_path) as store:
            recovered = _wipe_and_recover_until(
                store, lambda: all(p.poll() is not None for p in procs))
            appended = _collect(procs)
            store.recover()
            assert recovered >= 3
            _check_nothing_lost(store, appended)
            assert store.fsck().ok
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


# --- start-up recovery on a busy server ------------------------------------------------------

# `cas-store serve` itself, with the window between recovery's first plan of each session
# and its commit widened so the writers below land in it for certain.
_SERVE = """
import sys, time
from cas_store import recovery
real = recovery.plan
seen = set()
def plan(entries, *a, **k):
    p = real(entries, *a, **k)
    if entries and entries[0].sid not in seen:
        seen.add(entries[0].sid)
        time.sleep(0.1)
    return p
recovery.plan = plan
from cas_store.cli import main
sys.argv[0] = "cas-store"
main()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def wiped_store(store_path: Path) -> Path:
    _seed(store_path)
    with open_store(store_path) as s:
        for sid in SIDS:
            s.save(sid, [])  # the accident, before the server starts
    return store_path


@pytest.fixture
def serve(wiped_store: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, "--store", str(wiped_store), "serve",
             "--port", str(port)], stdout=f, stderr=subprocess.STDOUT, env=_env())
    try:
        yield proc, f"http://127.0.0.1:{port}", log
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_start_up_recovery_on_a_busy_server_loses_no_append(
        wiped_store: Path, serve: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    proc, url, log = serve
    appended: dict[str, list[Any]] = {}
    ready = threading.Event()
    problems: list[str] = []

    def direct_writer() -> None:
        # A client of the same store file appending while the server starts and recovers.
        with open_store(wiped_store) as s:
            i = 0
            while not ready.is_set() and i < 2000:
                sid = SIDS[i % len(SIDS)]
                s.append(sid, [{"w": 0, "i": i}])
                appended.setdefault(sid, []).append({"w": 0, "i": i})
                i += 1
                time.sleep(0.005)

    t = threading.Thread(target=direct_writer)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError(f"server did not start: {log.read_text()}")
    finally:
        ready.set()
        t.join()
    # Then clients append over HTTP.
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(30):
            sid = SIDS[i % len(SIDS)]
            r = c.post(f"/api/sessions/{sid}/messages", json={"messages": [{"w": 1, "i": i}]})
            if r.status_code != 200:
                problems.append(f"{r.status_code} {r.text}")
            appended.setdefault(sid, []).append({"w": 1, "i": i})
    assert problems == []
    text = log.read_text()
    assert text.count("recovery: r") == len(SIDS) and "restored" in text, text
    # No recover call here: start-up recovery alone must have kept every append.
    with open_store(wiped_store) as store:
        _check_nothing_lost(store, appended)
        assert not any(s.suspect_shrink for s in store.list_sessions().sessions)


def test_recovery_refuses_to_commit_from_versions_pruned_meanwhile(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cas_store import VersionNotFound

    store, other = open_store(store_path), open_store(store_path)
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])
    # GC (or anything) prunes the larger version between recovery's plan and its commit:
    # the commit must not name objects no version holds any more.
    _between_plan_and_commit(monkeypatch, lambda: other.backend.prune_versions("s", [1]))
    with pytest.raises(VersionNotFound):
        store.recover()
    assert [v.seq for v in store.versions("s")] == [2]
    other.close()
    store.close()


def test_recovery_actions_report_every_field(store_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from cas_store.model import RecoveryAction

    store, other = open_store(store_path), open_store(store_path)
    store.create("s", {}, msgs(0, 10))
    store.save("s", [])
    store.append("s", [msg(100)])
    assert store.recover(dry_run=True).actions == [
        RecoveryAction("s", "would_recover", 2, 1, 11)]
    assert store.recover().actions == [RecoveryAction("s", "recovered", 2, 1, 11, new_seq=4)]
    store.save("s", [*msgs(0, 3), msg(99)])  # rewrites: skipped with its reason
    [skipped] = store.recover().actions
    assert (skipped.session_id, skipped.action, skipped.shrink_seq, skipped.from_count,
            skipped.to_count, skipped.new_seq) == ("s", "skipped", 5, 4, 4, None)
    with pytest.raises(SessionNotFound) as exc:
        store.recover("nope")
    assert exc.value.details == {"session_id": "nope"} and "'nope'" in str(exc.value)
    store.create("t", {}, msgs(0, 3))
    store.save("t", [])
    counter = iter(range(1000, 2000))
    _between_plan_and_commit(
        monkeypatch, lambda: other.append("t", [msg(next(counter))]), times=10**6)
    assert store.recover("t").actions == [
        RecoveryAction("t", "skipped", 0, 0, 0, reason="session kept changing")]
    other.close()
    store.close()


def test_recovery_over_a_long_log_and_a_damaged_session(store_path: Path) -> None:
    import sqlite3

    from cas_store import ObjectNotFound

    store = open_store(store_path)
    store.create("long", {}, [])
    for i in range(210):  # more versions than one page of the log
        store.append("long", [msg(i)])
    store.save("long", [])
    assert [a.to_count for a in store.recover("long").recovered] == [210]
    store.create("d", {}, msgs(0, 3))
    man = bytes.fromhex(store.load_meta("d").manifest)
    store.save("d", [])
    store.close()
    with sqlite3.connect(store_path) as con:
        con.execute("DELETE FROM objects WHERE oid = ?", (man,))
    with open_store(store_path) as s, pytest.raises(ObjectNotFound) as exc:
        s.recover("d")
    assert exc.value.details["session_id"] == "d"
