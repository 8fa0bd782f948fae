"""The request-body limits, enforced while the body is read and before it is parsed."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, 408 for one slower than ``timeout``.

    A Content-Length over the limit is refused before a byte is read. A body without one
    (chunked) is read up to the limit and refused the moment it passes it, so a client can
    never make the server hold more than ``max_bytes`` of one request. The whole body must
    arrive within ``timeout`` seconds of the request's headers: a deadline for the body as
    a whole, not for each read, so that a client dripping a byte now and then cannot hold
    a connection (uvicorn times out idle connections, not slow bodies).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 15.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the body within the limits, then hand it to the app in one message."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client went away mid-body: nothing to answer or write
                    body = message.get("body", b"")
                    total += len(body)
                    if total > self.max_bytes:
                        break
                    chunks.append(body)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._stalled(scope, receive, send)
            return
        if total > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        whole = [b"".join(chunks)]
        chunks.clear()  # one copy of the body, not two

        async def replay() -> Message:
            if whole:
                return {"type": "http.request", "body": whole.pop(), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _stalled(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            408, "request_timeout",
            f"the request body did not arrive within {self.timeout:g} seconds",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "body_too_large",
            f"the request body is over the limit of {self.max_bytes} bytes",
            headers={"Connection": "close"}, limit=self.max_bytes,
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length before we see it
    return None
