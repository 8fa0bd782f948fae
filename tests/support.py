"""Small helpers shared by the tests."""

from __future__ import annotations


def msg(i: int, role: str | None = None, **extra: object) -> dict[str, object]:
    """A small chat message, distinct per i."""
    return {"role": role or ("user" if i % 2 == 0 else "assistant"), "content": f"message {i}",
            **extra}


def msgs(start: int, stop: int) -> list[dict[str, object]]:
    return [msg(i) for i in range(start, stop)]
