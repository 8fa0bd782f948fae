"""Routes of a session's current state: create, list, read, append, replace, rewind, patch.

Each route calls one engine method; engine errors propagate to the one handler in
errors.py. Every response that shows or writes a session carries ``ETag: "<seq>"``.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from .bodies import JsonRoute
from .deps import IfMatchHeader, SidPath, StoreDep, expected_for, set_etag
from .responses import COMMON, CREATE, DELETE, SHOW, WRITE
from .schemas import (
    MAX_SEQ,
    MessagesAppend,
    MessagesPage,
    Rewind,
    SessionCreate,
    SessionMetaPublic,
    SessionPage,
    SessionPublic,
    SessionReplace,
    VersionPublic,
)

router = APIRouter(prefix="/sessions", route_class=JsonRoute, tags=["sessions"])

MERGE_PATCH = "application/merge-patch+json"
_PATCH_SCHEMA = {"type": "object", "additionalProperties": True,
                 "description": "RFC 7396 merge patch of the metadata: null removes a key."}


def location(sid: str) -> str:
    """Return the URL path of a session."""
    return f"/api/sessions/{sid}"


@router.post("", status_code=201, response_model=VersionPublic, responses=CREATE)
def create_session(body: SessionCreate, store: StoreDep, response: Response) -> dict[str, Any]:
    """Create a session (id generated when absent); 409 if a live session has that id."""
    sid = body.session_id or uuid.uuid4().hex
    version = store.create(sid, body.metadata, body.messages)
    set_etag(response, version.seq)
    response.headers["Location"] = location(sid)
    return version.to_json()


@router.get("", response_model=SessionPage, responses=COMMON)
def list_sessions(
    request: Request,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 50,
    cursor: Annotated[str | None, Query(max_length=512,
                                        description="next_cursor of the previous page.")] = None,
    q: Annotated[str | None, Query(max_length=300,
                                   description="Only sessions whose title (or id) contains this.")]
    = None,
    include_deleted: Annotated[bool, Query(description="Also list deleted sessions.")] = False,
    pinned_first: Annotated[bool, Query(description="Sessions whose pinned is true first.")]
    = False,
) -> dict[str, Any]:
    """List sessions, newest update first, a page at a time; reads no message or manifest.

    Any summary key (pinned, archived, project_id, ...) given as a parameter filters the
    list: ``?archived=false&project_id=p1`` (the value is read as JSON when it parses:
    true, false, null, numbers; otherwise as text).
    """
    where = {key: _filter_value(value) for key, value in request.query_params.items()
             if key in store.limits.summary_keys}
    page = store.list_sessions(limit=limit, cursor=cursor or None, query=q,
                               include_deleted=include_deleted, where=where,
                               pinned_first=pinned_first)
    return {"sessions": [s.to_json() for s in page.sessions], "next_cursor": page.next_cursor}


def _filter_value(text: str) -> Any:
    """Return a filter parameter's value: JSON true/false/null/number, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if value is None or isinstance(value, bool | int | float) else text


@router.get("/{sid}", response_model=SessionPublic, responses=SHOW)
def get_session(sid: SidPath, store: StoreDep, response: Response) -> dict[str, Any]:
    """Return the whole session at its head: metadata and every message."""
    session = store.load(sid)
    set_etag(response, session.seq)
    return session.to_json()


@router.get("/{sid}/meta", response_model=SessionMetaPublic, responses=SHOW)
def get_session_meta(sid: SidPath, store: StoreDep, response: Response) -> dict[str, Any]:
    """Return the session without its messages; reads no message chunk."""
    meta = store.load_meta(sid)
    set_etag(response, meta.seq)
    return meta.to_json()


@router.get("/{sid}/messages", response_model=MessagesPage, responses=SHOW)
def get_messages(
    sid: SidPath,
    store: StoreDep,
    response: Response,
    offset: Annotated[int, Query(ge=-MAX_SEQ, le=MAX_SEQ,
                                 description="First message; negative counts from the end.")]
    = 0,
    limit: Annotated[int | None, Query(ge=0, le=100_000,
                                       description="At most this many (default: to the end).")]
    = None,
) -> dict[str, Any]:
    """Return a slice of the head's messages, reading only the pages that hold them."""
    meta = store.load_meta(sid)
    # Read the slice of exactly the version whose seq goes in the ETag, even if the head
    # moves in between.
    messages = store.messages(sid, offset, limit, seq=meta.seq)
    start = max(meta.message_count + offset, 0) if offset < 0 else min(offset, meta.message_count)
    set_etag(response, meta.seq)
    return {"session_id": sid, "seq": meta.seq, "message_count": meta.message_count,
            "offset": start, "messages": messages}


@router.post("/{sid}/messages", response_model=VersionPublic, responses=WRITE)
def append_messages(sid: SidPath, body: MessagesAppend, store: StoreDep, response: Response,
                    if_match: IfMatchHeader = None) -> dict[str, Any]:
    """Append messages atomically (to the current head unless If-Match names a version)."""
    version = store.append(sid, body.messages, expected=expected_for(store, sid, if_match))
    set_etag(response, version.seq)
    return version.to_json()


@router.put("/{sid}", response_model=VersionPublic, responses=WRITE)
def replace_session(sid: SidPath, body: SessionReplace, store: StoreDep, response: Response,
                    if_match: IfMatchHeader = None) -> dict[str, Any]:
    """Replace metadata and messages; a shrink is flagged suspect unless intentional_shrink."""
    version = store.save(sid, body.messages, body.metadata,
                         expected=expected_for(store, sid, if_match),
                         intentional_shrink=body.intentional_shrink)
    set_etag(response, version.seq)
    return version.to_json()


@router.post("/{sid}/rewind", response_model=VersionPublic, responses=WRITE)
def rewind_session(sid: SidPath, body: Rewind, store: StoreDep, response: Response,
                   if_match: IfMatchHeader = None) -> dict[str, Any]:
    """Keep the first ``keep`` messages and append the given ones, as an intentional change."""
    version = store.rewind(sid, body.keep, body.messages,
                           expected=expected_for(store, sid, if_match))
    set_etag(response, version.seq)
    return version.to_json()


@router.patch(
    "/{sid}", response_model=VersionPublic, responses=WRITE,
    openapi_extra={"requestBody": {"content": {MERGE_PATCH: {"schema": _PATCH_SCHEMA}}}},
)
def patch_metadata(
    sid: SidPath,
    patch: Annotated[dict[str, Any], Body(description=_PATCH_SCHEMA["description"])],
    store: StoreDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> dict[str, Any]:
    """Merge-patch the metadata (JSON or merge-patch+json); messages are never touched."""
    version = store.update_metadata(sid, patch, expected=expected_for(store, sid, if_match))
    set_etag(response, version.seq)
    return version.to_json()


@router.delete("/{sid}", status_code=204, response_class=Response, responses=DELETE)
def delete_session(sid: SidPath, store: StoreDep,
                   if_match: IfMatchHeader = None) -> Response:
    """Delete a session: it leaves the list and GET, its versions stay (restore undoes it)."""
    version = store.delete(sid, expected=expected_for(store, sid, if_match))
    response = Response(status_code=204)
    set_etag(response, version.seq)
    return response
