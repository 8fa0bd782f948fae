"""Property-based run of the app against its own OpenAPI document (schemathesis).

Every operation gets a bounded number of generated requests, valid and invalid; none
may get a 5xx, invalid ones must be refused with a 4xx, and every response must match the
documented status codes, content types, headers (Allow on 405) and schemas.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from api_helpers import make_app
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance

from cas_store import open_store


def _openapi() -> dict[str, Any]:
    # The document does not depend on the store's content; build it once from a
    # throwaway app. (schemathesis' lazy fixture loader does not run on this pytest.)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "spec.db")
        try:
            return make_app(store).openapi()
        finally:
            store.close()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture
def fuzz_app(tmp_path: Path) -> Iterator[FastAPI]:
    store = open_store(tmp_path / "fuzz.db", synchronous="NORMAL")
    # A session named like the schema's examples, with some history, so that generated
    # requests also reach the engine's paths for existing sessions and versions.
    store.create("chat-1", {"title": "Trip to Rome"},
                 [{"role": "user", "content": f"m{i}"} for i in range(5)])
    store.append("chat-1", [{"role": "assistant", "content": "ok"}])
    store.update_metadata("chat-1", {"active_stream_id": None})
    yield make_app(store)
    store.close()


# One test per operation, named by it ("POST /api/sessions"), so a failing case can be
# rerun alone with -k; schemathesis' own parametrize gives every case the same id.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
@given(data=st.data())
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_server_error_and_responses_match_schema(operation: Any, data: st.DataObject,
                                                    fuzz_app: FastAPI) -> None:
    case = data.draw(operation.as_strategy())
    # Every other check runs. positive_data_acceptance is left out on purpose: requests
    # that fit the schema can still be refused by meaning (a stale If-Match is 412, a
    # made-up cursor or keep beyond the end is 422), and the schema cannot say so.
    case.call_and_validate(app=fuzz_app, excluded_checks=[positive_data_acceptance])


def test_every_operation_has_its_own_test_id() -> None:
    labels = [op.label for op in OPERATIONS]
    assert len(labels) == len(set(labels)) >= 17
