"""Full-text search over messages: what text a message gives, the query language, reindex.

The index itself lives in the backend (SQLite: FTS5 over the chunks, one row per distinct
message however many sessions and versions share it, plus spans saying where each chunk
sits in which session from which version to which). The engine hands the backend, with
every commit, how the head's message list changed (``IndexUpdate``), so the index moves
in the same transaction as the pointer. This module holds what is backend-independent:
the text of a message, the parsing of a user's query into terms (no user input ever
reaches a backend's query syntax), and the rebuild from the log.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import lists as L
from .backends.base import HIT_END, HIT_START, SearchHit, SearchTerm
from .errors import InvalidArgument
from .model import FsckProblem
from .objects import Oid

if TYPE_CHECKING:
    from .store import Store

MAX_QUERY_CHARS = 1000
MAX_TERMS = 32
MAX_LIMIT = 100

# Keys whose values are ids, types or binary payloads (base64 images): not words.
_SKIP_KEYS = frozenset({
    "role", "type", "id", "tool_call_id", "call_id", "image_url", "url", "data", "source",
    "mime_type", "media_type", "cache_control", "index", "signature", "encrypted_content",
})
_PREFERRED = ("content", "text", "parts")
_TERM = re.compile(r'"([^"]*)("?)|(\S+)')


def message_fields(payload: bytes) -> tuple[str, str]:
    """Return (role, text) of a stored message: the words search sees, never raising."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "", ""
    if not isinstance(value, dict):
        return "", " ".join(_strings(value))
    role = value.get("role")
    role = role if isinstance(role, str) else ""
    # The content (OpenAI, Anthropic, Gemini "parts") first; a message without any, such
    # as a tool call, gives the words of its other fields instead.
    words = [s for key in _PREFERRED if key in value for s in _strings(value[key])]
    if not words:
        words = _strings({k: v for k, v in value.items() if k not in _PREFERRED})
    return role, "\n".join(words)


def _strings(value: Any) -> list[str]:
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if v:
                out.append(v)
        elif isinstance(v, list):
            stack.extend(reversed(v))
        elif isinstance(v, dict):
            stack.extend(reversed([x for k, x in v.items() if k not in _SKIP_KEYS]))
    return out


def parse_query(text: Any) -> tuple[SearchTerm, ...]:
    """Return the terms of a user query; raises InvalidArgument when it has none.

    Words are matched whole, ``"two words"`` as a phrase, and a trailing ``*`` makes the
    last word a prefix (``deplo*``, ``"blue gre"*``). Every term must match. Anything
    else is just text: no input is an error of a backend's query syntax.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("the search query is empty", field="q")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidArgument(f"the search query is over {MAX_QUERY_CHARS} characters",
                              field="q")
    terms: list[SearchTerm] = []
    for m in _TERM.finditer(text):
        quoted, _closed, bare = m.groups()
        raw = quoted if bare is None else bare
        prefix = False
        if bare is not None:
            prefix = raw.endswith("*")
        elif text[m.end():m.end() + 1] == "*":
            prefix = True
        words = tuple(w for w in _words(raw))
        if words:
            terms.append(SearchTerm(words, prefix))
    terms = [t for t in terms if t.words]
    if not terms:
        raise InvalidArgument("the search query has no words to search for", field="q")
    if len(terms) > MAX_TERMS:
        raise InvalidArgument(f"the search query has over {MAX_TERMS} terms", field="q")
    return tuple(dict.fromkeys(terms))


def _words(raw: str) -> list[str]:
    # Split on anything that is not a letter, digit or mark (what a unicode tokenizer
    # keeps), so the backend receives only plain words.
    return [w for w in re.split(r"[^\w]+|_", raw) if w]


@dataclass(frozen=True, slots=True)
class Hit:
    """One search hit: the message at ``index`` of session ``session_id`` at version ``seq``."""

    session_id: str
    index: int
    seq: int
    role: str
    snippet: str  # the text around the match, matched words between HIT_START and HIT_END
    rank: float

    @property
    def snippet_html(self) -> str:
        """Return the snippet HTML-escaped, matched words in ``<mark>``."""
        escaped = html.escape(self.snippet, quote=False)
        return escaped.replace(HIT_START, "<mark>").replace(HIT_END, "</mark>")

    @property
    def snippet_text(self) -> str:
        """Return the snippet as plain text (no marks)."""
        return self.snippet.replace(HIT_START, "").replace(HIT_END, "")

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict; ``snippet`` is HTML-escaped with ``<mark>`` around hits."""
        return {"session_id": self.session_id, "index": self.index, "seq": self.seq,
                "role": self.role, "snippet": self.snippet_html, "rank": self.rank}


