"""The backends the contract suite runs on: add one line to BACKEND_KINDS for a new one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import fresh_location

from cas_store.backends import Backend, open_backend

#: The backends every contract test runs on; a new backend is one more name here and
#: one more branch in ``fresh_location`` (tests/conftest.py).
BACKEND_KINDS = ["sqlite", "postgres", "postgres+s3"]


@pytest.fixture(params=BACKEND_KINDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return where a fresh, empty store of this kind lives (a file path or a URL)."""
    return str(fresh_location(request.param, tmp_path, request))


@pytest.fixture
def opener(location: str) -> Iterator[Callable[[], Backend]]:
    """Return a function opening another backend on the same store (closed at the end)."""
    opened: list[Backend] = []

    def open_one() -> Backend:
        opened.append(open_backend(location))
        return opened[-1]

    yield open_one
    for b in opened:
        b.close()


@pytest.fixture
def backend(opener: Callable[[], Backend]) -> Backend:
    return opener()
