"""Hostile requests through the app: each gets a clear 4xx, and nothing is written.

"Nothing is written" is checked the strong way: every session's version log (deleted
sessions too) and every stored object's id are the same before and after the request,
and fsck stays clean.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cas_store import Limits, Store, open_store
from cas_store.api import Settings, create_app

Record = Callable[[str, Any], None]
BODY_LIMIT = 64 * 1024
LIMITS = Limits(max_message_bytes=16 * 1024, max_metadata_bytes=8 * 1024)
JSON = {"Content-Type": "application/json"}
SENT: list[int] = []


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Store]]:
    path = tmp_path_factory.mktemp("hostile") / "hostile.db"
    store = open_store(path, synchronous="NORMAL", limits=LIMITS)
    store.create("chat-1", {"title": "Trip"}, [{"role": "user", "content": f"m{i}"}
                                              for i in range(5)])
    store.append("chat-1", [{"role": "assistant", "content": "ok"}])
    store.create("gone", {}, [{"role": "user", "content": "x"}])
    store.delete("gone")
    settings = Settings(store=path, max_body_bytes=BODY_LIMIT, allowed_hosts=["testserver"],
                        max_messages=1_000)
    app = create_app(settings, store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, store
    assert store.fsck().ok
    store.close()


def state(store: Store) -> tuple[Any, ...]:
    """Every version of every session, and every object id: what a write would change."""
    with sqlite3.connect(store.backend.location) as con:
        versions = con.execute("SELECT sid, seq, manifest FROM versions ORDER BY sid, seq")
        objects = con.execute("SELECT oid FROM objects ORDER BY oid")
        heads = con.execute("SELECT sid, seq, deleted FROM sessions ORDER BY sid")
        out = (versions.fetchall(), objects.fetchall(), heads.fetchall())
    con.close()
    return out


def nest(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


def nest_obj(depth: int) -> str:
    return '{"a":' * depth + "0" + "}" * depth


def body(**fields: Any) -> str:
    import json

    return json.dumps(fields)


LOOKALIKES = [
    "ch\u0430t-1",  # Cyrillic a
    "\uff43hat-1",  # fullwidth c
    "chat-1\u200b",  # zero-width space
    "chat\u20111",  # non-breaking hyphen
    "chat-\u0661",  # Arabic-Indic digit one
    "CHAT-1\u0307",  # combining dot
]
PATH_TRICKS = [
    "..", "%2E%2E", "..%2F..%2Fetc%2Fpasswd", "a%2Fb", "chat-1%2F..%2Fgone",
    "%00", "chat-1%00", "a%20b", ".hidden", "-dash", "x" * 129, "chat-1%0A", "%252E%252E",
    "chat-1;drop", "chat-1%5C..%5Cgone", *LOOKALIKES,
]

# (name, method, path, request kwargs, allowed statuses)
CASES: list[tuple[str, str, str, dict[str, Any], set[int]]] = [
    # sizes
    ("body over the limit", "POST", "/api/sessions/chat-1/messages",
     {"content": body(messages=[{"c": "x" * (BODY_LIMIT + 10)}]), "headers": JSON}, {413}),
    ("chunked body over the limit", "POST", "/api/sessions/chat-1/messages",
     {"content": "chunked", "headers": JSON}, {413}),
    ("message over the message limit", "POST", "/api/sessions/chat-1/messages",
     {"content": body(messages=[{"c": "x" * 20_000}]), "headers": JSON}, {422}),
    ("metadata over the metadata limit", "PATCH", "/api/sessions/chat-1",
     {"content": body(big="y" * 10_000), "headers": JSON}, {422}),
    ("metadata over the limit on create", "POST", "/api/sessions",
     {"content": body(session_id="new-1", metadata={"k": "y" * 10_000}), "headers": JSON},
     {422}),
    ("huge session id in body", "POST", "/api/sessions",
     {"content": body(session_id="a" * 20_000), "headers": JSON}, {422}),
    ("huge cursor", "GET", "/api/sessions?cursor=" + "A" * 5000, {}, {422}),
    ("huge If-Match", "PUT", "/api/sessions/chat-1",
     {"content": body(metadata={}, messages=[]), "headers": {**JSON, "If-Match": "1" * 5000}},
     {412, 422}),
    ("huge version number", "GET", "/api/sessions/chat-1/versions/" + "9" * 40, {}, {422}),
    ("negative version", "POST", "/api/sessions/chat-1/restore",
     {"content": body(seq=-1), "headers": JSON}, {422}),
    ("version beyond 2**63", "POST", "/api/sessions/chat-1/restore",
     {"content": body(seq=2**64), "headers": JSON}, {422}),
    ("rewind keep beyond length", "POST", "/api/sessions/chat-1/rewind",
     {"content": body(keep=10**6, messages=[]), "headers": JSON}, {422}),
    # nesting
    ("deep array nesting in a message", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"c":' + nest(25_000) + "}]}", "headers": JSON}, {400, 413, 422}),
    ("deep object nesting in a message", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"c":' + nest_obj(5_000) + "}]}", "headers": JSON},
     {400, 422}),
    ("nesting past the encoder's depth", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"c":' + nest(1_500) + "}]}", "headers": JSON}, {400, 422}),
    ("deep nesting in a metadata patch", "PATCH", "/api/sessions/chat-1",
     {"content": '{"k":' + nest_obj(5_000) + "}", "headers": JSON}, {400, 422}),
    ("deep nesting on create", "POST", "/api/sessions",
     {"content": '{"session_id":"deep","metadata":{"k":' + nest(1_500) + "}}",
      "headers": JSON}, {400, 422}),
    ("deep nesting as the whole body", "POST", "/api/sessions",
     {"content": nest(30_000), "headers": JSON}, {400, 413, 422}),
    # bytes and characters
    ("invalid UTF-8", "POST", "/api/sessions/chat-1/messages",
     {"content": b'{"messages":[{"c":"\xff\xfe\xc3"}]}', "headers": JSON}, {400, 422}),
    ("overlong UTF-8 slash", "POST", "/api/sessions",
     {"content": b'{"session_id":"a\xc0\xafb"}', "headers": JSON}, {400, 422}),
    ("raw NUL byte in a string", "POST", "/api/sessions/chat-1/messages",
     {"content": b'{"messages":[{"c":"a\x00b"}]}', "headers": JSON}, {400, 422}),
    ("NUL byte between tokens", "POST", "/api/sessions/chat-1/messages",
     {"content": b'{"messages":\x00[]}', "headers": JSON}, {400, 422}),
    ("lone surrogate in a message", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"c":"\\ud800"}]}', "headers": JSON}, {422}),
    ("lone surrogate as a key", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"\\udfff":1}]}', "headers": JSON}, {422}),
    ("lone surrogate in a metadata patch", "PATCH", "/api/sessions/chat-1",
     {"content": '{"t":"\\udbff"}', "headers": JSON}, {422}),
    ("lone surrogate in a session id", "POST", "/api/sessions",
     {"content": '{"session_id":"a\\ud800"}', "headers": JSON}, {422}),
    ("NUL in a session id", "POST", "/api/sessions",
     {"content": '{"session_id":"a\\u0000b"}', "headers": JSON}, {422}),
    ("NaN", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"c":NaN}]}', "headers": JSON}, {400, 422}),
    ("Infinity", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"c":-Infinity}]}', "headers": JSON}, {400, 422}),
    ("float overflow", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"c":1e400}]}', "headers": JSON}, {400, 422}),
    ("integer of 5000 digits", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"c":' + "7" * 5000 + "}]}", "headers": JSON}, {400, 422}),
    ("integer of 5000 digits in metadata", "PATCH", "/api/sessions/chat-1",
     {"content": '{"n":' + "7" * 5000 + "}", "headers": JSON}, {400, 422}),
    ("trailing garbage", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[]} {"messages":[]}', "headers": JSON}, {400, 422}),
    ("empty body", "POST", "/api/sessions/chat-1/messages", {"headers": JSON}, {400, 422}),
    ("message not an object", "POST", "/api/sessions/chat-1/messages",
     {"content": body(messages=["hi", 1]), "headers": JSON}, {422}),
    ("unknown field", "PUT", "/api/sessions/chat-1",
     {"content": body(metadata={}, messages=[], extra=1), "headers": JSON}, {422}),
    ("patch that is not an object", "PATCH", "/api/sessions/chat-1",
     {"content": "[1,2]", "headers": JSON}, {422}),
    ("bad cursor", "GET", "/api/sessions?cursor=%FF%FE", {}, {422}),
    ("cursor with a lone surrogate", "GET", "/api/sessions?cursor=WzEsIlx1ZDgwMCJd", {},
     {422}),
    # content types
    ("text/plain body", "POST", "/api/sessions",
     {"content": body(session_id="tp"), "headers": {"Content-Type": "text/plain"}},
     {415}),
    ("form body", "POST", "/api/sessions/chat-1/messages",
     {"data": {"messages": "x"}}, {415}),
    ("multipart body", "POST", "/api/sessions",
     {"files": {"session_id": ("a", b"mp")}}, {415}),
    ("xml body", "PUT", "/api/sessions/chat-1",
     {"content": "<session/>", "headers": {"Content-Type": "application/xml"}}, {415}),
    ("JSON patch content type", "PATCH", "/api/sessions/chat-1",
     {"content": '[{"op":"remove","path":"/title"}]',
      "headers": {"Content-Type": "application/json-patch+json"}}, {415, 422}),
    ("JSON body labelled octet-stream", "POST", "/api/sessions/chat-1/fork",
     {"content": body(session_id="oct"), "headers": {"Content-Type": "application/octet-stream"}},
     {415}),
    ("no content type", "POST", "/api/sessions/chat-1/messages",
     {"content": body(messages=[{"c": 1}])}, {415}),
    # duplicate keys: "the last one wins" would let two readers see two bodies
    ("duplicate key at the top", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[],"messages":[{"c":1}]}', "headers": JSON}, {400}),
    ("duplicate key in a message", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"role":"user","role":"system"}]}', "headers": JSON}, {400}),
    ("duplicate key in a metadata patch", "PATCH", "/api/sessions/chat-1",
     {"content": '{"title":"a","title":"b"}', "headers": JSON}, {400}),
    # amplification, small scale (the full-size bodies run against a real server below)
    ("1,001 messages at a cap of 1,000", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[' + ",".join(['{"c":1}'] * 1_001) + "]}", "headers": JSON},
     {413}),
    ("a flood of empty objects in metadata", "PATCH", "/api/sessions/chat-1",
     {"content": '{"k":[' + ",".join(["{}"] * 20_000) + "]}", "headers": JSON}, {413}),
    ("a flood of empty lists in a message", "POST", "/api/sessions/chat-1/messages",
     {"content": '{"messages":[{"c":[' + ",".join(["[]"] * 20_000) + "]}]}", "headers": JSON},
     {413}),
    # DNS rebinding: a page whose name was re-pointed at this machine
    ("foreign Host reading", "GET", "/api/sessions", {"headers": {"Host": "evil.example"}},
     {421}),
    ("foreign Host deleting", "DELETE", "/api/sessions/chat-1",
     {"headers": {"Host": "evil.example:8000"}}, {421}),
    ("foreign Host on the history pages", "GET", "/", {"headers": {"Host": "evil.example"}},
     {421}),
    # ids in bodies
    *[(f"session id {sid!r} in a create body", "POST", "/api/sessions",
       {"content": body(session_id=sid), "headers": JSON}, {422})
      for sid in ["..", "../x", "a/b", "a\\b", " chat-1", *LOOKALIKES]],
    *[(f"fork to session id {sid!r}", "POST", "/api/sessions/chat-1/fork",
       {"content": body(session_id=sid), "headers": JSON}, {422})
      for sid in ["..", "../gone", "a/b", *LOOKALIKES]],
    # methods
    ("TRACE", "TRACE", "/api/sessions/chat-1", {}, {405}),
    ("unknown method", "BREW", "/api/sessions/chat-1", {}, {405, 400, 501}),
    # writes to things that are not there
    ("append to a deleted session", "POST", "/api/sessions/gone/messages",
     {"content": body(messages=[{"c": 1}]), "headers": JSON}, {404}),
    ("restore a version that never was", "POST", "/api/sessions/chat-1/restore",
     {"content": body(seq=99), "headers": JSON}, {404}),
    ("create over a live session", "POST", "/api/sessions",
     {"content": body(session_id="chat-1"), "headers": JSON}, {409}),
    ("stale If-Match", "POST", "/api/sessions/chat-1/messages",
     {"content": body(messages=[{"c": 1}]), "headers": {**JSON, "If-Match": '"1"'}}, {412}),
    ("weak If-Match", "POST", "/api/sessions/chat-1/messages",
     {"content": body(messages=[{"c": 1}]), "headers": {**JSON, "If-Match": 'W/"2"'}},
     {412}),
    ("garbage If-Match", "DELETE", "/api/sessions/chat-1", {"headers": {"If-Match": '"2'}},
     {412, 422}),
]
for trick in PATH_TRICKS:
    for method, suffix, kw in [
        ("GET", "", {}),
        ("PUT", "", {"content": body(metadata={}, messages=[]), "headers": JSON}),
        ("PATCH", "", {"content": body(t=1), "headers": JSON}),
        ("DELETE", "", {}),
        ("POST", "/messages", {"content": body(messages=[{"c": 1}]), "headers": JSON}),
        ("POST", "/restore", {"content": body(seq=1), "headers": JSON}),
        ("POST", "/fork", {"content": body(session_id="stolen"), "headers": JSON}),
    ]:
        CASES.append((f"path trick {trick!r} {method}{suffix}", method,
                      f"/api/sessions/{trick}{suffix}", kw, {400, 404, 405, 422}))


def _chunks() -> Iterator[bytes]:
    yield b'{"messages":[{"c":"'
    for _ in range(200):
        yield b"z" * 1024
    yield b'"}]}'


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "allowed"), CASES,
                         ids=[c[0] for c in CASES])
def test_hostile_request_gets_a_clear_4xx_and_writes_nothing(
        hostile: tuple[TestClient, Store], name: str, method: str, path: str,
        kwargs: dict[str, Any], allowed: set[int]) -> None:
    client, store = hostile
    if kwargs.get("content") == "chunked":
        kwargs = {**kwargs, "content": _chunks()}
    before = state(store)
    r = client.request(method, path, **kwargs)
    SENT.append(1)
    assert r.status_code in allowed, (r.status_code, r.text[:300])
    if r.status_code != 405 or r.headers.get("content-type", "").startswith("application/json"):
        err = r.json()["error"]
        assert isinstance(err["code"], str) and err["code"]
        assert isinstance(err["message"], str) and err["message"]
    assert state(store) == before, "a rejected request wrote something"


def test_lookalike_ids_never_reach_the_real_session(hostile: tuple[TestClient, Store]) -> None:
    client, _store = hostile
    real = client.get("/api/sessions/chat-1").json()
    for sid in LOOKALIKES:
        r = client.get(f"/api/sessions/{sid}")
        assert r.status_code in (404, 422)
        # An error naming the look-alike, never the real session's content.
        assert set(r.json()) == {"error"}
        assert r.json()["error"]["code"] in ("session_not_found", "invalid_session_id")
        assert "messages" not in r.text and "Trip" not in r.text
    assert client.get("/api/sessions/chat-1").json() == real


def test_strange_but_valid_content_round_trips(tmp_path: Path) -> None:
    """Valid JSON that looks hostile (escaped NUL, astral characters, control characters,
    the largest allowed message) is stored and given back exactly."""
    store = open_store(tmp_path / "odd.db", synchronous="NORMAL", limits=LIMITS)
    app = create_app(Settings(store=tmp_path / "odd.db", max_body_bytes=BODY_LIMIT,
                              allowed_hosts=["testserver"]),
                     store=store)
    odd = [
        {"c": "a\u0000b", "d": "\u0001\u001f\u007f"},
        {"c": "\U0001f600 \u202e rtl \ufeff bom \ufffe"},
        {"c": "x" * (LIMITS.max_message_bytes - 20)},
        {"": "", "nested": [[[[{"k": None}]]]], "n": -0.0, "big": 2**62, "f": 1.5e300},
        {"\u0000key": 1, "k\u0301": 2},
    ]
    with TestClient(app) as client:
        r = client.post("/api/sessions", json={"session_id": "odd",
                                              "metadata": {"title": "\U0001f600\u0000"},
                                              "messages": odd})
        assert r.status_code == 201, r.text
        got = client.get("/api/sessions/odd").json()
        assert got["messages"] == odd
        assert got["metadata"] == {"title": "\U0001f600\u0000"}
        listed = client.get("/api/sessions?q=%F0%9F%98%80").json()["sessions"]
        assert [s["session_id"] for s in listed] == ["odd"]
    assert store.fsck().ok
    store.close()


def test_report_figures(hostile: tuple[TestClient, Store], record_property: Record) -> None:
    """Runs last in this module: records how many hostile requests were sent."""
    _client, store = hostile
    assert store.fsck().ok
    record_property("what", "hostile requests through the app (sizes, nesting, bytes,"
                    " path tricks, content types, stale/garbage If-Match)")
    record_property("requests", len(SENT))
    record_property("cases", len(CASES))


# --- amplification: a request's cost is bounded by its size -------------------------------


def _flood(n: int) -> bytes:
    return b'{"messages":[' + b",".join([b"{}"] * n) + b"]}"


def _chat_body(target: int, count: int) -> bytes:
    """A body of count realistic messages, about target bytes in all."""
    import random

    rng = random.Random(7)
    words = ["the", "store", "keeps", "every", "version", "of", "a", "chat", "session",
             "tool", "call", "result", "and", "message", "content", "in", "order"]
    per = max(10, target // count - 40)
    messages = []
    for i in range(count):
        text = " ".join(rng.choice(words) for _ in range(per // 5))[:per]
        messages.append({"role": "user" if i % 2 else "assistant", "content": f"{i} {text}"})
    import json

    return json.dumps({"metadata": {"title": "big"}, "messages": messages}).encode()


def _dense_body(target: int) -> bytes:
    """100,000 messages about as dense in objects as the limit allows (one per ~19 bytes)."""
    import json

    unit = {"role": "tool", "content": [{"type": "x", "v": 1}] * 16}
    per = len(json.dumps(unit, separators=(",", ":"))) + 1
    n = min(100_000, target // per)
    return json.dumps({"metadata": {}, "messages": [unit] * n}, separators=(",", ":")).encode()


def test_amplification_is_bounded_by_the_body(tmp_path: Path, record_property: Record) -> None:
    """Over a real server (default limits: 32 MiB, 100,000 messages): the 10M-``{}`` flood
    is refused in about the time it takes to send it, without parsing; the biggest bodies
    accepted cost a small multiple of their size in memory. Peak RSS (VmHWM) of a fresh
    server per body, over its baseline after one small request."""
    import time

    import httpx
    from served import Served

    cases = [
        ("flood_10M_empty_messages", "POST", "/api/sessions/chat/messages", _flood(10_000_000),
         {413}),
        ("over_the_message_cap", "POST", "/api/sessions/chat/messages",
         _chat_body(2_000_000, 100_001), {413}),
        ("biggest_accepted_chat", "PUT", "/api/sessions/chat", _chat_body(31 << 20, 100_000),
         {200}),
        ("densest_accepted", "PUT", "/api/sessions/chat", _dense_body(31 << 20), {200}),
    ]
    path = tmp_path / "amp.db"
    with open_store(path, synchronous="NORMAL") as s:
        s.create("chat", {}, [{"role": "user", "content": "hi"}])
    for name, method, url, payload, allowed in cases:
        server = Served(path, name=name)
        try:
            with httpx.Client(base_url=server.url, timeout=600) as c:
                assert c.get("/api/sessions/chat/meta").status_code == 200
                base = server.peak_rss()
                t0 = time.monotonic()
                r = c.request(method, url, content=payload,
                              headers={"Content-Type": "application/json"})
                took = time.monotonic() - t0
                peak = server.peak_rss() - base
                assert r.status_code in allowed, (name, r.status_code, r.text[:300])
                if name.startswith("flood"):
                    assert r.json()["error"]["code"] == "too_many_values"
                    # Refused without turning the body into Python objects (the flood
                    # parsed costs ~30x its size): at most a few copies of the bytes.
                    assert peak < 4 * len(payload), (name, peak)
                elif r.status_code == 413:
                    # Refused at message 100,001: what reading that far costs, no more.
                    assert r.json()["error"]["code"] == "too_many_messages"
                    assert peak < 20 * len(payload), (name, peak)
                else:
                    # Measured 11x for chat messages (64 MiB of it SQLite's page cache),
                    # 17x for the densest body allowed: a bound that catches a return of
                    # the unbounded cost (the flood once took 3.8 GB), not a target.
                    assert peak < 24 * len(payload), (name, peak)
                    assert c.get("/api/sessions/chat/meta").json()["message_count"] > 1000
                assert c.get("/api/health").status_code == 200
        finally:
            log = server.stop()
        assert "Traceback" not in log
        mib = len(payload) / (1 << 20)
        record_property(name, f"{mib:.1f} MiB body, {r.status_code} in {took:.1f} s,"
                        f" peak RSS +{peak / (1 << 20):.0f} MiB ({peak / len(payload):.1f}x)")
    record_property("what", "amplification over a real server: peak memory per body"
                    " (fresh server each)")
