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


#: Any route can meet a bad body, the size limit, a bad token, bad parameters, corruption.
COMMON = errors()
READ = errors(404)
WRITE = errors(404, 412)
CREATE = errors(409)
FORK = errors(404, 409)
