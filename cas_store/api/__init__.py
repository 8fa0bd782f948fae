"""The HTTP API: a thin FastAPI layer over the engine, built by ``create_app(settings)``.

Nothing is created at import time; ``create_app`` opens (or is given) one Store, wires
the routers under /api, the one error mapping, the body limit, optional bearer token and
CORS, and serves the version-history pages in ``static/`` at ``/`` when they exist.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..errors import CasError
from ..model import RecoveryReport
from ..store import Store
from . import admin, errors, events, search, sessions, versions
from .deps import token_checker
from .fallback import ALL_METHODS, HeadAsGet, allow_table, unmatched
from .hosts import HostGuard, allowed_names
from .limits import BodyLimit
from .settings import Settings

log = logging.getLogger("cas_store.api")

STATIC_DIR = Path(__file__).parent / "static"

__all__ = ["STATIC_DIR", "Settings", "create_app"]


def log_recovery(report: RecoveryReport) -> None:
    """Log what a start-up recovery restored (or skipped), one line per session."""
    if not report.actions:
        log.info("recovery: nothing to recover")
    for a in report.actions:
        if a.action == "skipped":
            log.warning("recovery: %s skipped (%s)", a.session_id, a.reason)
        else:
            log.info("recovery: %s restored %d -> %d messages (shrink at version %d, now %s)",
                     a.session_id, a.from_count, a.to_count, a.shrink_seq, a.new_seq)


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               static_dir: Path | None = STATIC_DIR) -> FastAPI:
    """Return the API app serving ``store`` (or the store named by settings, opened here).

    A store passed in stays the caller's to close; one opened here is closed at shutdown.
    Recovery runs once at start-up (the lifespan) when ``settings.recover_on_start``.
    """
    settings = settings or Settings()
    owned = store is None
    if store is None:
        from .. import Limits, open_store

        store = open_store(settings.store, objects=settings.objects,
                           synchronous=settings.synchronous,
                           limits=Limits(load_cache_bytes=settings.load_cache_mb << 20))
    the_store = store

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            # Which store this server is on, first: an operator with several reads it here.
            log.info("store: %s (%s backend)", the_store.backend.location,
                     the_store.backend.name)
            if settings.recover_on_start:
                try:
                    log_recovery(await run_in_threadpool(the_store.recover))
                except CasError as exc:
                    # The versions are all still there: serve, and let the operator rerun
                    # recovery once the cause (e.g. a corrupt object) is dealt with.
                    log.error("recovery failed (%s: %s); serving anyway, run"
                              " `cas-store recover` later", exc.code, exc.message)
            yield
        finally:
            if owned:
                the_store.close()

    app = FastAPI(
        title="cas-store",
        version=__version__,
        summary="A content-addressed, versioned store for chat sessions.",
        description="Sessions whose every save is kept as a version. Writes accept"
        ' If-Match: "<seq>" (412 when stale); every response showing a session carries'
        ' ETag: "<seq>". Errors are {"error": {"code", "message", ...}}.',
        lifespan=lifespan,
    )
    app.state.store = the_store
    app.state.settings = settings
    errors.install(app)

    deps: list[Any] = []
    if settings.token is not None:
        deps.append(Depends(token_checker(settings.token.get_secret_value())))
    routers = [sessions.router, versions.router, admin.router, events.router, search.router]
    for router in routers:
        app.include_router(router, prefix="/api", dependencies=deps)
    app.include_router(admin.public_router, prefix="/api")
    app.state.allow_table = allow_table("/api", [*routers, admin.public_router])
    app.add_api_route("/api/{path:path}", unmatched, methods=ALL_METHODS,
                      include_in_schema=False, dependencies=deps)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       timeout=settings.body_timeout)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match"],
            expose_headers=["ETag", "Location"],
        )
    app.add_middleware(HeadAsGet)
    # Outermost: a request naming a host this server is not reached by (DNS rebinding)
    # is refused before any other layer, the store included, sees it.
    app.add_middleware(HostGuard, names=allowed_names(settings.host, settings.allowed_hosts))
    # Mounted last, so that no file can shadow an /api route.
    if static_dir is not None and static_dir.is_dir():
        app.mount("/", StaticFiles(directory=static_dir, html=True), name="static")
    return app
