"""A PostgreSQL store of the first schema opens at the current one, its data kept."""

from __future__ import annotations

import psycopg
from servers import PostgresServer

from cas_store import Store
from cas_store.backends.postgres import _MIGRATIONS, SCHEMA_VERSION, PostgresBackend
from cas_store.search import reindex


def test_a_first_schema_store_gains_summary_feed_and_a_stale_index(
        pg_server: PostgresServer) -> None:
    url = pg_server.fresh_schema()
    with Store(PostgresBackend(url)) as store:  # a store written by this code ...
        store.create("a", {}, [{"role": "user", "content": "first words"}], at=20.0)
        store.create("b", {}, [{"role": "user", "content": "second words"}], at=10.0)
        store.append("a", [{"role": "user", "content": "third words"}], at=30.0)
        rows = {t: store.backend._read(f"SELECT * FROM {t}") for t in  # type: ignore[attr-defined]
                ("objects", "versions", "sessions", "store_info")}
    old = pg_server.fresh_schema()
    with psycopg.connect(old, autocommit=True) as conn:  # ... copied into the first schema
        for statement in _MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("CREATE TABLE cas_schema (version integer PRIMARY KEY,"
                     " applied_at double precision NOT NULL)")
        conn.execute("INSERT INTO cas_schema VALUES (1, 0)")
        for o in rows["objects"]:
            conn.execute("INSERT INTO objects (oid, kind, size, stored, wtime, data)"
                         " VALUES (%s,%s,%s,%s,%s,%s)", o[1:])
        for v in rows["versions"]:
            conn.execute("INSERT INTO versions VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", v[:8])
        for h in rows["sessions"]:
            conn.execute("INSERT INTO sessions VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", h[:10])
    backend = PostgresBackend(old)
    with Store(backend) as store:
        found = backend._read("SELECT max(version) FROM cas_schema")[0][0]
        assert found == SCHEMA_VERSION
        # Existing entries are numbered by creation time; the counter continues after them.
        assert [(e.sid, e.seq, e.cursor) for e in backend.changes(0)] == [
            ("b", 1, 1), ("a", 1, 2), ("a", 2, 3)]
        assert backend.last_cursor() == 3
        assert backend.head("a").summary == {}  # type: ignore[union-attr]
        assert backend.search_state() == "stale"
        assert store.fsck().ok  # a stale index is a known state, not damage
        reindex(store)
        assert sorted((h.session_id, h.index) for h in store.search("words").hits) == [
            ("a", 0), ("a", 1), ("b", 0)]
        store.append("b", [{"role": "user", "content": "fourth"}])
        assert backend.changes(3)[0].cursor == 4
        assert store.fsck().ok
