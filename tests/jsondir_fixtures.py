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


# --- hermes-webui's shapes ----------------------------------------------------------------------

#: hermes-webui's Session fields before ``message_count`` and ``messages``, in its order.
HERMES_FIELDS = (
    "session_id", "title", "workspace", "model", "model_provider", "created_at", "updated_at",
    "pinned", "archived", "project_id", "profile", "input_tokens", "output_tokens",
    "estimated_cost", "personality", "is_cli_session", "source", "source_label",
    "parent_session_id", "branch_of", "branch_point", "lineage_root", "continuation_of",
    "compression_count", "last_compression_at", "compression_anchor", "context_length",
    "context_window", "prompt_cache_hit_percent", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "tool_call_count", "last_message_at", "last_user_message_at",
    "active_stream_id", "stream_started_at", "pending_user_message", "pending_attachments",
    "pending_started_at", "draft", "system_prompt", "temperature", "top_p", "max_tokens",
    "reasoning_effort", "fast_mode", "enabled_toolsets", "disabled_tools", "mcp_servers",
    "attachments", "artifacts", "goal", "goal_status", "kanban_task_id", "cron_job_id",
    "webhook_id", "gateway_platform", "gateway_chat_id", "voice_mode", "tts_voice",
    "language", "clear_generation", "truncation_watermark", "title_generated",
    "title_locked", "retry_count", "undo_stack_depth", "last_error", "schema_version",
)


def hermes_message(rnd: random.Random, i: int, t0: float, *, partial: bool = False
                   ) -> dict[str, Any]:
    """Return one hermes-style message (role, content, timestamp; _partial when streaming)."""
    m = message(rnd, i, t0)
    if partial:
        m = {"role": "assistant", "content": "partial answer so far", "_partial": True,
             "timestamp": t0}
    return m


def hermes_doc(rnd: random.Random, sid: str, n: int, *, n_context: int = 30, n_tools: int = 25,
               scenes_bytes: int = 20_000, t0: float = 1_690_000_000.0) -> dict[str, Any]:
    """Return a hermes-webui session file: 70 metadata fields, message_count, then the lists.

    ``anchor_activity_scenes`` (a dict of about scenes_bytes) comes after ``messages``, as
    hermes writes it so that a metadata-only reader can stop at the first ``messages``.
    """
    doc: dict[str, Any] = {}
    for k, name in enumerate(HERMES_FIELDS):
        doc[name] = rnd.choice([None, False, 0, "", f"{name}-{k}", k * 1.5, [], {"k": k}])
    doc.update(session_id=sid, title=text(rnd, 2, 6).title(), model=rnd.choice(MODELS),
               created_at=t0, updated_at=t0 + n * 7.25 + 3, pinned=rnd.random() < 0.3,
               archived=False, project_id=rnd.choice(["p-alpha", "p-beta", None]),
               profile="default", input_tokens=rnd.randint(0, 90_000),
               output_tokens=rnd.randint(0, 9_000), estimated_cost=round(rnd.random(), 4),
               clear_generation=None, truncation_watermark=None)
    msgs = [hermes_message(rnd, i, t0) for i in range(n)]
    doc["message_count"] = n
    doc["messages"] = msgs
    doc["context_messages"] = [hermes_message(rnd, i, t0) for i in range(n_context)]
    doc["tool_calls"] = [{"id": f"call_{k}", "name": "terminal", "args": {"cmd": text(rnd, 2, 8)},
                          "result": text(rnd, 20, 60)} for k in range(n_tools)]
    scenes: dict[str, Any] = {}
    while len(json.dumps(scenes)) < scenes_bytes:
        scenes[f"scene-{len(scenes):04d}"] = {"anchors": list(range(len(scenes) % 9)),
                                             "summary": text(rnd, 10, 40)}
    doc["anchor_activity_scenes"] = scenes
    return doc


@dataclass
class HermesDir:
    """What make_hermes_dir wrote."""

    path: Path
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    bak: dict[str, dict[str, Any]] = field(default_factory=dict)
    wiped: str = "hermes-wiped"  # .bak full, live with three lists emptied (#1558)
    partials: str = "hermes-partials"  # .bak with duplicate _partial messages, live healed
    # The longest whose <sid>.json.bak still fits a 255-byte file name (the store takes 255).
    long_id: str = "L" * 200 + "-" * 46
    dash_id: str = "-dash-first"
    underscore_id: str = "_underscore_first"
    tomb_orphan: str = "tomb-orphan"  # tombstoned, only a .bak left
    tomb_live: str = "tomb-live"  # tombstoned while its live file is still there
    tombstoned: tuple[str, ...] = ("tomb-orphan", "tomb-live", "tomb-gone")


def make_hermes_dir(path: Path, *, seed: int = 11) -> HermesDir:
    """Write a session directory as hermes-webui's own Session code leaves it."""
    rnd = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    out = HermesDir(path)
    for sid, n in (("hermes-plain", 25), (out.long_id, 3), (out.dash_id, 4),
                   (out.underscore_id, 2), (out.tomb_live, 6)):
        doc = hermes_doc(rnd, sid, n)
        out.live[sid] = doc
        write_json(path / f"{sid}.json", doc, indent=2)

    # The #1558 wipe: a metadata-only load saved back messages, context_messages and
    # tool_calls emptied and message_count 0; the shrinking save kept the .bak first.
    full = hermes_doc(rnd, out.wiped, 46)
    wiped = dict(full, messages=[], context_messages=[], tool_calls=[], message_count=0,
                 updated_at=full["updated_at"] + 30)
    write_json(path / f"{out.wiped}.json.bak", full)
    write_json(path / f"{out.wiped}.json", wiped)
    out.bak[out.wiped], out.live[out.wiped] = full, wiped

    # The load-time self-heal: 9 messages with three equal _partial ones become 7.
    doc = hermes_doc(rnd, out.partials, 6)
    part = hermes_message(rnd, 0, doc["created_at"], partial=True)
    dup = dict(doc, messages=[*doc["messages"], part, dict(part), dict(part)], message_count=9)
    healed = dict(doc, messages=[*doc["messages"], part], message_count=7,
                  updated_at=doc["updated_at"] + 2)
    write_json(path / f"{out.partials}.json.bak", dup)
    write_json(path / f"{out.partials}.json", healed)
    out.bak[out.partials], out.live[out.partials] = dup, healed

    # Deleted sessions: the tombstone lists them (one has only its .bak, one is gone).
    doc = hermes_doc(rnd, out.tomb_orphan, 5)
    write_json(path / f"{out.tomb_orphan}.json.bak", doc)
    out.bak[out.tomb_orphan] = doc
    write_json(path / "_deleted_webui_sessions.json", {"version": 1, "ids": list(out.tombstoned)})

    # hermes's own files and atomic-write temporaries: never sessions, never errors.
    write_json(path / "_index.json", [{"session_id": s, "title": d["title"]}
                                      for s, d in out.live.items()])
    write_json(path / "_pruned_webui_orphans.json", {"version": 1, "ids": ["x"]})
    (path / "hermes-plain.json.tmp.4242.140000").write_text('{"half": ')
    (path / "hermes-plain.tmp.4242.140001").write_text("{")
    return out
