"""The Host allow-list: a request must name this server by a name it is reached by.

Without it, a web page whose host name an attacker re-points at 127.0.0.1 (DNS
rebinding) could read, write and delete every session through the visitor's browser: the
browser sends the attacker's name in ``Host``, and nothing else about the request differs.
Every HTTP request (the API, the history pages, the static files) is checked here before
anything else runs, so a refused one never reaches the store.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response
from .settings import is_loopback

#: Addresses that bind every interface: never a name a client sends in Host.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def host_name(header: str) -> str:
    """Return the name part of a Host header, lower-cased, without port, brackets or final dot."""
    value = header.strip().lower()
    if value.startswith("["):  # [v6-address] or [v6-address]:port
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:  # name:port (a bare IPv6 address has more colons)
        value = value.partition(":")[0]
    return value.rstrip(".")


def allowed_names(bound_host: str, extra: Iterable[str]) -> frozenset[str]:
    """Return the names accepted besides the loopback ones: the bound host and extra names."""
    names = {host_name(h) for h in extra if h.strip()}
    bound = host_name(bound_host)
    if bound not in WILDCARD_HOSTS:
        names.add(bound)
    return frozenset(names)


class HostGuard:
    """ASGI middleware: 421 ``host_not_allowed`` unless ``Host`` names an allowed host.

    Loopback names (``localhost``, ``127.0.0.1``, ``[::1]``, any port) are always accepted;
    so are ``names`` (the bound address and ``--allowed-host``). ``*`` among them turns the
    check off (for a proxy that checks names itself). A request without ``Host`` is refused.
    """

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names
        self.any = "*" in names

    def allows(self, header: str | None) -> bool:
        """Return True if a request with this Host header may proceed."""
        if self.any:
            return True
        if not header:
            return False
        name = host_name(header)
        return name in self.names or is_loopback(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request whose Host is not allowed; pass everything else through."""
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                       if k == b"host"), None)
        if self.allows(header):
            await self.app(scope, receive, send)
            return
        shown = (header or "")[:100]
        response = error_response(
            421, "host_not_allowed",
            f"this server is not reached as {shown!r}: use localhost or 127.0.0.1, or start"
            " it with --allowed-host NAME" if header else "the request has no Host header",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
