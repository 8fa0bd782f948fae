"""The README's integration examples run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_integration_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"),
                                    re.S) if "cas_store.integrations" in b]
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), scope)
    got: dict[str, Any] = scope
    assert len(got["history"]) == 3
    assert got["app"].get_state(got["cfg"]).values["messages"][-1].content == "hello"
    assert [v.op for v in got["session"].versions()] == ["rewind", "create"]
    assert [v.op for v in got["other"].versions()] == ["update_metadata", "fork"]
    got["store"].close()
