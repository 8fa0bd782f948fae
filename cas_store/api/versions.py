"""Routes of a session's history: the version log, old states, diffs, restore and fork."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from .bodies import JsonRoute
from .deps import IfMatchHeader, SeqPath, SidPath, StoreDep, expected_for, head_seq, set_etag
from .responses import FORK, READ, SHOW, WRITE
from .schemas import (
    MAX_SEQ,
    DiffPublic,
    Fork,
    Restore,
    SessionMetaPublic,
    SessionPublic,
    VersionPage,
    VersionPublic,
)
from .sessions import location

router = APIRouter(prefix="/sessions", route_class=JsonRoute, tags=["versions"])

@router.get("/{sid}/versions", response_model=VersionPage, responses=READ)
def list_versions(
    sid: SidPath,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQ,
                                        description="Only versions older than this seq.")]
    = None,
) -> dict[str, Any]:
    """Return the version log newest first (also of a deleted session), a page at a time."""
    found = store.versions(sid, limit=limit + 1, before=before)
    page = found[:limit]
    more = len(found) > limit
    return {"session_id": sid, "versions": [v.to_json() for v in page],
            "next_before": page[-1].seq if more else None}


@router.get("/{sid}/versions/{seq}", response_model=SessionPublic | SessionMetaPublic,
            responses=SHOW)
def get_version(
    sid: SidPath,
    seq: SeqPath,
    store: StoreDep,
    response: Response,
    meta: Annotated[bool, Query(description="Leave the messages out.")] = False,
) -> dict[str, Any]:
    """Return the session as of version seq (with ?meta=true, without its messages)."""
    if meta:
        shown = store.load_meta(sid, seq=seq)
        set_etag(response, shown.seq)
        return shown.to_json()
    session = store.load(sid, seq=seq)
    set_etag(response, session.seq)
    return session.to_json()


@router.get("/{sid}/diff", response_model=DiffPublic, responses=READ)
def diff_versions(
    sid: SidPath,
    store: StoreDep,
    from_seq: Annotated[int | None, Query(alias="from", ge=1, le=MAX_SEQ,
                                          description="Older version (default: to - 1).")]
    = None,
    to_seq: Annotated[int | None, Query(alias="to", ge=1, le=MAX_SEQ,
                                        description="Newer version (default: the head).")]
    = None,
) -> dict[str, Any]:
    """Return common prefix length, messages removed and added, and metadata changes."""
    to = to_seq if to_seq is not None else head_seq(store, sid)
    frm = from_seq if from_seq is not None else max(to - 1, 1)
    return store.diff(sid, frm, to).to_json()


@router.post("/{sid}/restore", response_model=VersionPublic, responses=WRITE)
def restore_version(sid: SidPath, body: Restore, store: StoreDep, response: Response,
                    if_match: IfMatchHeader = None) -> dict[str, Any]:
    """Make version seq the head again as a new version (op restore); undeletes too."""
    version = store.restore(sid, body.seq, expected=expected_for(store, sid, if_match))
    set_etag(response, version.seq)
    return version.to_json()


@router.post("/{sid}/fork", status_code=201, response_model=VersionPublic, responses=FORK)
def fork_session(sid: SidPath, body: Fork, store: StoreDep,
                 response: Response) -> dict[str, Any]:
    """Create a new session from the head (or version seq), sharing every stored object."""
    version = store.fork(sid, body.session_id, seq=body.seq)
    set_etag(response, version.seq)
    response.headers["Location"] = location(version.session_id)
    return version.to_json()
