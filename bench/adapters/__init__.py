"""One adapter per store: the same small surface over each store's own public API."""

from __future__ import annotations

from .base import Adapter


def all_adapters() -> list[type[Adapter]]:
    """Return the adapter classes in table order (imports the baselines lazily)."""
    from .cas import CasStoreAdapter
    from .jsonfile import JsonFileAdapter
    from .langgraph_sqlite import LangGraphAdapter
    from .openai_session import OpenAISessionAdapter
    from .raw_append import RawAppendAdapter

    return [CasStoreAdapter, RawAppendAdapter, OpenAISessionAdapter, JsonFileAdapter,
            LangGraphAdapter]


__all__ = ["Adapter", "all_adapters"]
