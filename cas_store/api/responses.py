"""The documented error responses of each kind of route (for /openapi.json)."""

from __future__ import annotations

from typing import Any

from .schemas import ErrorResponse

_DESCRIPTIONS = {
    400: "The body is not valid JSON.",
    401: "Missing or wrong bearer token (only when the server has a token).",
    404: "No such session or version.",
    409: "A session with that id exists.",
    412: "If-Match no longer holds; the body's current_seq is the head.",
    413: "The body is over the size limit.",
    422: "A bad id, message, metadata or parameter; the error names the field or index.",
    500: "A stored object is corrupt (code corrupt_object).",
    503: "The store is busy or failing; retry.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return the ``responses`` entry documenting these error statuses and the common ones."""
    wanted = sorted({*statuses, 400, 401, 413, 422, 500, 503})
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in wanted}


_HEADERS = {
    "ETag": {"description": 'The version shown or written: "<seq>". Send it back in'
             " If-Match.", "schema": {"type": "string", "examples": ['"3"']}},
    "Location": {"description": "URL path of the new session.",
                 "schema": {"type": "string", "examples": ["/api/sessions/chat-1"]}},
}


def with_headers(responses: dict[int | str, dict[str, Any]], status: int,
                 *names: str) -> dict[int | str, dict[str, Any]]:
    """Return responses with the success status documenting these response headers."""
    return {**responses, status: {"headers": {n: _HEADERS[n] for n in names}}}


#: Any route can meet a bad body, the size limit, a bad token, bad parameters, corruption.
COMMON = errors()
READ = errors(404)
SHOW = with_headers(READ, 200, "ETag")
WRITE = with_headers(errors(404, 412), 200, "ETag")
DELETE = with_headers(errors(404, 412), 204, "ETag")
CREATE = with_headers(errors(409), 201, "ETag", "Location")
FORK = with_headers(errors(404, 409), 201, "ETag", "Location")
