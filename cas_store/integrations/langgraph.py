"""A LangGraph checkpointer on cas-store: every message stored once, every checkpoint kept.

``CasSaver(store)`` is a ``BaseCheckpointSaver``. How LangGraph's threads, namespaces,
checkpoints and pending writes map onto sessions and versions is in docs/integrations.md;
in short, per (thread, namespace):

- a *checkpoint session* ``<prefix>.<thread>.<ns>``: one version per checkpoint; the
  version's metadata is the checkpoint record (ids, parent, channel versions, metadata,
  where each value lives); a channel whose value is a list of messages is a cas-store list
  of per-message chunks (``messages`` for the channel called ``messages``, a named list
  for others), so a step that adds one message writes that message and O(1) more;
- a *log session* ``<prefix>.<thread>.<ns>.log``: an append-only list of the other
  channels' values (LangGraph's serializer, one chunk each) and of pending writes;
- a *thread session* ``<prefix>.<thread>`` naming the thread's namespaces.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import operator
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import blake3
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from ..errors import InvalidArgument, SessionExists, SessionNotFound, VersionNotFound
from ..inputs import LIST_NAME_RE, MESSAGES
from ..model import SessionMeta
from ..store import Store

__all__ = ["CasSaver"]

_JSON = dict[str, Any]
_T = TypeVar("_T")
_worker = threading.local()  # .saver: the CasSaver whose pool thread this is


def _key(text: str, n: int) -> str:
    return blake3.blake3(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def _is_messages(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, BaseMessage) for m in value))


def _json_copy(value: Any) -> Any:
    """Return value as it reads back from JSON, or raise ValueError/TypeError."""
    return json.loads(json.dumps(value, allow_nan=False, ensure_ascii=False))


class _Codec:
    """Messages as LangChain's own JSON; anything else through LangGraph's serializer."""

    def __init__(self, serde: SerializerProtocol) -> None:
        self.serde = serde

    def blob(self, value: Any) -> _JSON:
        kind, data = self.serde.dumps_typed(value)
        return {"t": kind, "b": base64.b64encode(data).decode("ascii")}

    def unblob(self, item: _JSON) -> Any:
        return self.serde.loads_typed((item["t"], base64.b64decode(item["b"])))

    def message(self, m: BaseMessage) -> _JSON:
        # LangChain's dict form is readable JSON, and equal messages give equal chunks
        # (dedup across threads and checkpoints). A message that does not survive the
        # JSON round trip exactly goes through the serializer instead, still one chunk.
        try:
            d = _json_copy(message_to_dict(m))
            if messages_from_dict([d])[0] == m:
                return dict(d)
        except (TypeError, ValueError):
            pass
        return {"serde": self.blob(m)}

    def unmessage(self, item: _JSON) -> Any:
        if "serde" in item:
            return self.unblob(item["serde"])
        return messages_from_dict([item])[0]


class _Writes:
    """Pending writes parsed from a log session, from the earliest offset asked for on."""

    def __init__(self, saver: CasSaver, log: str) -> None:
        self.saver, self.log = saver, log
        self.start: int | None = None
        self.by_cid: dict[str, list[tuple[str, str, int, str, Any]]] = {}

    def of(self, wo: int, cid: str) -> list[PendingWrite]:
        """Return the pending writes of checkpoint cid, recorded at offset wo or later."""
        store = self.saver.store
        if self.start is None:
            try:
                self.start = store.load_meta(self.log).message_count
            except SessionNotFound:
                return []
        if wo < self.start:
            # Every offset a record holds was a head's length: a boundary between appends,
            # so the segment parses on its own.
            self._parse(store.messages(self.log, wo, self.start - wo))
            self.start = wo
        rows = self.by_cid.get(cid, [])
        # Duplicates of (task, idx) from retried calls: the first regular write wins,
        # the last special one (error, interrupt...) replaces, as in LangGraph's savers.
        chosen: dict[tuple[str, int], tuple[str, str, int, str, Any]] = {}
        for row in rows:
            k = (row[1], row[2])
            if k not in chosen or row[2] < 0:
                chosen[k] = row
        ordered = sorted(chosen.values(), key=lambda r: (r[0], r[1], r[2]))
        return [(r[1], r[3], r[4]) for r in ordered]

    def _parse(self, items: list[Any]) -> None:
        codec = self.saver.codec
        i, found = 0, []
        while i < len(items):
            item = items[i]
            i += 1
            if item.get("k") != "w":
                continue
            if "n" in item:
                msgs = [codec.unmessage(m) for m in items[i:i + item["n"]]]
                i += item["n"]
                value: Any = msgs[0] if item.get("one") else msgs
            else:
                value = codec.unblob(item)
            found.append((item["c"], (item.get("p", ""), item["task"], item["idx"],
                                      item["ch"], value)))
        # Prepend: this segment precedes what was parsed before.
        fresh: dict[str, list[tuple[str, str, int, str, Any]]] = {}
        for cid, row in found:
            fresh.setdefault(cid, []).append(row)
        for cid, rows in self.by_cid.items():
            fresh.setdefault(cid, []).extend(rows)
        self.by_cid = fresh


class CasSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer over a cas-store Store: messages stored once, history kept.

    Thread-safe; several processes may share one store (every write is a compare-and-swap
    commit). Deleting or pruning hides checkpoints from LangGraph at once; the bytes go
    when cas-store's GC retention drops the old versions.
    """

    def __init__(self, store: Store, *, prefix: str = "lg",
                 serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}", prefix):
            raise InvalidArgument("prefix must be 1-16 of A-Z a-z 0-9 _ -", field="prefix")
        self.store = store
        self.prefix = prefix
        self.codec = _Codec(self.serde)
        self._lock = threading.Lock()
        # (session, list) -> (checkpoint id, the message objects stored there): a step
        # whose list starts with the very objects of its parent's list writes only the
        # rest, without encoding the prefix again.
        self._lists: dict[tuple[str, str], tuple[str, list[Any]]] = {}
        # (session, checkpoint id) -> (session created_at, seq): found without a scan.
        self._seqs: dict[tuple[str, str], tuple[float, int]] = {}
        self._log_counts: dict[str, int] = {}
        # (log, checkpoint id) -> a log offset at or before writes sent before the put.
        self._early: dict[tuple[str, str], int] = {}
        self._thread_re = re.compile(re.escape(prefix) + r"\.[0-9a-f]{32}")
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cas-saver",
                                      initializer=self._enter_worker)

    # --- naming ----------------------------------------------------------------------------

    def _thread_sid(self, thread_id: str) -> str:
        return f"{self.prefix}.{_key(thread_id, 32)}"

    def _sids(self, thread_id: str, ns: str) -> tuple[str, str]:
        main = f"{self._thread_sid(thread_id)}.{'root' if ns == '' else _key(ns, 16)}"
        return main, main + ".log"

    @staticmethod
    def _list_name(channel: str) -> str:
        if channel == MESSAGES:
            return MESSAGES
        name = "m." + channel
        return name if LIST_NAME_RE.fullmatch(name) else "m." + _key(channel, 24)

    @staticmethod
    def _conf(config: RunnableConfig) -> tuple[str, str, str | None]:
        conf = config["configurable"]
        return str(conf["thread_id"]), str(conf.get("checkpoint_ns") or ""), \
            conf.get("checkpoint_id")

    # --- small reads -----------------------------------------------------------------------

    def _head(self, sid: str) -> SessionMeta | None:
        try:
            return self.store.load_meta(sid)
        except SessionNotFound:
            return None

    def _versions(self, sid: str) -> Iterator[tuple[int, _JSON]]:
        """Yield (seq, record) of the session's checkpoints, newest first (this life only)."""
        before = None
        while True:
            try:
                page = self.store.versions(sid, limit=200, before=before)
            except SessionNotFound:
                return
            for v in page:
                if v.op == "delete":
                    return
                try:
                    record = self.store.load_meta(sid, seq=v.seq).metadata
                except VersionNotFound:
                    continue
                if "cp" in record:
                    yield v.seq, record
                if v.op == "create":
                    return  # the life before a delete is not this thread's any more
            if len(page) < 200:
                return
            before = page[-1].seq

    def _locate(self, sid: str, cid: str, head: SessionMeta) -> tuple[int, _JSON] | None:
        if head.metadata.get("cp", {}).get("id") == cid:
            return head.seq, head.metadata
        with self._lock:
            hit = self._seqs.get((sid, cid))
        if hit is not None and hit[0] == head.created_at:
            try:
                record = self.store.load_meta(sid, seq=hit[1]).metadata
                if record.get("cp", {}).get("id") == cid:
                    return hit[1], record
            except VersionNotFound:
                pass
        for seq, record in self._versions(sid):
            if record["cp"]["id"] == cid:
                with self._lock:
                    self._seqs[(sid, cid)] = (head.created_at, seq)
                return seq, record
        return None

    # --- the log session -------------------------------------------------------------------

    def _append_log(self, log: str, items: list[_JSON], title: str) -> int:
        """Append items to the log session (creating it); return the first one's position."""
        try:
            v = self.store.append(log, items)
        except SessionNotFound:
            try:
                v = self.store.create(log, {"title": title}, items)
            except SessionExists:
                v = self.store.append(log, items)
        with self._lock:
            self._log_counts[log] = max(self._log_counts.get(log, 0), v.message_count)
        return v.message_count - len(items)

    def _log_count(self, log: str) -> int:
        with self._lock:
            known = self._log_counts.get(log)
        if known is not None:
            return known  # a lower bound is enough: writes are matched by checkpoint id
        try:
            return self.store.load_meta(log).message_count
        except SessionNotFound:
            return 0

    # --- put -------------------------------------------------------------------------------

    def _same_prefix(self, sid: str, channel: str, value: Any,
                     parent: tuple[int, _JSON] | None) -> int:
        """Return how many leading items of value are the very objects of the parent's list.

        Nonzero only when this process wrote or read the parent's list: those items are
        messages already stored there, so they are neither checked nor encoded again.
        """
        if parent is None or not isinstance(value, list):
            return 0
        name = self._list_name(channel)
        if parent[1].get("lists", {}).get(channel) != name:
            return 0
        with self._lock:
            cached = self._lists.get((sid, name))
        if cached is None or cached[0] != parent[1]["cp"]["id"]:
            return 0
        same = list(map(operator.is_, cached[1], value))
        try:
            return same.index(False)
        except ValueError:
            return len(same)

    def _list_edit(self, sid: str, name: str, value: list[Any], parent: tuple[int, _JSON] | None,
                   channel: str, same: int) -> tuple[int, list[_JSON]]:
        """Return (kept, new items): how the parent's list becomes value."""
        if parent is None or parent[1].get("lists", {}).get(channel) != name:
            return 0, [self.codec.message(m) for m in value]
        pid = parent[1]["cp"]["id"]
        with self._lock:
            cached = self._lists.get((sid, name))
        if cached is not None and cached[0] == pid:
            return same, [self.codec.message(m) for m in value[same:]]
        # Cold (another process wrote the parent, or this one restarted): compare with
        # what is stored, once; the objects are cached for the next step.
        stored = self.store.messages(sid, seq=parent[0], list_name=name)
        encoded = [self.codec.message(m) for m in value]
        keep = 0
        for a, b in zip(stored, encoded, strict=False):
            if a != b:
                break
            keep += 1
        return keep, encoded[keep:]

    def _put(self, config: RunnableConfig, checkpoint: Checkpoint,
            metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        tid, ns, parent_id = self._conf(config)
        sid, log = self._sids(tid, ns)
        cid = checkpoint["id"]
        title = f"LangGraph thread {tid}" + (f" ({ns})" if ns else "")
        head = self._head(sid)
        parent = self._locate(sid, parent_id, head) if parent_id and head else None
        precord = parent[1] if parent else {}
        values, versions = checkpoint["channel_values"], checkpoint["channel_versions"]

        lists: dict[str, str] = {}
        edits: dict[str, tuple[int, list[_JSON]]] = {}
        objects: dict[str, list[Any]] = {}
        vals: dict[str, list[Any]] = {}
        blobs: list[tuple[str, _JSON]] = []
        for ch in sorted(versions):
            if ch not in values:
                continue
            value = values[ch]
            same = self._same_prefix(sid, ch, value, parent)
            if isinstance(value, list) and value and all(
                    isinstance(m, BaseMessage) for m in value[same:]):
                name = self._list_name(ch)
                lists[ch] = name
                edits[name] = self._list_edit(sid, name, value, parent, ch, same)
                objects[name] = list(value)
                continue
            prev = precord.get("vals", {}).get(ch)
            if prev is not None and prev[0] == versions[ch] and ch not in new_versions:
                vals[ch] = prev  # same channel version: the value already stored
            else:
                blobs.append((ch, {"k": "v", **self.codec.blob(value)}))
        # Lists the base had that this checkpoint has not: emptied, so each version's
        # lists are exactly its channels.
        for name in set(precord.get("lists", {}).values()) - set(edits):
            edits[name] = (0, [])
        edits.setdefault(MESSAGES, (0, []))
        if blobs:
            pos = self._append_log(log, [b for _, b in blobs], title + " (log)")
            for i, (ch, _) in enumerate(blobs):
                vals[ch] = [versions[ch], pos + i]

        md: dict[str, Any] = dict(get_checkpoint_metadata(config, metadata))
        record: _JSON = {
            "title": title,
            "lg": {"thread_id": tid, "checkpoint_ns": ns},
            "cp": {"v": checkpoint["v"], "id": cid, "ts": checkpoint["ts"], "parent": parent_id,
                   "channel_versions": versions, "versions_seen": checkpoint["versions_seen"],
                   "updated_channels": checkpoint.get("updated_channels")},
            "vals": vals, "lists": lists, "wo": self._log_count(log),
        }
        with self._lock:
            early = self._early.pop((log, cid), None)
        if early is not None:
            record["wo"] = min(record["wo"], early)
        if "pending_sends" in checkpoint:
            sends = checkpoint.get("pending_sends") or []
            record["cp"]["ps"] = self.codec.blob(sends) if sends else []
        try:
            record["md"] = _json_copy(md)
        except (TypeError, ValueError):
            record["md"] = {k: v for k, v in md.items() if isinstance(v, str | int | float)}
            record["mdb"] = self.codec.blob(md)

        version = None
        if head is None:
            named = {n: e[1] for n, e in edits.items() if n != MESSAGES}
            try:
                version = self.store.create(sid, record, edits[MESSAGES][1], lists=named)
                self._register(tid, ns)
            except SessionExists:
                parent = None
                edits = {n: (0, [self.codec.message(m) for m in objects.get(n, [])])
                         for n in edits}
        if version is None:
            version = self.store.splice(sid, edits, metadata=record,
                                        base=parent[0] if parent else None)
        life = version.created_at if version.op == "create" else (
            head.created_at if head else version.created_at)
        with self._lock:
            for name, objs in objects.items():
                self._lists[(sid, name)] = (cid, objs)
            self._seqs[(sid, cid)] = (life, version.seq)
        return {"configurable": {"thread_id": tid, "checkpoint_ns": ns, "checkpoint_id": cid}}

    def _register(self, thread_id: str, ns: str) -> None:
        reg = self._thread_sid(thread_id)
        patch = {"langgraph": {"thread_id": thread_id, "namespaces": {ns: True}}}
        try:
            self.store.update_metadata(reg, patch)
        except SessionNotFound:
            try:
                self.store.create(reg, {"title": f"LangGraph thread {thread_id}", **patch})
            except SessionExists:
                self.store.update_metadata(reg, patch)

    def _put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        tid, ns, cid = self._conf(config)
        if cid is None:
            raise InvalidArgument("put_writes needs a checkpoint_id", field="checkpoint_id")
        _, log = self._sids(tid, ns)
        items: list[_JSON] = []
        for idx, (ch, value) in enumerate(writes):
            header: _JSON = {"k": "w", "c": cid, "task": task_id,
                             "idx": WRITES_IDX_MAP.get(ch, idx), "ch": ch, "p": task_path}
            if _is_messages(value):
                # Messages go in as chunks of their own: the same chunk as in the
                # checkpoint's list once the reducer has merged them, so stored once.
                header["n"] = len(value)
                items.append(header)
                items.extend(self.codec.message(m) for m in value)
            elif isinstance(value, BaseMessage):
                header.update(n=1, one=True)
                items.extend((header, self.codec.message(value)))
            else:
                header.update(self.codec.blob(value))
                items.append(header)
        if not items:
            return
        main = self._sids(tid, ns)[0]
        with self._lock:
            stored = (main, cid) in self._seqs
        if not stored:
            # LangGraph saves a checkpoint in the background and may send the writes of
            # its tasks first. Note a lower bound of where they land, before appending, so
            # the put records an offset at or before them.
            bound = self._log_count(log)
            with self._lock:
                self._early.setdefault((log, cid), bound)
        self._append_log(log, items, f"LangGraph thread {tid} (log)")

    # --- reads -----------------------------------------------------------------------------

    def _tuple(self, sid: str, log: str, seq: int, record: _JSON, head: SessionMeta,
               writes: _Writes) -> CheckpointTuple:
        cp = record["cp"]
        values: dict[str, Any] = {}
        for ch, name in record.get("lists", {}).items():
            if seq == head.seq:
                count = (head.message_count if name == MESSAGES
                         else head.list_counts.get(name, 0))
                with self._lock:
                    cached = self._lists.get((sid, name))
                if cached is not None and cached[0] == cp["id"] and len(cached[1]) == count:
                    # The head this process just wrote or read: its message objects are
                    # the ones the graph continues with (as LangGraph's own loop does
                    # between steps), so they are not decoded again.
                    values[ch] = list(cached[1])
                    continue
            objs = [self.codec.unmessage(m)
                    for m in self.store.messages(sid, seq=seq, list_name=name)]
            values[ch] = objs
            if seq == head.seq:
                with self._lock:
                    self._lists[(sid, name)] = (cp["id"], list(objs))
        if record.get("vals"):
            for ch, (_, pos) in record["vals"].items():
                values[ch] = self.codec.unblob(self.store.messages(log, pos, 1)[0])
        checkpoint: dict[str, Any] = {
            "v": cp["v"], "id": cp["id"], "ts": cp["ts"], "channel_values": values,
            "channel_versions": cp["channel_versions"], "versions_seen": cp["versions_seen"],
            "updated_channels": cp.get("updated_channels"),
        }
        if "ps" in cp:
            checkpoint["pending_sends"] = self.codec.unblob(cp["ps"]) if cp["ps"] else []
        md = self.codec.unblob(record["mdb"]) if "mdb" in record else record.get("md", {})
        lg = record["lg"]
        conf = {"thread_id": lg["thread_id"], "checkpoint_ns": lg["checkpoint_ns"]}
        parent = None
        if cp.get("parent"):
            parent = {"configurable": {**conf, "checkpoint_id": cp["parent"]}}
        return CheckpointTuple(
            config={"configurable": {**conf, "checkpoint_id": cp["id"]}},
            checkpoint=checkpoint,  # type: ignore[arg-type]
            metadata=md,
            parent_config=parent,  # type: ignore[arg-type]
            pending_writes=writes.of(record.get("wo", 0), cp["id"]),
        )

    def _get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        tid, ns, cid = self._conf(config)
        sid, log = self._sids(tid, ns)
        head = self._head(sid)
        if head is None or "cp" not in head.metadata:
            return None
        found = self._locate(sid, cid, head) if cid else (head.seq, head.metadata)
        if found is None:
            return None
        return self._tuple(sid, log, found[0], found[1], head, _Writes(self, log))

    def _thread_ids(self) -> Iterator[str]:
        cursor = None
        while True:
            page = self.store.list_sessions(limit=1000, cursor=cursor)
            for s in page.sessions:
                if self._thread_re.fullmatch(s.session_id):
                    meta = self._head(s.session_id)
                    if meta is not None:
                        yield str(meta.metadata["langgraph"]["thread_id"])
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _namespaces(self, thread_id: str) -> list[str]:
        meta = self._head(self._thread_sid(thread_id))
        if meta is None:
            return []
        return sorted(meta.metadata.get("langgraph", {}).get("namespaces", {}))

    def _list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
              before: RunnableConfig | None = None,
              limit: int | None = None) -> Iterator[CheckpointTuple]:
        conf = (config or {}).get("configurable", {})
        if conf.get("thread_id") is not None:
            threads: Iterable[str] = [str(conf["thread_id"])]
        else:
            threads = list(self._thread_ids())
        only_id = conf.get("checkpoint_id")
        before_id = (before or {}).get("configurable", {}).get("checkpoint_id")
        left = limit
        for tid in threads:
            nss = ([str(conf["checkpoint_ns"] or "")] if conf.get("checkpoint_ns") is not None
                   else self._namespaces(tid))
            for ns in nss:
                sid, log = self._sids(tid, ns)
                head = self._head(sid)
                if head is None:
                    continue
                writes, seen = _Writes(self, log), set()
                for seq, record in self._versions(sid):
                    cid = record["cp"]["id"]
                    if cid in seen:
                        continue  # the same checkpoint put again: the newest counts
                    seen.add(cid)
                    if (only_id and cid != only_id) or (before_id and cid >= before_id):
                        continue
                    md = record.get("md", {})
                    if filter and any(md.get(k) != v for k, v in filter.items()):
                        continue
                    if left is not None and left <= 0:
                        return
                    yield self._tuple(sid, log, seq, record, head, writes)
                    if left is not None:
                        left -= 1

    # --- deleting, copying, pruning ----------------------------------------------------------

    def _forget(self, sid: str) -> None:
        with self._lock:
            for table in (self._lists, self._seqs):
                for k in [k for k in table if k[0] == sid]:
                    del table[k]
            self._log_counts.pop(sid + ".log", None)

    def _delete(self, sid: str) -> None:
        with contextlib.suppress(SessionNotFound):
            self.store.delete(sid)
        self._forget(sid)

    def _delete_thread(self, thread_id: str) -> None:
        tid = str(thread_id)
        for ns in self._namespaces(tid):
            for sid in self._sids(tid, ns):
                self._delete(sid)
        self._delete(self._thread_sid(tid))

    def _rebuild(self, sid: str, keep: Sequence[tuple[int, _JSON]],
                 thread_id: str | None = None, target: str | None = None) -> None:
        """Write the given checkpoints (oldest first) as a new life of target (default sid)."""
        dst = target or sid
        if target is None:
            self._delete(sid)
        prev: tuple[int, _JSON] | None = None
        for seq, record in keep:
            rec = json.loads(json.dumps(record))
            if thread_id is not None:
                rec["lg"]["thread_id"] = thread_id
                rec["title"] = f"LangGraph thread {thread_id}" + (
                    f" ({rec['lg']['checkpoint_ns']})" if rec["lg"]["checkpoint_ns"] else "")
            names = set(rec.get("lists", {}).values())
            if prev is None:
                msgs = self.store.messages(sid, seq=seq) if MESSAGES in names else []
                named = {n: self.store.messages(sid, seq=seq, list_name=n)
                         for n in names - {MESSAGES}}
                self.store.create(dst, rec, msgs, lists=named)
            else:
                d = self.store.diff(sid, prev[0], seq)
                edits: dict[str, tuple[int, list[Any]]] = {
                    MESSAGES: (d.common_prefix, d.added)}
                for n in names | set(prev[1].get("lists", {}).values()):
                    if n != MESSAGES:
                        items = (self.store.messages(sid, seq=seq, list_name=n)
                                 if n in names else [])
                        edits[n] = (0, items)
                self.store.splice(dst, edits, metadata=rec)
            prev = (seq, record)

    def _copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        src, dst = str(source_thread_id), str(target_thread_id)
        for ns in self._namespaces(src):
            s_main, s_log = self._sids(src, ns)
            d_main, d_log = self._sids(dst, ns)
            if self._head(d_main) is not None:
                raise SessionExists(f"thread {dst!r} already has checkpoints",
                                    session_id=d_main)
            if self._head(s_log) is not None:
                # The log is append-only and positions are what records point at: a fork
                # (one version, no copy) keeps every position valid.
                self.store.fork(s_log, d_log)
            keep = list(self._versions(s_main))
            keep.reverse()
            if keep:
                self._rebuild(s_main, keep, thread_id=dst, target=d_main)
                self._register(dst, ns)

    def _delete_for_runs(self, run_ids: Sequence[str]) -> None:
        runs = set(run_ids)
        if not runs:
            return
        for tid in list(self._thread_ids()):
            for ns in self._namespaces(tid):
                sid, _ = self._sids(tid, ns)
                every = list(self._versions(sid))
                every.reverse()
                keep = [(s, r) for s, r in every if r.get("md", {}).get("run_id") not in runs]
                if len(keep) < len(every):
                    self._rebuild(sid, keep)

    def _prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in ("keep_latest", "delete"):
            raise InvalidArgument(f"unknown prune strategy {strategy!r}", field="strategy")
        for tid in thread_ids:
            if strategy == "delete":
                self._delete_thread(tid)
                continue
            for ns in self._namespaces(str(tid)):
                sid, _ = self._sids(str(tid), ns)
                latest = next(self._versions(sid), None)
                if latest is not None and next(self._versions_after_first(sid), None):
                    self._rebuild(sid, [latest])

    def _versions_after_first(self, sid: str) -> Iterator[tuple[int, _JSON]]:
        it = self._versions(sid)
        next(it, None)
        return it

    # --- the interface: every store call on the saver's own threads -------------------------
    #
    # LangGraph runs a graph's checkpoint calls on threads it starts per run; the SQLite
    # backend keeps a connection (and its page cache) per calling thread. The saver's
    # few long-lived threads keep that to a handful of connections, whoever calls.

    def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if getattr(_worker, "saver", None) is self:
            return fn(*args, **kwargs)
        return self._io.submit(fn, *args, **kwargs).result()

    async def _acall(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return await asyncio.wrap_future(self._io.submit(fn, *args, **kwargs))

    def _enter_worker(self) -> None:
        _worker.saver = self

    def put(self, config: RunnableConfig, checkpoint: Checkpoint,
            metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        """Store a checkpoint as one version of its thread's session; return its config."""
        return self._call(self._put, config, checkpoint, metadata, new_versions)

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        """Append a task's writes for a checkpoint to the thread's log: one version, O(1)."""
        self._call(self._put_writes, config, writes, task_id, task_path)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Return the checkpoint named by config (its thread's latest without an id)."""
        return self._call(self._get_tuple, config)

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None,
             limit: int | None = None) -> Iterator[CheckpointTuple]:
        """Yield checkpoints newest first: of config's thread (and namespace) or all threads."""
        rows = self._list(config, filter=filter, before=before, limit=limit)
        while True:
            row = self._call(next, rows, None)  # lazily: one checkpoint read at a time
            if row is None:
                return
            yield row

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread (cas-store keeps history until GC)."""
        self._call(self._delete_thread, thread_id)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to a new thread (shares all objects)."""
        self._call(self._copy_thread, source_thread_id, target_thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Remove every checkpoint whose metadata names one of run_ids (all threads)."""
        self._call(self._delete_for_runs, run_ids)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's latest checkpoint ("keep_latest"), or none ("delete")."""
        self._call(self._prune, thread_ids, strategy=strategy)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async get_tuple."""
        return await self._acall(self._get_tuple, config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None,
                    limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        """Async list (lazy: one checkpoint read at a time)."""
        rows = self._list(config, filter=filter, before=before, limit=limit)
        while True:
            row = await self._acall(next, rows, None)
            if row is None:
                return
            yield row

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        """Async put."""
        return await self._acall(self._put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        """Async put_writes."""
        await self._acall(self._put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async delete_thread."""
        await self._acall(self._delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async delete_for_runs."""
        await self._acall(self._delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async copy_thread."""
        await self._acall(self._copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async prune."""
        await self._acall(self._prune, thread_ids, strategy=strategy)
