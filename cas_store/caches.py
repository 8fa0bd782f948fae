"""A store's caches of what it decoded: objects are immutable, so no entry is ever stale.

``SharedCache`` keeps decoded manifests and pages by count; ``ByteCache`` keeps decoded
bytes (a full load's joined batches, its tail's chunk payloads) within a byte budget.
Both are thread-safe LRUs shared by a store's operations. An entry is keyed by object
ids, and what ids name never changes, so nothing is ever invalidated: a commit, a GC or
a repair cannot make an entry wrong (docs/design.md, "Repeat loads").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any


class SharedCache:
    """A bounded, thread-safe LRU of decoded immutable objects, keyed by id."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """Return the cached value or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Cache a value, evicting the least recently used past the limit."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)


class ByteCache:
    """A thread-safe LRU of immutable values of known size, within ``budget`` bytes in all.

    A value is kept the second time it is offered, not the first: what is read once (an
    export, a scan of every session) passes through without pushing out what is read
    again and again, and costs no memory. A budget of 0 keeps nothing; a value larger
    than the budget is not kept.
    """

    #: How many keys offered once are remembered (by hash: about 100 bytes each).
    SEEN = 8192

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """Return the cached value or None."""
        with self._lock:
            got = self._items.get(key)
            if got is None:
                return None
            self._items.move_to_end(key)
            return got[0]

    def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, Any]:
        """Return the cached value of each of these keys that is cached."""
        out: dict[Hashable, Any] = {}
        with self._lock:
            for key in keys:
                got = self._items.get(key)
                if got is not None:
                    self._items.move_to_end(key)
                    out[key] = got[0]
        return out

    def put(self, key: Hashable, value: Any, size: int) -> None:
        """Offer value (size bytes): kept if offered before, evicting the least recent."""
        if size > self.budget:
            return
        with self._lock:
            # A hash, not the key: a batch's key is a tuple of ids, ≈ 1 KB. Two keys
            # sharing a hash only let one in a load early.
            mark = hash(key)
            if mark not in self._seen:
                self._seen[mark] = None
                if len(self._seen) > self.SEEN:
                    self._seen.popitem(last=False)
                return
            old = self._items.pop(key, None)
            if old is not None:
                self.used -= old[1]
            self._items[key] = (value, size)
            self.used += size
            while self.used > self.budget:
                _, (_, dropped) = self._items.popitem(last=False)
                self.used -= dropped

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
