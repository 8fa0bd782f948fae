"""Session metadata as objects: small fields, large values and the key order.

A state's metadata is one object of its small top-level fields, one object per value of
at least ``META_VALUE_MIN_BYTES`` (so a patch of another key neither rewrites nor re-reads
it) and, when the caller gave one, an object of its top-level key order. The manifest
names them through a ``MetaRef``. This module reads and stages those objects, and holds
the pure rules around them: merge patches, the summary kept beside each head, the title.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import manifest as M
from .errors import InvalidArgument
from .manifest import MESSAGES
from .model import JSON
from .objectio import stored_json
from .objects import Kind, Oid, canonical_json, object_id

if TYPE_CHECKING:
    from .objectio import ObjectIO

#: A top-level metadata value at least this big (canonical JSON bytes) is its own object,
#: so a patch of another key neither rewrites nor re-reads it (docs/design.md).
META_VALUE_MIN_BYTES = 1024
#: Most top-level names a key order may hold.
KEY_ORDER_MAX = 10_000
#: Longest title a head keeps.
TITLE_MAX = 300

#: Metadata keys a chat UI's session list shows (hermes-webui's ``Session.compact()``:
#: pin, archive, project, profile, model, workspace, token counts and cost, lineage),
#: kept beside each head.
DEFAULT_SUMMARY_KEYS = ("pinned", "archived", "project_id", "profile", "model",
                        "model_provider", "workspace", "personality", "input_tokens",
                        "output_tokens", "estimated_cost", "last_message_at",
                        "parent_session_id")
#: Longest string a summary keeps (a longer value is left out of the summary).
SUMMARY_STR_MAX = 300


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """Return target with an RFC 7396 JSON merge patch applied (inputs are not modified)."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def summary_of(metadata: Mapping[str, Any], keys: Sequence[str]) -> dict[str, JSON]:
    """Return the summary values of a metadata object: its scalars under the given keys."""
    out: dict[str, JSON] = {}
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, bool | int | float) or (
                isinstance(value, str) and len(value) <= SUMMARY_STR_MAX):
            out[key] = value
    return out


def title_of(metadata: Mapping[str, Any]) -> str:
    """Return the session title a metadata object gives (a string, cut to TITLE_MAX)."""
    title = metadata.get("title")
    return title[:TITLE_MAX] if isinstance(title, str) else ""


def read(io: ObjectIO, man: M.Manifest | M.Raw) -> dict[str, JSON]:
    """Return a state's metadata: its fields in the recorded key order (else sorted)."""
    ref = man.meta_ref
    got = io.payloads([ref.meta, *(o for _, o in ref.values)], Kind.META)
    out: dict[str, JSON] = stored_json(got[ref.meta], ref.meta, dict)
    for key, oid in ref.values:
        out[key] = stored_json(got[oid], oid)
    order = key_order(io, ref)
    if ref.values and not order:
        return dict(sorted(out.items()))
    if order:
        ordered = {k: out[k] for k in order if k in out}
        ordered.update(sorted((k, v) for k, v in out.items() if k not in ordered))
        return ordered
    return out

def key_order(io: ObjectIO, ref: M.MetaRef) -> list[str]:
    """Return the recorded top-level key order of a state ([] when none was recorded)."""
    if ref.layout is None:
        return []
    order: list[str] | None = io.cache.get(ref.layout)
    if order is None:
        order = stored_json(io.payloads([ref.layout], Kind.META)[ref.layout], ref.layout,
                            list)
        io.cache[ref.layout] = order
    return order

def put(io: ObjectIO | None, metadata: Mapping[str, JSON],
                  order: Sequence[str] | None, old: M.MetaRef | None = None,
                  kept: Mapping[str, Oid] | None = None) -> M.MetaRef:
    """Stage a state's metadata objects (io=None: only compute their ids).

    Values of at least META_VALUE_MIN_BYTES become objects of their own; one equal to
    old's (same id) is neither staged nor rewritten, so a patch costs what it changes.
    ``kept`` names large values carried over unread (by id) beside ``metadata``.
    """
    small: dict[str, JSON] = {}
    values: list[tuple[str, Oid]] = list((kept or {}).items())
    reuse = {k: o for k, o in old.values} if old is not None else {}
    new: dict[Oid, bytes] = {}
    for key, value in metadata.items():
        payload = canonical_json(value) if isinstance(value, dict | list | str) else b""
        if len(payload) < META_VALUE_MIN_BYTES:
            small[key] = value
            continue
        oid = object_id(Kind.META, payload)
        if reuse.get(key) != oid:
            new[oid] = payload
        values.append((key, oid))
    if io is not None and new:
        # A value another session or version holds already is only refreshed (a
        # fork's or a re-import's large values are not written twice).
        absent = io.backend.missing(new)
        for oid, payload in new.items():
            if oid in absent:
                io.put(Kind.META, payload, oid)
            else:
                io.touch(oid, Kind.META, len(payload))
    meta_payload = canonical_json(small)
    meta = object_id(Kind.META, meta_payload)
    if io is not None and (old is None or old.meta != meta):
        io.put(Kind.META, meta_payload, meta)
    layout = None
    if order:
        layout_payload = canonical_json(list(order))
        layout = object_id(Kind.META, layout_payload)
        if io is not None and (old is None or old.layout != layout):
            io.put(Kind.META, layout_payload, layout)
            io.cache[layout] = list(order)
    return M.MetaRef(meta, layout, tuple(sorted(values)))

def relayout(io: ObjectIO, old: M.MetaRef, metadata: Mapping[str, JSON],
              lists: Iterable[str]) -> list[str] | None:
    """Return the key order after a metadata change (None: the state records none).

    Kept names stay where they were: the metadata keys still present, and every list
    name (an emptied list too, and the given ``lists``). A removed key leaves the
    order; a new key goes before the first list, as in a document's metadata; a new
    list name goes at the end.
    """
    order = key_order(io, old)
    if not order:
        return None
    names = set(lists)
    # A name of the order that was not metadata in the old state is a list's.
    old_meta = set(io.metadata(old.meta)) | {k for k, _ in old.values}
    is_list = {k for k in order if k not in old_meta or k == MESSAGES} | names
    kept = [k for k in order if k in metadata or k in is_list]
    new_keys = [k for k in metadata if k not in set(order)]
    first_list = next((i for i, k in enumerate(kept) if k not in metadata), len(kept))
    out = kept[:first_list] + new_keys + kept[first_list:]
    return out + sorted(names - set(out))

def key_order_arg(key_order: Any, metadata: Mapping[str, JSON]) -> list[str] | None:
    """Validate a caller's key order: unique strings, every metadata key in it."""
    if key_order is None:
        return None
    if isinstance(key_order, str | bytes | Mapping) or not isinstance(key_order, Iterable):
        raise InvalidArgument("key_order must be a list of names", field="key_order")
    order = list(key_order)
    if (len(order) > KEY_ORDER_MAX or not all(isinstance(k, str) for k in order)
            or len(set(order)) != len(order)):
        raise InvalidArgument("key_order must hold unique names", field="key_order")
    missing = [k for k in metadata if k not in set(order)]
    return order + missing
