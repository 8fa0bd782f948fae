"""The limits `cas-store serve` runs with: defaults, the connection cap, accept errors."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path

import pytest

from cas_store.api.server import (
    FD_RESERVE,
    RateLimitedLog,
    accept_error_handler,
    connection_cap,
    default_backlog,
)
from cas_store.api.settings import Settings


def test_defaults_bound_every_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CAS_STORE_HEADER_TIMEOUT", "CAS_STORE_BODY_TIMEOUT",
                "CAS_STORE_KEEP_ALIVE_TIMEOUT", "CAS_STORE_MAX_MESSAGES"):
        monkeypatch.delenv(key, raising=False)
    s = Settings()
    assert 0 < s.header_timeout <= 10
    assert 0 < s.body_timeout <= 60 and 0 < s.keep_alive_timeout <= 30
    assert s.max_messages == 100_000 and s.allowed_hosts == []


@pytest.mark.parametrize("fd_limit", [256, 1024, 20_000, 1 << 20])
def test_connection_cap_stays_below_the_open_file_limit(fd_limit: int) -> None:
    backlog = default_backlog(fd_limit)
    cap = connection_cap(fd_limit, backlog, None)
    # One accept batch (the backlog) on top of the cap, plus the reserve, still fits.
    assert cap + backlog + FD_RESERVE <= max(fd_limit, 16 + backlog + FD_RESERVE)
    assert connection_cap(fd_limit, backlog, 100) == min(100, cap)
    assert connection_cap(fd_limit, backlog, 10**9) == cap  # never above what fits


def test_failed_accepts_are_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        handler = accept_error_handler(RateLimitedLog(interval=60))
        caplog.set_level(logging.WARNING)
        for _ in range(5000):
            handler(loop, {"message": "socket.accept() out of system resource",
                           "exception": OSError(errno.EMFILE, "Too many open files")})
        lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None
        assert "Too many open files" in lines[0].getMessage()
        caplog.clear()
        handler(loop, {"message": "something else", "exception": ValueError("x")})
        assert any("something else" in r.getMessage() for r in caplog.records)
    finally:
        loop.close()


def test_rate_limited_log_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimitedLog(interval=0)
    caplog.set_level(logging.WARNING)
    assert limiter.warn("x %d", 1)
    limiter.interval = 3600
    assert not limiter.warn("x %d", 2) and not limiter.warn("x %d", 3)
    limiter.interval = 0
    assert limiter.warn("x %d", 4)
    assert "(2 more since the last such line)" in caplog.records[-1].getMessage()


def test_the_load_cache_is_sized_by_its_setting(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from cas_store.api import create_app

    monkeypatch.delenv("CAS_STORE_LOAD_CACHE_MB", raising=False)
    assert Settings().load_cache_mb == 32
    monkeypatch.setenv("CAS_STORE_LOAD_CACHE_MB", "0")
    for mb in (None, 5):
        given = {} if mb is None else {"load_cache_mb": mb}
        app = create_app(Settings(store=str(tmp_path / f"s{mb}.db"), **given),
                         static_dir=None)
        try:
            assert app.state.store._loaded.budget == (0 if mb is None else 5 << 20)
        finally:
            app.state.store.close()
    with pytest.raises(ValueError):
        Settings(load_cache_mb=-1)