@dataclass(frozen=True, slots=True)
class SearchPage:
    """A page of hits, best first, and the cursor of the next page (None at the end)."""

    hits: list[Hit]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"hits": [h.to_json() for h in self.hits], "next_cursor": self.next_cursor}


def search(store: Store, query: Any, *, limit: int = 20, cursor: str | None = None,
           versions: str = "head") -> SearchPage:
    """Return the messages matching query, best first; see ``Store.search``."""
    terms = parse_query(query)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    if versions not in ("head", "all"):
        raise InvalidArgument('versions must be "head" or "all"', field="versions")
    offset = _decode_cursor(cursor) if cursor else 0
    rows: list[SearchHit] = store.backend.search(terms, limit=limit + 1, offset=offset,
                                                 all_versions=versions == "all")
    more = len(rows) > limit
    hits = [Hit(r.sid, r.index, r.seq, r.role, r.snippet, r.rank) for r in rows[:limit]]
    return SearchPage(hits, _encode_cursor(offset + limit) if more else None)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("o") or not raw[1:].isdigit() or len(raw) > 12:
            raise ValueError
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidArgument("invalid cursor", field="cursor") from None


# --- rebuild and check ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReindexReport:
    """What a reindex did."""

    sessions: int
    versions: int
    spans: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"sessions": self.sessions, "versions": self.versions, "spans": self.spans,
                "seconds": round(self.seconds, 3)}


def session_spans(store: Store, sid: str) -> tuple[int, list[tuple[int, Oid, int, int | None]],
                                                   int]:
    """Return (head seq, spans, versions read) of a session, replayed from its log.

    A span (index, chunk, from_seq, to_seq) says the message at index was that chunk from
    version from_seq until to_seq (None: still in the head). A deleted version holds none.
    """
    io = store.io()
    head = store.backend.head(sid)
    if head is None:
        return 0, [], 0
    entries = store.backend.versions(sid, ascending=True)
    spans: list[tuple[int, Oid, int, int | None]] = []
    open_: list[tuple[Oid, int]] = []  # position -> (chunk, from_seq)
    prev: list[Oid] = []
    for e in entries:
        ids = [] if e.op == "delete" else L.read_ids(io.manifest_of(e).messages, io)
        cp = L.common_prefix(prev, ids)
        for i in range(cp, len(open_)):
            spans.append((i, open_[i][0], open_[i][1], e.seq))
        del open_[cp:]
        open_.extend((o, e.seq) for o in ids[cp:])
        prev = ids
    spans.extend((i, o, since, None) for i, (o, since) in enumerate(open_))
    return head.seq, spans, len(entries)


def reindex(store: Store, progress: Callable[[int], None] | None = None) -> ReindexReport:
    """Rebuild the search index from the version log; writers may run meanwhile.

    The index is emptied, then rebuilt a session at a time, each in one transaction
    that checks the head did not move since its log was read (else that session is
    read again). Commits beside it keep their own sessions' rows, so the index is whole
    when it is marked ready.
    """
    start = time.perf_counter()
    backend = store.backend
    backend.search_reset()
    sessions = versions = spans = 0
    for head in list(backend.iter_heads()):
        for _attempt in range(50):
            seq, rows, n = session_spans(store, head.sid)
            if backend.search_load(head.sid, seq, rows):
                break
        else:  # pragma: no cover - a session written to without pause for 50 rounds
            raise InvalidArgument(f"session {head.sid!r} kept changing during reindex")
        sessions += 1
        versions += n
        spans += len(rows)
        if progress:
            progress(sessions)
    backend.search_ready()
    return ReindexReport(sessions, versions, spans, time.perf_counter() - start)


def check(store: Store, *, compare_text: bool = True) -> list[FsckProblem]:
    """Return how the search index differs from the heads (empty when it matches).

    With compare_text, also that the full-text index holds each message's words.
    """
    backend = store.backend
    if not backend.supports_search:
        return []
    if backend.search_state() != "ready":
        # An index that says it is stale or half-built is derived data in a known state,
        # not damage: search refuses (503) until `cas-store reindex`, and nothing stored
        # is wrong. Only an index that claims to be ready must match the heads.
        return []
    problems = [FsckProblem("search_index", "", why, [])
                for why in backend.search_check(compare_text=compare_text)]
    io = store.io()
    for head in backend.iter_heads():
        want: Sequence[Oid] = [] if head.deleted else L.read_ids(
            io.manifest_of(head).messages, io)
        got = backend.search_spans(head.sid)
        if [o for _, o in got] != list(want) or [i for i, _ in got] != list(range(len(got))):
            problems.append(FsckProblem(
                "search_index", "", f"session {head.sid!r}: the index holds {len(got)}"
                f" messages of the head, which has {len(want)} (or others):"
                " run `cas-store reindex`", [(head.sid, head.seq)]))
    return problems
