"""LangGraph's own conformance suite, every capability, against CasSaver on a real store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from cas_store import open_store
from cas_store.integrations.langgraph import CasSaver


def test_conformance_all_capabilities(tmp_path: Path) -> None:
    stores = []

    @checkpointer_test(name="CasSaver")
    async def cas_saver():  # type: ignore[no-untyped-def]
        store = open_store(tmp_path / f"lg{len(stores)}.db")
        stores.append(store)
        yield CasSaver(store)
        store.close()

    report = asyncio.run(validate(cas_saver, progress=ProgressCallbacks.verbose()))
    detected = {name for name, r in report.results.items() if r.detected}
    assert detected == {c.value for c in ALL_CAPABILITIES}
    failures = {name: r.failures for name, r in report.results.items() if not r.passed}
    assert report.passed_all(), failures
