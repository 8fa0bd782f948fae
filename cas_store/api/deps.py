"""Dependencies shared by the routers: the store, path parameters, If-Match, the token."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Path, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import Conflict, InvalidArgument
from ..inputs import SESSION_ID_MAX
from ..model import ANY, Expected, Version
from ..store import Store
from .schemas import MAX_SEQ, SESSION_ID_PATTERN

ETAG_HEADER = "ETag"


def get_store(request: Request) -> Store:
    """Return the store the app serves."""
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(get_store)]

SidPath = Annotated[str, Path(pattern=SESSION_ID_PATTERN, max_length=SESSION_ID_MAX,
                              description=f"Session id: 1-{SESSION_ID_MAX} of A-Z a-z 0-9"
                              " . _ - (not starting with .).")]
SeqPath = Annotated[int, Path(ge=1, le=MAX_SEQ, description="Version number.")]

#: What an If-Match may hold: *, a bare version number, or a list of entity tags.
IF_MATCH_PATTERN = r'^\s*(\*|\d{1,18}|(W/)?"[^"]*"(\s*,\s*(W/)?"[^"]*")*)\s*$'

IfMatchHeader = Annotated[
    str | None,
    Header(alias="If-Match", max_length=1024, pattern=IF_MATCH_PATTERN,
           description='Apply only if the head is still this version: "<seq>" as sent in'
           " ETag (or * for any). A stale value gets 412."),
]

_TAG = re.compile(r'\s*(?:(W/)?"([^"]*)"|(\d+))\s*(?:,|$)')


def etag(seq: int) -> str:
    """Return the ETag of a session state: its version number, quoted."""
    return f'"{seq}"'


def set_etag(response: Response, seq: int) -> None:
    """Mark a response as showing (or having written) version seq."""
    response.headers[ETAG_HEADER] = etag(seq)


def parse_if_match(value: str) -> list[int] | None:
    """Return the version numbers an If-Match names (None for *); 422 if unparseable.

    Weak tags never match (If-Match uses strong comparison); a bare number is accepted
    for clients that forget the quotes.
    """
    text = value.strip()
    if text == "*":
        return None
    seqs: list[int] = []
    pos = 0
    while pos < len(text):
        m = _TAG.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidArgument(f"If-Match is not a list of entity tags: {value!r}",
                                  field="If-Match")
        weak, quoted, bare = m.groups()
        digits = bare if bare is not None else quoted
        if not weak and digits is not None and digits.isascii() and digits.isdigit() \
                and len(digits) <= 18:
            seqs.append(int(digits))
        pos = m.end()
    if not seqs and not text:
        raise InvalidArgument("If-Match is empty", field="If-Match")
    return seqs


def expected_for(store: Store, sid: str, if_match: str | None) -> Expected:
    """Return the engine's ``expected`` for an If-Match header (ANY when absent or *).

    A list of several tags resolves to the current head if it is among them; the engine's
    compare-and-swap then still guards the write.
    """
    if if_match is None:
        return ANY
    seqs = parse_if_match(if_match)
    if seqs is None:
        return ANY
    if len(seqs) == 1:
        return seqs[0]
    current = head_seq(store, sid)
    if current in seqs:
        return current
    raise Conflict(f"session {sid!r} is at version {current}; If-Match {if_match} does not"
                   " name it", current=current)


def head_seq(store: Store, sid: str) -> int:
    """Return the newest version number of a session (deleted sessions too)."""
    newest: list[Version] = store.versions(sid, limit=1)
    return newest[0].seq if newest else 0


# --- authentication -------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="The server's token (--token).")


def has_token(request: Request) -> bool:
    """Return True if the server has no token or the request carries the right one."""
    token = request.app.state.settings.token
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode())


def token_checker(token: str) -> Callable[..., None]:
    """Return a dependency that requires ``Authorization: Bearer <token>`` (401 otherwise)."""
    expected = token.encode()

    def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        # compare_digest takes time independent of where the first difference is.
        if not hmac.compare_digest(given, expected):
            raise StarletteHTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"},
            )

    return require_token
