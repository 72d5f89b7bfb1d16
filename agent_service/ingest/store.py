"""The GA4 tables in a DuckDB file (see :mod:`~agent_service.ingest.tables`).

:meth:`Ga4Store.replace` writes one origin's batch in a single transaction: it deletes the
origin's earlier rows, then inserts the new ones, so re-ingesting a file leaves the tables as
one ingestion did, and a failure half-way leaves them as they were. Records are encoded by
msgspec as NDJSON into a temporary file that DuckDB's JSON reader loads with the table's types
(~10x faster than passing Python lists, whose conversion costs ~2 µs a value); ids and the origin
are computed in the INSERT. DuckDB errors are translated to :class:`StoreWriteError`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import duckdb
import msgspec

from agent_service.errors import GaelpError
from agent_service.ingest.ga4 import Ga4Batch, Ga4Conversion, RowError, Session
from agent_service.ingest.tables import GA4_TABLES, GA4_VIEWS
from agent_service.warehouse.schema import DUCKDB_TYPES

__all__ = ["DuckStore", "Ga4Store", "StoreWriteError"]



class StoreWriteError(GaelpError):
    """The DuckDB file could not be opened or written."""


class DuckStore:
    """Ingested tables in one DuckDB database, opened at construction and closed on leaving a
    ``with`` block; a subclass creates its tables in :meth:`_ensure` and lists in ``_countable``
    the tables and views :meth:`count` may read.

    :param path: database file (created if missing), or ``":memory:"``.
    """

    _countable: frozenset[str] = frozenset()

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self.con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            raise StoreWriteError(f"cannot open DuckDB {self.path}: {exc}") from exc
        self._ensure()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the database."""
        self.con.close()

    def count(self, table: str) -> int:
        """Rows of one of the store's tables or views."""
        if table not in self._countable:
            raise KeyError(table)
        row = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def _ensure(self) -> None:
        """Create the tables and views that are missing."""


class Ga4Store(DuckStore):
    """GA4 tables in one DuckDB database.

    :param path: database file (created if missing), or ``":memory:"``.
    """

    _countable = frozenset(GA4_TABLES) | frozenset(GA4_VIEWS)

    def _ensure(self) -> None:
        try:
            for s in GA4_TABLES.values():
                cols = ", ".join(
                    f"{c.name} {DUCKDB_TYPES[c.type]}"
                    + (" PRIMARY KEY" if c.name == s.id_column and s.name != "ga4_session_parts"
                       else (" NOT NULL" if c.required else ""))
                    for c in s.columns)
                self.con.execute(f"CREATE TABLE IF NOT EXISTS {s.name} ({cols})")
            for name, sql in GA4_VIEWS.items():
                self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
        except duckdb.Error as exc:
            raise StoreWriteError(f"DuckDB {self.path}: {exc}") from exc

    def replace(self, batch: Ga4Batch) -> None:
        """Write ``batch`` as the only rows of its origin (earlier ones are deleted).

        :param batch: everything read from one file or table.
        """
        origin = batch.origin
        st = batch.stats
        ingest = [origin, int(time.time() * 1000), st.rows, st.events, st.duplicates, len(batch.errors),
                  st.without_session, len(batch.sessions), len(batch.conversions),
                  min((s.start_ms for s in batch.sessions), default=None),
                  max((s.end_ms for s in batch.sessions), default=None)]
        con = self.con
        with tempfile.TemporaryDirectory(prefix="gaelp-ga4-") as tmp:
            files = {}
            for name, records in (("ga4_session_parts", batch.sessions), ("ga4_conversions", batch.conversions),
                                  ("ga4_ingest_errors", batch.errors)):
                if records:
                    files[name] = Path(tmp) / f"{name}.ndjson"
                    files[name].write_bytes(_ENCODER.encode_lines(records))
            try:
                con.begin()
                for name in GA4_TABLES:
                    con.execute(f"DELETE FROM {name} WHERE origin = ?", [origin])
                for name, path in files.items():
                    con.execute(_LOAD_SQL[name], [origin, str(path)])
                marks = ", ".join("?" * len(ingest))
                con.execute(f"INSERT INTO ga4_ingests VALUES ({marks})", ingest)
                con.commit()
            except duckdb.Error as exc:
                con.rollback()
                raise StoreWriteError(f"DuckDB {self.path}: writing {origin}: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query (reports, tests)."""
        return self.con.execute(sql, list(params or [])).fetchall()


_ENCODER = msgspec.json.Encoder()


def _load_sql(table: str, record: type, exprs: dict[str, str]) -> str:
    """``INSERT INTO table SELECT ... FROM read_json($2)`` of ``record`` dataclasses ($1: the origin)."""
    schema = GA4_TABLES[table]
    types = {c.name: DUCKDB_TYPES[c.type] for c in schema.columns}
    fields = {f.name: types.get(f.name, "BIGINT") for f in dataclasses.fields(record)}
    spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in fields.items()) + "}"
    select = ", ".join(exprs.get(c, c) for c in schema.column_names)
    conflict = " ON CONFLICT DO NOTHING" if table == "ga4_conversions" else ""
    return (f"INSERT INTO {table} ({', '.join(schema.column_names)}) SELECT {select} "
            f"FROM read_json($2, format='newline_delimited', columns={spec}){conflict}")


_LOAD_SQL = {
    "ga4_session_parts": _load_sql("ga4_session_parts", Session, {
        "part_id": "$1 || '|' || user_pseudo_id || '|' || ga_session_id", "origin": "$1"}),
    "ga4_conversions": _load_sql("ga4_conversions", Ga4Conversion, {"origin": "$1"}),
    "ga4_ingest_errors": _load_sql("ga4_ingest_errors", RowError, {
        "error_id": "$1 || '#' || row", "origin": "$1", "row_number": "row"}),
}
