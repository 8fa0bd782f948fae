"""A store with histories worth browsing, written through the engine.

Every version is dated more than a week ago (``at=``); the test server runs without
start-up recovery, so the suspect shrink stays in place for the pages to show.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cas_store import open_store

DAY = 86400.0
MAIN = "trip-lisbon"
MAIN_TITLE = "Trip to Lisbon planning"
RESTORED = "quarterly-report"
RECOVERED = "essay-draft"
HOSTILE = "markup-check"
HOSTILE_TITLE = '<b>bold</b><script src="/evil.js"></script>'
FILLER = 64  # more than one page of the session list (50)

LONG_ANSWER = "\n".join(
    f"Day {d}: " + "walk the old town, tram 28, a pastel de nata break, then a viewpoint. " * 3
    for d in range(1, 9)
)


def main_history() -> list[dict[str, Any]]:
    """The messages of the main session at its largest (version 7): nine of them."""
    return [
        {"role": "system", "content": "You are a helpful travel planner."},
        {"role": "user", "content": "Plan four days in Lisbon in May, please."},
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": "call_weather", "type": "function",
            "function": {"name": "weather_forecast",
                         "arguments": '{"city": "Lisbon", "month": "May"}'}}]},
        {"role": "tool", "tool_call_id": "call_weather",
         "content": '{"high_c": 22, "low_c": 14, "rain_days": 5}'},
        {"role": "assistant", "content": LONG_ANSWER},
        {"role": "user", "content": [
            {"type": "text", "text": "Can we add a day trip to Sintra?"},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/sintra.jpg"}},
        ]},
        {"role": "assistant", "content": "Yes: take the train from Rossio on day 3."},
        {"role": "user", "content": "Great, and a restaurant for the last evening?"},
        {"role": "assistant", "content": "Try a tasca in Alfama; book ahead on weekends."},
    ]


def seed(path: Path, now: float | None = None) -> dict[str, Any]:
    """Write the sample sessions into a new store at path; return facts the tests check."""
    now = time.time() if now is None else now
    t = now - 30 * DAY
    msgs = main_history()
    with open_store(path) as store:
        for i in range(FILLER):
            store.create(
                f"chat-{i:03d}", {"title": f"Filler conversation {i:03d}"},
                [{"role": "user", "content": f"hello {i}"},
                 {"role": "assistant", "content": f"hi {i}"}],
                at=t + i * 60,
            )
        t += DAY
        # The main session: grows, one intentional cut (a retry), then the accident.
        store.create(MAIN, {"title": MAIN_TITLE, "model": "gpt-4o"}, msgs[:2], at=t)
        store.append(MAIN, msgs[2:4], at=t + 60)
        store.append(MAIN, [msgs[4], {"role": "assistant", "content": "(draft, retried)"}],
                     at=t + 120)
        store.rewind(MAIN, 5, [], at=t + 180)  # v4: intentional shrink
        store.append(MAIN, msgs[5:7], at=t + 240)
        store.update_metadata(MAIN, {"tags": ["travel"]}, at=t + 300)
        store.append(MAIN, msgs[7:9], at=t + 360)  # v7: nine messages
        # v8: a caller loaded metadata only and saved it back with no messages.
        store.save(MAIN, [], {"title": MAIN_TITLE, "model": "gpt-4o-mini"}, at=t + 420)
        # A session with a restore already in its history.
        base = [{"role": "user", "content": f"Q{q} figures?"} for q in range(1, 5)]
        store.create(RESTORED, {"title": "Quarterly report draft"}, base, at=t + 500)
        store.save(RESTORED, base[:1], at=t + 560)
        store.restore(RESTORED, 1, at=t + 620)
        store.append(RESTORED, [{"role": "assistant", "content": "Here they are."}],
                     at=t + 680)
        # Markup in data must show as text, never run or load anything.
        store.create(HOSTILE, {"title": HOSTILE_TITLE},
                     [{"role": "user", "content": '<img src="/evil.png" onerror="boom()">hi'}],
                     at=t + 690)
        # A session the store's own recovery repaired after a suspect shrink.
        essay = [{"role": "user", "content": f"Paragraph {k} of the essay."} for k in range(6)]
        store.create(RECOVERED, {"title": "Essay draft"}, essay[:4], at=t + 700)
        store.save(RECOVERED, essay[:1], at=t + 760)
        store.append(RECOVERED, essay[4:], at=t + 820)
        store.recover(RECOVERED, window=60 * DAY)
    return {"main": MAIN, "main_title": MAIN_TITLE, "largest": 7, "shrink": 8,
            "largest_count": 9}
