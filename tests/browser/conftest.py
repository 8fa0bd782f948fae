"""Fixtures for the page tests: a seeded store, a served API, chromium, checked pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import history_seed
import pytest
from browser_harness import CHROMIUM_ARGS, WIDE, OpenPage, Recorder, Server, chromium_path
from playwright.sync_api import Browser, Page, Playwright, sync_playwright


# Module scope, not session: the sync API keeps an event loop running in the main thread
# while it is open, and later tests in the same worker call asyncio.run().
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture
def seeded_store(tmp_path: Path) -> Path:
    path = tmp_path / "sessions.db"
    history_seed.seed(path)
    return path


@pytest.fixture
def server(seeded_store: Path) -> Iterator[Server]:
    srv = Server(seeded_store).start()
    yield srv
    srv.stop()


@pytest.fixture
def token_server(seeded_store: Path) -> Iterator[Server]:
    srv = Server(seeded_store, token="s3cret-token").start()
    yield srv
    srv.stop()




@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """Open a page in a fresh context; each page's requests are checked at teardown."""
    opened: list[tuple[Any, Recorder, str]] = []

    def make(server: Server, viewport: dict[str, int] = WIDE,
             path: str = "/") -> tuple[Page, Recorder]:
        ctx = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        ctx.set_default_timeout(10_000)
        rec = Recorder()
        ctx.on("request", lambda req: rec.requests.append(req.url))
        page = ctx.new_page()
        page.on("pageerror", lambda exc: rec.errors.append(str(exc)))
        opened.append((ctx, rec, server.base))
        page.goto(server.base + path)
        return page, rec

    yield make
    try:
        for _ctx, rec, base in opened:
            rec.assert_only(base)
    finally:
        for ctx, _rec, _base in opened:
            ctx.close()
