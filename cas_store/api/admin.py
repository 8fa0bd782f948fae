"""Routes about the store as a whole: recovery on demand and liveness."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from .. import __version__
from ..store import SESSION_ID_RE
from .deps import StoreDep
from .responses import COMMON, READ
from .schemas import Health, RecoveryReportPublic

router = APIRouter(tags=["admin"])


@router.post("/recover", response_model=RecoveryReportPublic, responses=READ)
def recover(
    store: StoreDep,
    dry_run: Annotated[bool, Query(description="Report only; change nothing.")] = False,
    session_id: Annotated[str | None, Query(pattern=f"^{SESSION_ID_RE.pattern}$",
                                            description="Only this session.")] = None,
) -> dict[str, Any]:
    """Undo suspect shrinks (idempotent) and report per session what was (or would be) done."""
    return store.recover(session_id, dry_run=dry_run).to_json()


@router.get("/health", response_model=Health, responses=COMMON)
def health(store: StoreDep) -> dict[str, Any]:
    """Return ok, the version, and the store's backend and location."""
    return {"status": "ok", "version": __version__, "backend": store.backend.name,
            "store": store.backend.location}
