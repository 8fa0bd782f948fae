"""The PostgreSQL watch (LISTEN/NOTIFY) after its connection is cut by the server."""

from __future__ import annotations

import threading

from servers import PostgresServer

from cas_store import Store
from cas_store.backends.postgres import PostgresBackend


def test_a_cut_listening_connection_is_reopened(pg_server: PostgresServer) -> None:
    url = pg_server.fresh_schema()
    with Store(PostgresBackend(url)) as writer, Store(PostgresBackend(url)) as reader:
        watch = reader.backend.watch()
        try:
            conn = watch.conn  # type: ignore[attr-defined]
            pid = conn.info.backend_pid
            pg_server.admin(f"SELECT pg_terminate_backend({pid})")
            # The loss is noticed on the next wait: "a commit may have landed", since one
            # may have been missed while the connection was down.
            assert watch.wait(5)
            assert watch.conn is not None  # type: ignore[attr-defined]
            assert watch.conn.info.backend_pid != pid  # type: ignore[attr-defined]
            assert not watch.wait(0.3)  # listening again: quiet until a commit
            timer = threading.Timer(0.3, lambda: writer.create("s", {}, []))
            timer.start()
            try:
                assert watch.wait(30)  # and a commit after it wakes the watch again
            finally:
                timer.join()
            assert [e.sid for e in reader.backend.changes(0)] == ["s"]
        finally:
            watch.close()
