"""The last /api route: 404 for unknown paths, 405 with a complete Allow header.

Without it, a request to an /api path with a method no route has would fall through to
the static pages mounted at ``/`` (which answer 405 ``Allow: GET, HEAD``), and even
without them Starlette's 405 lists only the first matching route's methods.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]

#: (path regex, methods) of every API route; built by create_app.
AllowTable = list[tuple[re.Pattern[str], set[str]]]


def allow_table(prefix: str, routers: Iterable[APIRouter]) -> AllowTable:
    """Return the path patterns and methods of the routers' routes under prefix."""
    table: AllowTable = []
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                regex, _, _ = compile_path(prefix + route.path)
                methods = set(route.methods or ())
                if "GET" in methods:
                    methods.add("HEAD")  # answered by HeadAsGet
                table.append((regex, methods))
    return table


class HeadAsGet:
    """ASGI middleware: HEAD on any GET route is the GET without its body (RFC 9110 9.3.2).

    The headers, Content-Length and ETag included, are the GET's, so a client can check
    a session's version without downloading it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run a HEAD request as GET and drop the body from what is sent."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def unmatched(request: Request) -> None:
    """Answer a request no API route took: 405 if the path exists, else 404."""
    table: AllowTable = request.app.state.allow_table
    path = request.url.path
    allowed = sorted({m for regex, methods in table if regex.match(path) for m in methods})
    if allowed:
        raise StarletteHTTPException(405, f"{request.method} is not allowed on {path}",
                                     headers={"Allow": ", ".join(allowed)})
    raise StarletteHTTPException(404, f"no API route {path}")
