"""Realistic chat-UI session directories for import/export tests and the import benchmark.

The files look like what a chat web UI keeps: ``<sid>.json`` with ``messages`` and many
other top-level fields (title, model, timestamps, token counts, stream/pending fields,
lineage ids, tool calls, attachment metadata, context messages), ``<sid>.json.bak``
copies written before a shrinking save, an ``_index.json`` for the sidebar, and the
damage a real directory accumulates (a wiped file, an orphaned backup, broken files).
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TEXT = (
    "the model answered quickly but the tool call failed so we retried with a smaller"
    " context window and the summary came back with three citations about rome naples"
    " venice latency tokens streaming cache index vector embedding query result"
)
WORDS = _TEXT.split(" ")
UNICODE = ["naïve café", "日本語のテキスト", "emoji 🎉🚀", "Ελληνικά", "עברית", "ümlaut ß",
           "math ∑∫√", "zero\u200bwidth", "tab\tand\nnewline", 'quote " and \\ backslash']
MODELS = ["gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b", "mistral-large"]


def text(rnd: random.Random, lo: int = 5, hi: int = 120) -> str:
    """Return a random sentence-ish string, sometimes with unicode."""
    words = [rnd.choice(WORDS) for _ in range(rnd.randint(lo, hi))]
    if rnd.random() < 0.2:
        words.insert(rnd.randrange(len(words) + 1), rnd.choice(UNICODE))
    return " ".join(words)


def message(rnd: random.Random, i: int, t0: float) -> dict[str, Any]:
    """Return one chat message: user/assistant/tool, with tool calls or attachments at times."""
    role = ["user", "assistant"][i % 2] if rnd.random() > 0.1 else "tool"
    m: dict[str, Any] = {
        "id": f"msg_{i:05d}_{rnd.getrandbits(32):08x}",
        "role": role,
        "content": text(rnd),
        "timestamp": t0 + i * 7.25,
    }
    if role == "assistant":
        m["model"] = rnd.choice(MODELS)
        m["usage"] = {"prompt_tokens": rnd.randint(10, 9000),
                      "completion_tokens": rnd.randint(1, 2000), "cost": rnd.random() / 10}
        if rnd.random() < 0.3:
            m["tool_calls"] = [{
                "id": f"call_{rnd.getrandbits(40):x}", "type": "function",
                "function": {"name": rnd.choice(["search", "read_file", "run_python"]),
                             "arguments": json.dumps({"q": text(rnd, 1, 6), "k": 5})},
            }]
    if role == "user" and rnd.random() < 0.15:
        m["attachments"] = [{"name": f"report-{i}.pdf", "mime": "application/pdf",
                             "size": rnd.randint(1000, 5_000_000),
                             "sha256": f"{rnd.getrandbits(256):064x}", "pages": None}]
    if role == "tool":
        m["tool_call_id"] = f"call_{rnd.getrandbits(40):x}"
        m["content"] = json.dumps({"results": [text(rnd, 3, 20) for _ in range(3)]})
    if rnd.random() < 0.05:
        m["edited"] = True
        m["previous_versions"] = [{"content": text(rnd, 2, 10), "at": t0}]
    return m


def session_doc(rnd: random.Random, sid: str, n: int, *, t0: float | None = None,
                big_lists: bool = True) -> dict[str, Any]:
    """Return a full session document with n messages and the usual sidecar fields."""
    t0 = t0 if t0 is not None else 1_700_000_000 + rnd.randint(0, 30_000_000)
    msgs = [message(rnd, i, t0) for i in range(n)]
    doc: dict[str, Any] = {
        "id": sid,
        "title": text(rnd, 2, 8).title(),
        "model": rnd.choice(MODELS),
        "created_at": t0,
        "updated_at": t0 + n * 7.25 + 3,
        "prompt_tokens": rnd.randint(0, 200_000),
        "completion_tokens": rnd.randint(0, 50_000),
        "temperature": 0.7,
        "pinned": rnd.random() < 0.1,
        "folder": None,
        "tags": [rnd.choice(["work", "rome", "draft", "ünïcode"])
                 for _ in range(rnd.randint(0, 3))],
        "stream_state": rnd.choice(["done", "streaming", None]),
        "pending_tool_call": None if rnd.random() < 0.7 else {"id": "call_1", "name": "search"},
        "parent_session_id": None if rnd.random() < 0.8 else f"sess-{rnd.randint(0, 99):03d}",
        "fork_point": None,
        "settings": {"system_prompt": text(rnd, 5, 30), "tools": ["search", "python"],
                     "max_tokens": 4096},
        "empty_list_field": [],
        "messages": msgs,
    }
    if big_lists:
        doc["context_messages"] = [message(rnd, i, t0) for i in range(rnd.randint(20, 40))]
        doc["tool_calls"] = [{"id": f"call_{k}", "name": "search", "arguments": {"q": text(rnd)},
                              "result": text(rnd, 20, 60)} for k in range(rnd.randint(5, 15))]
        doc["anchor_activity_scenes"] = [{"scene": k, "anchors": list(range(k % 7)),
                                          "note": text(rnd, 3, 30)} for k in range(40)]
    return doc


@dataclass
class ChatDir:
    """What make_chat_dir wrote and what an import of it should give."""

    path: Path
    live: dict[str, dict[str, Any]] = field(default_factory=dict)  # sid -> live document
    bak: dict[str, dict[str, Any]] = field(default_factory=dict)  # sid -> backup document
    orphans: list[str] = field(default_factory=list)  # sids with only a .bak
    wiped: list[str] = field(default_factory=list)  # live file wiped (messages: [])
    intentional: list[str] = field(default_factory=list)  # deliberate shrink with a marker
    stale_marker: list[str] = field(default_factory=list)  # wipe carrying an old marker
    broken: dict[str, str] = field(default_factory=dict)  # file name -> what is wrong


def write_json(path: Path, value: Any, *, indent: int | None = 2) -> None:
    """Write a JSON file the way a web UI does (pretty, UTF-8, non-ASCII kept)."""
    path.write_text(json.dumps(value, indent=indent, ensure_ascii=False), encoding="utf-8")


def make_chat_dir(path: Path, *, sessions: int = 12, seed: int = 7,
                  long_messages: int = 1500) -> ChatDir:
    """Write a realistic session directory with every case the importer must handle."""
    rnd = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    out = ChatDir(path)
    for k in range(sessions):
        sid = f"sess-{k:03d}"
        n = long_messages if k == 0 else rnd.randint(1, 120)
        doc = session_doc(rnd, sid, n, big_lists=k % 3 != 2)
        out.live[sid] = doc
        write_json(path / f"{sid}.json", doc, indent=2 if k % 2 else None)

    # The incident: a metadata-only load cleared two stale fields and saved messages: [].
    sid = "wiped-chat"
    full = session_doc(rnd, sid, 300)
    full["stream_state"] = "streaming"
    full["pending_tool_call"] = {"id": "call_9", "name": "search"}
    wiped = {k: v for k, v in full.items() if k not in ("stream_state", "pending_tool_call")}
    wiped["messages"] = []
    wiped["updated_at"] = full["updated_at"] + 60
    write_json(path / f"{sid}.json.bak", full)
    write_json(path / f"{sid}.json", wiped)
    out.bak[sid], out.live[sid] = full, wiped
    out.wiped.append(sid)

    # The same accident, but the file carried a marker from an earlier deliberate clear.
    sid = "wiped-stale-marker"
    full = session_doc(rnd, sid, 80, big_lists=False)
    full["clear_generation"] = 2
    wiped = dict(full, messages=[], updated_at=full["updated_at"] + 5)
    write_json(path / f"{sid}.json.bak", full)
    write_json(path / f"{sid}.json", wiped)
    out.bak[sid], out.live[sid] = full, wiped
    out.wiped.append(sid)
    out.stale_marker.append(sid)

    # A deliberate truncation: the UI marks it.
    sid = "truncated-on-purpose"
    full = session_doc(rnd, sid, 60, big_lists=False)
    cut = dict(full, messages=full["messages"][:20], truncation_watermark=20,
               updated_at=full["updated_at"] + 9)
    write_json(path / f"{sid}.json.bak", full)
    write_json(path / f"{sid}.json", cut)
    out.bak[sid], out.live[sid] = full, cut
    out.intentional.append(sid)

    # A .bak equal to its live file (the UI copies before every risky save).
    sid = "bak-same"
    doc = session_doc(rnd, sid, 15, big_lists=False)
    write_json(path / f"{sid}.json.bak", doc)
    write_json(path / f"{sid}.json", doc)
    out.bak[sid], out.live[sid] = doc, doc

    # An orphaned backup: the live file was deleted.
    sid = "orphan-chat"
    doc = session_doc(rnd, sid, 25)
    write_json(path / f"{sid}.json.bak", doc)
    out.bak[sid] = doc
    out.orphans.append(sid)

    # Broken files: each must be skipped with a clear line.
    broken = {
        "truncated.json": '{"id": "truncated", "messages": [{"role": "user", "content": "hel',
        "not-object.json": "[1, 2, 3]",
        "no-messages.json": json.dumps({"id": "x", "title": "no messages here"}),
        "messages-not-list.json": json.dumps({"messages": {"0": "a"}}),
        "message-not-object.json": json.dumps({"messages": [{"role": "user"}, "just text"]}),
        "nan-value.json": '{"messages": [{"role": "user", "score": NaN}]}',
        "empty.json": "",
        "latin1.json": None,  # written as bytes below
        "bad id!.json": json.dumps({"messages": []}),
        ".hidden.json": json.dumps({"messages": []}),
    }
    for name, body in broken.items():
        if body is None:
            (path / name).write_bytes(b'{"messages": [{"content": "caf\xe9"}]}')
        else:
            (path / name).write_text(body, encoding="utf-8")
    out.broken = {
        "truncated.json": "not valid JSON",
        "not-object.json": "not a JSON object",
        "no-messages.json": "no 'messages' field",
        "messages-not-list.json": "'messages' is a dict",
        "message-not-object.json": "messages[1] must be a JSON object",
        "nan-value.json": "not valid JSON",
        "empty.json": "not valid JSON",
        "latin1.json": "not UTF-8",
        "bad id!.json": "unsafe session id",
        ".hidden.json": "unsafe session id",
    }

    # The sidebar index and unrelated files: ignored, not errors.
    write_json(path / "_index.json", [{"id": s, "title": d["title"]} for s, d in out.live.items()])
    (path / "notes.txt").write_text("not a session\n")
    (path / "sess-000.json.tmp").write_text("{half")
    return out


def make_bulk_dir(path: Path, files: int, messages: int, *, seed: int = 1) -> int:
    """Write files sessions of messages each, quickly (a pool of messages reused); return bytes."""
    rnd = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    pool = [message(rnd, i, 1_700_000_000) for i in range(4000)]
    total = 0
    for k in range(files):
        sid = f"bulk-{k:06d}"
        msgs = [dict(m, id=f"{sid}-{i}") for i, m in enumerate(rnd.sample(pool, messages))]
        doc = {"id": sid, "title": f"Session {k} " + rnd.choice(UNICODE),
               "model": rnd.choice(MODELS), "created_at": 1_700_000_000 + k,
               "updated_at": 1_700_000_500 + k, "prompt_tokens": rnd.randint(0, 9999),
               "tags": ["bulk"], "messages": msgs}
        data = json.dumps(doc, ensure_ascii=False).encode()
        (path / f"{sid}.json").write_bytes(data)
        total += len(data)
    return total


def write_big_session(path: Path, target_bytes: int, *, seed: int = 3) -> int:
    """Write one session file of about target_bytes (messages streamed out); return its size."""
    rnd = random.Random(seed)
    pool = [message(rnd, i, 1_700_000_000) for i in range(2000)]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"id": path.stem, "title": "A very long session",
                            "created_at": 1_700_000_000, "updated_at": 1_700_100_000})[:-1])
        f.write(', "context_messages": [')
        f.write(", ".join(json.dumps(m, ensure_ascii=False) for m in pool[:50]))
        f.write('], "messages": [\n')
        written, i = 0, 0
        while written < target_bytes:
            m = dict(pool[i % len(pool)], id=f"m{i}",
                     nonce="".join(rnd.choices(string.ascii_letters, k=12)))
            line = ("" if i == 0 else ",\n") + json.dumps(m, ensure_ascii=False)
            f.write(line)
            written += len(line.encode())
            i += 1
        f.write("\n]}\n")
    return path.stat().st_size
