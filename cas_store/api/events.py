"""The change feed over HTTP: Server-Sent Events, one per pointer move, resumable.

Each event's ``id`` is the move's store-wide cursor, so a browser's EventSource that
reconnects (it sends ``Last-Event-ID`` by itself) receives exactly the moves it missed,
read from the version log, then the live ones. The first event of every stream is
``event: ready`` naming the cursor it starts after; a comment every ``HEARTBEAT`` seconds
keeps proxies from closing an idle stream. The routes sit behind the same dependencies
(token) and middleware as every other /api route.

The streams are left out of /openapi.json: OpenAPI cannot describe an endless
``text/event-stream``, and a generated client could not use one; docs/api.md does.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..errors import InvalidArgument
from ..feed import Change
from ..store import Store
from .deps import SidPath, StoreDep, head_seq

router = APIRouter(tags=["events"])

#: Seconds between heartbeat comments (``app.state.events_heartbeat`` overrides it).
HEARTBEAT = 15.0
MAX_CURSOR = 2**62

LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", max_length=32,
           description="The id of the last event received: resume right after it."),
]
AfterQuery = Annotated[
    int | None,
    Query(ge=0, le=MAX_CURSOR, description="Start after this cursor (as Last-Event-ID)."),
]


def _cursor(last_event_id: str | None, after: int | None) -> int | None:
    """Return the cursor to resume after (Last-Event-ID wins), or None for "from now"."""
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        if not text.isascii() or not text.isdigit() or int(text) > MAX_CURSOR:
            raise InvalidArgument("Last-Event-ID must be a cursor (a number) this server sent",
                                  field="Last-Event-ID")
        return int(text)
    return after


@functools.lru_cache(maxsize=8192)
def _encoded(change: Change) -> bytes:
    """Return a change as one SSE event, encoded once however many streams send it."""
    return ServerSentEvent(data=json.dumps(change.to_json(), separators=(",", ":")),
                           id=str(change.cursor)).encode()


async def _events(store: Store, start: int,
                  sid: str | None) -> AsyncIterator[ServerSentEvent | bytes]:
    yield ServerSentEvent(data=json.dumps({"cursor": start}), event="ready", id=str(start))
    async for change in store.follow_async(start, session_id=sid):
        yield _encoded(change)


async def _stream(request: Request, store: Store, cursor: int | None,
                  sid: str | None) -> EventSourceResponse:
    start = await asyncio.to_thread(store.feed.start_cursor, cursor)
    heartbeat = getattr(request.app.state, "events_heartbeat", HEARTBEAT)
    # X-Accel-Buffering: nginx would otherwise hold events back in its buffer.
    return EventSourceResponse(_events(store, start, sid), ping=heartbeat,
                               headers={"Cache-Control": "no-store",
                                        "X-Accel-Buffering": "no"})


@router.get("/events", include_in_schema=False)
async def all_events(request: Request, store: StoreDep, last_event_id: LastEventId = None,
                     after: AfterQuery = None) -> EventSourceResponse:
    """Stream every session's pointer moves (text/event-stream), resuming after a cursor."""
    return await _stream(request, store, _cursor(last_event_id, after), None)


@router.get("/sessions/{sid}/events", include_in_schema=False)
async def session_events(request: Request, sid: SidPath, store: StoreDep,
                         last_event_id: LastEventId = None,
                         after: AfterQuery = None) -> EventSourceResponse:
    """Stream one session's pointer moves (also of a deleted one); 404 if it never existed."""
    await asyncio.to_thread(head_seq, store, sid)  # raises SessionNotFound
    return await _stream(request, store, _cursor(last_event_id, after), sid)
