"""Running the API over TCP: the socket bound first, and connections held to deadlines and a cap.

uvicorn alone lets a client hold a connection forever by never finishing its headers,
and accepts until the process runs out of file descriptors (then asyncio logs a
traceback for every failed accept). ``GuardedH11Protocol`` adds what it lacks:

- a deadline for a request's line and headers (``header_timeout``), counted from the
  connection (or from the previous response on a keep-alive connection);
- a cap on connections held at once (``max_connections``, by default well below the
  open-file limit): past it the oldest connection still waiting for its headers is
  closed, so a flood of half-open connections cannot lock out a client that sends a
  whole request at once;
- one rate-limited log line instead of a traceback per failed accept.

The whole-body deadline is ``BodyLimit``'s (cas_store/api/limits.py); the keep-alive idle
timeout is uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections import OrderedDict
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import Settings

log = logging.getLogger("cas_store.api")

#: File descriptors kept out of the connection cap: the store's files (three per SQLite
#: connection, one connection per worker thread), logs, imports.
FD_RESERVE = 256
#: Pending connections the kernel queues; asyncio accepts up to this many in one go before
#: any is counted, so the cap leaves room for one such batch too.
MAX_BACKLOG = 2048


class BindError(OSError):
    """The listening socket could not be bound (address in use, not permitted, unknown)."""


def default_backlog(fd_limit: int) -> int:
    """Return the listen backlog for a process allowed fd_limit open files."""
    return max(16, min(MAX_BACKLOG, fd_limit // 8))


def connection_cap(fd_limit: int, backlog: int, wanted: int | None) -> int:
    """Return the most connections to hold: wanted, kept below what the fd limit allows."""
    room = max(16, fd_limit - FD_RESERVE - backlog)
    return room if wanted is None else max(1, min(wanted, room))


def open_file_limit() -> int:
    """Return this process's open-file limit, raised to its hard limit first where allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class RateLimitedLog:
    """Log a recurring condition at most once per ``interval`` seconds, counting the rest."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last = -float("inf")
        self.suppressed = 0

    def warn(self, message: str, *args: Any) -> bool:
        """Log message unless one was logged within the interval; return whether it was."""
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return False
        more = f" ({self.suppressed} more since the last such line)" if self.suppressed else ""
        log.warning(message + more, *args)
        self.last, self.suppressed = now, 0
        return True


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config plus the header deadline and the connection cap."""

    def __init__(self, app: Any, *, header_timeout: float, max_connections: int,
                 **kwargs: Any) -> None:
        super().__init__(app, http=GuardedH11Protocol, **kwargs)
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        #: Connections waiting for a request's headers, oldest first (the eviction order).
        self.waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.cap_log = RateLimitedLog()
        self.deadline_count = 0
        self.evicted_count = 0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a header deadline and a connection cap."""

    config: GuardedConfig
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection, make room under the cap, start the header deadline."""
        super().connection_made(transport)
        cfg = self.config
        if len(self.connections) > cfg.max_connections:
            victim = next(iter(cfg.waiting), None)
            cfg.evicted_count += 1
            cfg.cap_log.warn("%d connections held (the cap): closing the oldest still"
                             " sending its headers", cfg.max_connections)
            if victim is None:
                self.transport.close()  # nothing to give way: this one goes
                return
            victim._close_waiting()
        self._track_headers()

    def data_received(self, data: bytes) -> None:
        """Handle data as uvicorn does, then stop the deadline once the headers are in."""
        super().data_received(data)
        self._track_headers()

    def on_response_complete(self) -> None:
        """Start the next request's header deadline when a keep-alive response is done."""
        super().on_response_complete()
        self._track_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection's deadline."""
        self._stop_deadline()
        super().connection_lost(exc)

    def _track_headers(self) -> None:
        # IDLE: h11 has not seen a whole request line and headers yet.
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.config.header_timeout,
                                                      self._headers_too_slow)
            self.config.waiting[self] = None
        elif not waiting:
            self._stop_deadline()

    def _stop_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.config.waiting.pop(self, None)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.config.deadline_count += 1
        self._close_waiting()

    def _close_waiting(self) -> None:
        self._stop_deadline()
        if not self.transport.is_closing():
            self.transport.close()


def accept_error_handler(limiter: RateLimitedLog) -> Any:
    """Return a loop exception handler that turns failed accepts into rate-limited lines."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE,
                                                      errno.ENOBUFS, errno.ENOMEM):
            limiter.warn("cannot accept connections: %s; retrying", exc.strerror or exc)
            return
        loop.default_exception_handler(context)

    return handle


class GuardedServer(uvicorn.Server):
    """uvicorn's Server, with failed accepts logged as rate-limited lines."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Install the accept-error handler, then start as uvicorn does."""
        asyncio.get_running_loop().set_exception_handler(accept_error_handler(RateLimitedLog()))
        await super().startup(sockets=sockets)


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """Return a listening TCP socket on host:port (BindError naming the cause if not)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        why = ("the port is in use by another process" if exc.errno == errno.EADDRINUSE
               else exc.strerror or str(exc))
        raise BindError(exc.errno, f"cannot listen on {host}:{port}: {why}") from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    """Return the http URL a bound socket is reached at."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(settings: Settings, sock: socket.socket, app: Any,
          log_config: dict[str, Any] | None = None) -> None:
    """Serve app on the already bound sock until interrupted, with every limit applied."""
    fd_limit = open_file_limit()
    config = GuardedConfig(
        app, header_timeout=settings.header_timeout,
        max_connections=connection_cap(fd_limit, default_backlog(fd_limit),
                                       settings.max_connections),
        log_level=settings.log_level.lower(), log_config=log_config,
        timeout_keep_alive=settings.keep_alive_timeout,
        backlog=default_backlog(fd_limit), lifespan="on",
    )
    log.info("serving on %s (at most %d connections; headers within %gs, bodies within"
             " %gs)", url_of(sock), config.max_connections, settings.header_timeout,
             settings.body_timeout)
    GuardedServer(config).run(sockets=[sock])
