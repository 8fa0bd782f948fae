"""Routes about the store as a whole: recovery on demand and liveness."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from .. import __version__
from ..inputs import SESSION_ID_RE
from .bodies import JsonRoute
from .deps import StoreDep, has_token
from .responses import COMMON, READ
from .schemas import Health, RecoveryReportPublic

router = APIRouter(tags=["admin"], route_class=JsonRoute)
#: Routes that answer without the token (liveness probes), revealing nothing then.
public_router = APIRouter(tags=["admin"], route_class=JsonRoute)


@router.post("/recover", response_model=RecoveryReportPublic, responses=READ)
def recover(
    store: StoreDep,
    dry_run: Annotated[bool, Query(description="Report only; change nothing.")] = False,
    session_id: Annotated[str | None, Query(pattern=f"^{SESSION_ID_RE.pattern}$",
                                            description="Only this session.")] = None,
) -> dict[str, Any]:
    """Undo suspect shrinks (idempotent) and report per session what was (or would be) done."""
    return store.recover(session_id, dry_run=dry_run).to_json()


@public_router.get("/health", response_model=Health, responses=COMMON,
                   response_model_exclude_none=True)
def health(store: StoreDep, request: Request) -> dict[str, Any]:
    """Return ok and the version; the backend and store location only to who may see them.

    Needs no token, so that a liveness probe can call it; without the token (when the
    server has one) it leaves out where the store lives.
    """
    out: dict[str, Any] = {"status": "ok", "version": __version__}
    if has_token(request):
        out.update(backend=store.backend.name, store=store.backend.location)
    return out
