"""Write tests/data/store_v1.db with the cas-store of commit 551246b (schema 1, metadata whole).

    git archive 551246b cas_store | tar -x -C OLD
    PYTHONPATH=OLD python tests/data/make_store_v1.py tests/data/store_v1.db
"""

from __future__ import annotations

import sqlite3
import sys

from cas_store import open_store


def main(path: str) -> None:
    """Write the store: two sessions, a metadata patch, appends and a suspect wipe."""
    s = open_store(path)
    scenes = {f"scene-{i:03d}": {"summary": "word " * 40, "anchors": list(range(i % 7))}
              for i in range(60)}
    meta = {"title": "Old store", "model": "gpt-4o", "pinned": True, "project_id": "p1",
            "anchor_activity_scenes": scenes, "message_count": 20}
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 5}
            for i in range(20)]
    s.create("old-1", meta, msgs,
             lists={"tool_calls": [{"id": f"c{i}", "result": "r" * 50} for i in range(10)]},
             at=1_700_000_000.0)
    for i in range(20, 40):
        s.append("old-1", [{"role": "user", "content": f"appended {i}"}], at=1_700_000_100.0 + i)
    s.update_metadata("old-1", {"title": "Old store, renamed"}, at=1_700_000_500.0)
    s.save("old-1", msgs[:5], at=1_700_000_600.0)  # a wipe, suspect
    s.create("old-2", {"title": "Second", "archived": True}, msgs[:3], at=1_700_000_000.0)
    s.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("VACUUM")
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()


if __name__ == "__main__":
    main(sys.argv[1])
