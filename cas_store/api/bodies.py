"""How request bodies are read: JSON only, parsed strictly, and at a cost bounded by their size.

Every API route with a body uses ``JsonRoute``, which before the route runs:

- refuses a body that is not JSON with 415 naming the accepted types (FastAPI would
  otherwise hand the raw bytes to validation and answer a puzzling 422);
- refuses, before parsing, a body holding more JSON objects and arrays than one per
  ``BYTES_PER_CONTAINER`` bytes (and at least ``MIN_CONTAINERS``): each becomes a Python
  dict or list several times larger than its text, so this is what keeps the memory a
  body costs within a small multiple of its size (413 ``too_many_values``);
- parses with duplicate keys refused (400): "the last one wins" would let two parts of a
  system read one body differently;
- refuses more than ``max_messages`` messages (413 ``too_many_messages``) before any
  validation or store work, which cost per message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from .errors import ApiError

#: Content types a body may have (PATCH also takes RFC 7396 merge patches).
ACCEPTED_TYPES = ("application/json", "application/merge-patch+json")
#: The refusal below holds a body to at most one JSON object or array per this many bytes
#: on average: the densest real messages measured (tool calls: 4 containers in ~120 bytes)
#: use 30; a flood of ``{}`` uses 3.
BYTES_PER_CONTAINER = 16
MIN_CONTAINERS = 10_000

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def container_count(body: bytes) -> int:
    """Return how many JSON objects and arrays ``body`` holds (braces inside strings excluded)."""
    quick = body.count(b"{") + body.count(b"[")
    if b'"' not in body:
        return quick
    # Strings may hold braces: count again without them (linear, but slower, so only
    # when the quick upper bound is over a limit).
    bare = _STRING.sub(b"", body)
    return bare.count(b"{") + bare.count(b"[")


def container_limit(size: int) -> int:
    """Return how many objects and arrays a body of ``size`` bytes may hold."""
    return max(MIN_CONTAINERS, size // BYTES_PER_CONTAINER)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)
_WS = re.compile(r"[ \t\n\r]*")


class _Irregular(Exception):
    """Not a plain top-level object: leave it to json.loads (and its error message)."""


def _too_many(count: int, max_messages: int) -> ApiError:
    return ApiError(413, "too_many_messages",
                    f"more than {max_messages} messages in one request ({count} read before"
                    " stopping); send them in several appends", limit=max_messages,
                    field="messages")


def _counting_loads(text: str, max_messages: int) -> dict[str, Any]:
    """Parse a top-level object, refusing its "messages" at element max_messages + 1.

    So a body of ten million messages is refused after reading the first hundred thousand
    and one, not after building all of them. Values are parsed by json's C scanner.
    """
    import json.decoder

    scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
    scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

    def skip(i: int) -> int:
        # The pattern matches the empty string, so there is always a match.
        m = _WS.match(text, i)
        return m.end() if m else i

    def at(i: int) -> str:
        return text[i:i + 1]

    try:
        idx = skip(0)
        if at(idx) != "{":
            raise _Irregular
        idx = skip(idx + 1)
        pairs: list[tuple[str, Any]] = []
        while at(idx) != "}" or pairs:
            if at(idx) != '"':
                raise _Irregular
            key, idx = scanstring(text, idx + 1)
            idx = skip(idx)
            if at(idx) != ":":
                raise _Irregular
            idx = skip(idx + 1)
            if key == "messages" and at(idx) == "[":
                items: list[Any] = []
                idx = skip(idx + 1)
                while at(idx) != "]":
                    item, idx = scan(text, idx)
                    items.append(item)
                    if len(items) > max_messages:
                        raise _too_many(len(items), max_messages)
                    idx = skip(idx)
                    if at(idx) == ",":
                        idx = skip(idx + 1)
                        if at(idx) == "]":
                            raise _Irregular  # a trailing comma
                    elif at(idx) != "]":
                        raise _Irregular
                value: Any = items
                idx += 1
            else:
                value, idx = scan(text, idx)
            pairs.append((key, value))
            idx = skip(idx)
            if at(idx) == ",":
                idx = skip(idx + 1)
                continue
            if at(idx) != "}":
                raise _Irregular
            break
        if skip(idx + 1) != len(text):
            raise _Irregular
        return _no_duplicates(pairs)
    except (StopIteration, ValueError) as exc:
        if isinstance(exc, _DuplicateKey):
            raise
        raise _Irregular from None


def parse_json(body: bytes, *, max_messages: int | None = None) -> Any:
    """Return the JSON value of body, refusing dense, duplicated or over-long input (ApiError)."""
    limit = container_limit(len(body))
    if body.count(b"{") + body.count(b"[") > limit and container_count(body) > limit:
        raise ApiError(413, "too_many_values",
                       f"the body holds more than {limit} JSON objects and arrays (at most one"
                       f" per {BYTES_PER_CONTAINER} bytes)", limit=limit)
    try:
        if max_messages is not None and body.count(b"{") > max_messages:
            # Enough objects to be too many messages: count them as they are parsed.
            try:
                return _counting_loads(body.decode("utf-8"), max_messages)
            except (_Irregular, UnicodeDecodeError):
                pass  # json.loads below gives the error (or the value) as ever
        value = json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise ApiError(400, "invalid_json",
                       f"the request body is not valid JSON: duplicate key {exc.args[0]!r}",
                       ) from None
    except RecursionError:
        raise ApiError(400, "invalid_json",
                       "the request body is not valid JSON: nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json",
                       f"the request body is not valid JSON: {exc.reason}") from None
    if max_messages is not None and isinstance(value, dict):
        messages = value.get("messages")
        if isinstance(messages, list) and len(messages) > max_messages:
            raise ApiError(413, "too_many_messages",
                           f"{len(messages)} messages in one request; the limit is"
                           f" {max_messages} (send them in several appends)",
                           limit=max_messages, field="messages")
    return value


class StrictJsonRequest(Request):
    """A request whose ``json()`` is ``parse_json`` with the app's message limit."""

    max_messages: int | None = None

    async def json(self) -> Any:
        """Return the parsed body (parsed once)."""
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body(), max_messages=self.max_messages)
        return self._json


def is_json_type(content_type: str) -> bool:
    """Return True for application/json and application/*+json (any parameters)."""
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json"))


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


class JsonRoute(APIRoute):
    """An API route that reads its body with ``StrictJsonRequest`` after a content-type check."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Return FastAPI's handler, given a strict request and refusing non-JSON bodies."""
        handler = super().get_route_handler()
        takes_body = self.body_field is not None
        counts_messages = takes_body and _has_messages_field(self)

        async def strict_handler(request: Request) -> Response:
            if takes_body and _has_body(request):
                given = request.headers.get("content-type", "")
                if not is_json_type(given):
                    raise ApiError(
                        415, "unsupported_media_type",
                        f"a request body must be JSON: Content-Type {given or '(none)'!r}"
                        f" is not accepted; send {' or '.join(ACCEPTED_TYPES)}",
                        accepted=list(ACCEPTED_TYPES))
            strict = StrictJsonRequest(request.scope, request.receive)
            if counts_messages:
                strict.max_messages = request.app.state.settings.max_messages
            return await handler(strict)

        return strict_handler


def _has_messages_field(route: APIRoute) -> bool:
    """Return True if the route's body model has a ``messages`` field."""
    field = route.body_field
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    fields = getattr(annotation, "model_fields", None)
    return isinstance(fields, dict) and "messages" in fields
