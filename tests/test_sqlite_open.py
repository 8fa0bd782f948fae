"""Opening a SQLite store: a current one needs no write, others are set up or refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cas_store import open_store
from cas_store.backends import sqlite as S
from cas_store.errors import CorruptStore, StorageError


def test_a_newer_schema_is_refused_and_a_current_one_opens(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as store:
        store.create("a", {}, [{"role": "user", "content": "hi"}])
    with open_store(path) as store:  # current: opened by the read-only path
        assert store.load("a").messages == [{"role": "user", "content": "hi"}]
    con = sqlite3.connect(path)
    con.execute("UPDATE store_info SET value = ? WHERE key = 'schema'",
                (str(S.SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="schema version"):
        open_store(path)


def test_a_store_missing_a_table_is_damaged_not_set_up_again(tmp_path: Path) -> None:
    # An empty version log made up on open would hide that the history is gone.
    path = tmp_path / "s.db"
    with open_store(path) as store:
        store.create("a", {}, [])
    con = sqlite3.connect(path)
    con.execute("DROP TABLE versions")
    con.commit()
    con.close()
    with open_store(path) as store, pytest.raises(CorruptStore, match="versions table is missing"):
        store.create("b", {}, [{"role": "user", "content": "x"}])
    con = sqlite3.connect(path)
    assert "versions" not in {r[0] for r in con.execute("SELECT name FROM sqlite_schema")}
    con.close()


@pytest.mark.parametrize("table", ["sessions", "objects", "versions", "search_spans"])
def test_a_missing_table_is_named_by_reads_and_by_fsck(tmp_path: Path, table: str) -> None:
    # An open does not look for every table (that cost each open 7 µs): the first
    # statement that needs the missing one says the store is damaged, and fsck reports
    # it instead of failing.
    path = tmp_path / "s.db"
    with open_store(path) as store:
        store.create("a", {}, [{"role": "user", "content": "hi"}])
    with sqlite3.connect(path) as con:
        con.execute(f"DROP TABLE {table}")
    with open_store(path) as store:
        if table in ("sessions", "objects"):
            with pytest.raises(CorruptStore, match=f"its {table} table is missing"):
                store.load("a")
        report = store.fsck()
    assert not report.ok
    assert any(p.kind == "corrupt_store" and f"{table} table is missing" in p.detail
               for p in report.problems)


def test_schema_text_that_is_not_utf8_opens_as_a_damaged_store(tmp_path: Path) -> None:
    # SQLite quotes the damaged schema in its error, and Python cannot decode that: the
    # store must still open (damaged, reads refused with CorruptStore) and fsck report it.
    path = tmp_path / "s.db"
    with open_store(path) as store:
        store.create("a", {}, [{"role": "user", "content": "hi"}])
    con = sqlite3.connect(path)
    con.execute("PRAGMA writable_schema = ON")
    (sql,) = con.execute("SELECT sql FROM sqlite_schema WHERE name = 'search_spans_by_doc'"
                         ).fetchone()
    con.execute("UPDATE sqlite_schema SET sql = CAST(? AS TEXT) WHERE name = ?",
                (sql.encode().replace(b" ON ", b" \xf3\xf3 "), "search_spans_by_doc"))
    con.commit()
    con.close()
    with open_store(path) as store:
        assert isinstance(store.backend.damage, CorruptStore)  # type: ignore[attr-defined]
        with pytest.raises(CorruptStore, match="not UTF-8"):
            store.load("a")
        report = store.fsck()
    assert not report.ok and any(p.kind == "corrupt_store" for p in report.problems)


def test_a_schema_version_that_is_no_number_opens_as_a_damaged_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as store:
        store.create("a", {}, [{"role": "user", "content": "hi"}])
    with sqlite3.connect(path) as con:
        con.execute("UPDATE store_info SET value = 'ready' WHERE key = 'schema'")
    with open_store(path) as store:
        assert "schema version reads 'ready'" in str(store.backend.damage)  # type: ignore[attr-defined]
        with pytest.raises(CorruptStore):
            store.create("b", {}, [])
