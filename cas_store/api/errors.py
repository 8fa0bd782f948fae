"""The one mapping from errors to HTTP responses, and the one JSON shape of every error.

Every error the API sends is ``{"error": {"code": ..., "message": ..., ...details}}``,
whether it came from the engine, from request validation, from the body-size limit, from
authentication or from routing. Codes are the engine's stable codes where the engine
raised the error; the few HTTP-only conditions have their own codes listed in
``HTTP_CODES``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors as E

log = logging.getLogger("cas_store.api")

#: HTTP status per engine error class, checked in order (subclasses first).
STATUS: list[tuple[type[E.CasError], int]] = [
    (E.NotFound, 404),
    (E.AlreadyExists, 409),
    (E.Conflict, 412),
    (E.InvalidInput, 422),
    (E.CorruptObject, 500),
    (E.ObjectNotFound, 500),  # damage, not a caller's mistake: never a 404
    (E.IntegrityError, 500),
    (E.StorageError, 503),
    (E.CasError, 500),
]

#: Codes of conditions that never reach the engine, by HTTP status.
HTTP_CODES: dict[int, str] = {
    400: "invalid_json",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    421: "host_not_allowed",
    422: "invalid_argument",
    500: "internal_error",
}


class ApiError(HTTPException):
    """An HTTP-only refusal with its own stable code and details (415, 413 too_many_messages).

    Raised where the engine is never reached (body parsing, content type); answered in the
    one shape by the same handler as every other HTTP error.
    """

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None, **details: Any) -> None:
        super().__init__(status, message, headers=dict(headers or {}))
        self.code = code
        self.details = details

#: Headers that name a version, so clients can resume after an error without a GET.
ETAG = "ETag"


def status_for(exc: E.CasError) -> int:
    """Return the HTTP status of an engine error."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """Return the JSON body of an error (details whose value is None are left out)."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update({k: v for k, v in details.items() if v is not None})
    return {"error": body}


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None, **details: Any) -> JSONResponse:
    """Return an error response in the one shape."""
    return JSONResponse(error_body(code, message, **details), status_code=status,
                        headers=dict(headers or {}))


def engine_error_response(exc: E.CasError) -> JSONResponse:
    """Return the response for an engine error."""
    status = status_for(exc)
    headers: dict[str, str] = {}
    details = dict(exc.details)
    if isinstance(exc, E.Conflict):
        # The body and the ETag both give the current version so the client can retry.
        details.pop("current", None)
        details["current_seq"] = exc.current
        if exc.current:
            headers[ETAG] = f'"{exc.current}"'
    if isinstance(exc, E.StorageError) and exc.retryable:
        # Only where the same request may simply succeed later (a busy store); a read-only
        # or full disk needs someone to act first.
        headers["Retry-After"] = "1"
    if status >= 500:
        log.error("%s: %s", exc.code, exc.message)
    return error_response(status, exc.code, exc.message, headers, **details)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def _field(loc: Sequence[Any]) -> tuple[str, list[Any]]:
    """Return (where, path) of a validation error: where is body/query/path/header."""
    where = str(loc[0]) if loc else "body"
    return where, list(loc[1:])


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """Return 400 for JSON that does not parse, else 422 naming the field (or message index)."""
    errs = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errs):
        first = next(e for e in errs if e.get("type") == "json_invalid")
        ctx = first.get("ctx") or {}
        return error_response(400, "invalid_json",
                              f"the request body is not valid JSON: {ctx.get('error', '')}".strip())
    listed = []
    for e in errs:
        where, path = _field(e.get("loc", ()))
        listed.append({"in": where, "field": ".".join(str(p) for p in path),
                       "message": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    first_err = errs[0] if errs else {}
    where, path = _field(first_err.get("loc", ()))
    msg = str(first_err.get("msg", "invalid request"))
    code, details = _classify(where, path)
    name = details.get("field") or where
    index = details.get("index")
    label = f"{name}[{index}]" if index is not None else name
    return error_response(422, code, f"{label}: {msg}", errors=_jsonable(listed), **details)


def _classify(where: str, path: list[Any]) -> tuple[str, dict[str, Any]]:
    """Return the engine-style code and details of a validation error at (where, path)."""
    head = str(path[0]) if path else ""
    if (where == "path" and head == "sid") or (where == "body" and head == "session_id"):
        return E.InvalidSessionId.code, {"field": "session_id"}
    if where == "body" and head == "messages":
        if len(path) > 1 and isinstance(path[1], int):
            return E.InvalidMessage.code, {"field": "messages", "index": path[1]}
        return E.InvalidArgument.code, {"field": "messages"}
    if where == "body" and head == "metadata":
        return E.InvalidMetadata.code, {"field": "metadata"}
    if where == "body" and not path:
        return E.InvalidArgument.code, {"field": "body"}
    return E.InvalidArgument.code, {"field": ".".join(str(p) for p in path) or where}


def http_error_response(exc: StarletteHTTPException) -> JSONResponse:
    """Return a routing or framework HTTP error in the one shape."""
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.code, detail, headers=exc.headers,
                              **exc.details)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    if exc.status_code == 400 and "parsing the body" in detail:
        detail = "the request body could not be parsed as JSON"
    return error_response(exc.status_code, code, detail, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""

    async def on_engine(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, E.CasError)
        return engine_error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return http_error_response(exc)

    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a user mistake: logged with its traceback, answered in the one shape.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error")

    app.add_exception_handler(E.CasError, on_engine)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_bug)
