"""A deterministic, realistic chat workload and its size floor.

Messages are OpenAI-style chat dicts of 200-2,000 characters of varied text: user turns,
assistant turns (about one in five calls a tool, followed by the tool's JSON result),
and one fixed ~1,500-character system prompt that opens the conversation and is
repeated every ``SYSTEM_EVERY`` messages (as servers re-inject it after compaction).
The text is drawn from a Zipf-weighted synthetic vocabulary, which compresses about
like English prose (zstd level 3, one message at a time: roughly half the raw size).
"""

from __future__ import annotations

import itertools
import json
import random
import string
from typing import Any

import zstandard

from cas_store.objects import canonical_json

SEED = 20240611
SYSTEM_EVERY = 200
VOCAB_SIZE = 6000
POOL_WORDS = 400_000
TOOLS = ("search_docs", "run_sql", "get_weather", "read_file", "http_get", "calculator")

Message = dict[str, Any]


def _vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    """Return synthetic words and their cumulative Zipf weights."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "st", "er", "an"]
    common = str.split("the a to of and in that is for it on with as was be this by at from or"
                       " an are not you have but they we if can will would should data value"
                       " error result session user file query table row function return list"
                       " number time")
    words = list(dict.fromkeys(common))
    while len(words) < VOCAB_SIZE:
        w = "".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if rng.random() < 0.03:
            w += str(rng.randint(0, 999))
        words.append(w)
    weights = [1.0 / (rank + 1) ** 1.07 for rank in range(len(words))]
    return words, list(itertools.accumulate(weights))


def _pool(rng: random.Random, words: list[str], cum: list[float]) -> list[str]:
    """Return a long run of Zipf-drawn words with sentence ends every 6-22 words.

    Messages are slices of it at random offsets: drawing each word anew is ten times
    slower and reads no differently.
    """
    pool = rng.choices(words, cum_weights=cum, k=POOL_WORDS)
    for j in itertools.accumulate(rng.choices(range(6, 23), k=POOL_WORDS // 6)):
        if j >= POOL_WORDS:
            break
        pool[j - 1] += rng.choice(".....?!:")
    return pool


class Workload:
    """The conversation: ``message(i)`` is the same for every store, run and machine."""

    def __init__(self, seed: int = SEED) -> None:
        self.seed = seed
        rng = random.Random(seed)
        words, cum = _vocabulary(rng)
        self.pool = _pool(rng, words, cum)
        self.system_prompt: Message = {"role": "system", "content": self._text(rng, 1500, 1500)}
        self.metadata: dict[str, Any] = {
            "title": "Quarterly report assistant",
            "model": "gpt-4.1-mini",
            "user": "u-1234",
            "tags": ["bench", "long-conversation"],
        }
        self._cache: list[Message] = []
        self._rng = random.Random(seed + 1)
        self._pending: list[Message] = []

    def _text(self, rng: random.Random, lo: int, hi: int) -> str:
        """Return prose-like text of lo..hi characters: a slice of the word pool."""
        target = rng.randint(lo, hi)
        start = rng.randrange(len(self.pool) - target)
        # Every word and its space take at least two characters.
        return " ".join(self.pool[start:start + target // 2 + 1])[:target]

    def _turn(self) -> list[Message]:
        """Return the next turn: one message, or a tool call and its result."""
        rng = self._rng
        i = len(self._cache)
        if i % SYSTEM_EVERY == 0:
            return [dict(self.system_prompt)]
        if i % 2 == 1:
            return [{"role": "user", "content": self._text(rng, 200, 900)}]
        if rng.random() < 0.2:
            call_id = "call_" + "".join(rng.choices(string.ascii_letters + string.digits, k=24))
            args = {"query": self._text(rng, 20, 120), "limit": rng.randint(1, 50)}
            call: Message = {
                "role": "assistant",
                "content": self._text(rng, 200, 600),
                "tool_calls": [{"id": call_id, "type": "function",
                                "function": {"name": rng.choice(TOOLS),
                                             "arguments": json.dumps(args)}}],
            }
            rows = [{"id": rng.randint(1, 10**6), "score": round(rng.random(), 4),
                     "snippet": self._text(rng, 60, 300)} for _ in range(rng.randint(2, 6))]
            result: Message = {"role": "tool", "tool_call_id": call_id,
                               "content": json.dumps({"rows": rows})}
            return [call, result]
        return [{"role": "assistant", "content": self._text(rng, 300, 2000)}]

    def messages(self, n: int) -> list[Message]:
        """Return the first n messages of the conversation (generated once, then cached)."""
        while len(self._cache) < n:
            if not self._pending:
                self._pending = self._turn()
            self._cache.append(self._pending.pop(0))
        return self._cache[:n]


class Floor:
    """Running sums of the messages' own sizes: raw canonical JSON and zstd-3 each alone."""

    def __init__(self) -> None:
        self._cctx = zstandard.ZstdCompressor(level=3)
        self.count = 0
        self.raw = 0
        self.compressed = 0
        self.sizes: list[int] = []  # compressed size after k messages, k = index + 1
        self.raw_sizes: list[int] = []

    def extend(self, messages: list[Message]) -> None:
        """Account for the next messages of the conversation."""
        for m in messages:
            data = canonical_json(m)
            self.raw += len(data)
            self.compressed += len(self._cctx.compress(data))
            self.count += 1
            self.sizes.append(self.compressed)
            self.raw_sizes.append(self.raw)

    def compressed_at(self, n: int) -> int:
        """Return the floor (sum of per-message zstd-3 sizes) of the first n messages."""
        return self.sizes[n - 1] if n else 0

    def raw_at(self, n: int) -> int:
        """Return the canonical JSON size of the first n messages."""
        return self.raw_sizes[n - 1] if n else 0
