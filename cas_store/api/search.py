"""Full-text search over every session's messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ..search import MAX_LIMIT, MAX_QUERY_CHARS
from .deps import StoreDep
from .responses import COMMON

router = APIRouter(tags=["search"])


class SearchHitPublic(BaseModel):
    """One matching message."""

    session_id: str
    index: int = Field(description="The message's position in the session (0 = first).")
    seq: int = Field(description="The version the hit is from (the head, by default).")
    role: str
    snippet: str = Field(description="The text around the match, HTML-escaped, each matched"
                         " word in <mark>...</mark>.")
    rank: float = Field(description="bm25 score: lower is a better match.")


class SearchPagePublic(BaseModel):
    """A page of hits, best first."""

    hits: list[SearchHitPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


@router.get("/search", response_model=SearchPagePublic, responses=COMMON)
def search(
    store: StoreDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS,
                            description='Words (all must match), "a phrase", prefix*.')],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = 20,
    cursor: Annotated[str | None, Query(max_length=64, description="From next_cursor.")]
    = None,
    versions: Annotated[Literal["head", "all"],
                        Query(description="head: each session's current messages; all:"
                              " every kept version's.")] = "head",
) -> dict[str, Any]:
    """Return messages matching q, best first; each hit names session, index, seq, role."""
    return store.search(q, limit=limit, cursor=cursor, versions=versions).to_json()
