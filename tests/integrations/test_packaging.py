"""The engine imports no framework; each integration imports only its own."""

from __future__ import annotations

import subprocess
import sys


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_the_engine_imports_no_framework() -> None:
    mods = imported_after("import cas_store, cas_store.cli, cas_store.api, cas_store.integrations")
    assert not mods & {"langgraph", "langchain_core", "agents", "openai"}


def test_each_integration_imports_only_its_framework() -> None:
    assert "agents" not in imported_after("import cas_store.integrations.langgraph")
    assert "langgraph" not in imported_after("import cas_store.integrations.openai_agents")
