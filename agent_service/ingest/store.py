"""The GA4 tables in a DuckDB file (see :mod:`~agent_service.ingest.tables`).

:meth:`Ga4Store.replace` writes one origin's batch in a single transaction: it deletes the
origin's earlier rows, then inserts the new ones, so re-ingesting a file leaves the tables as
one ingestion did, and a failure half-way leaves them as they were. Rows go in as one
``INSERT ... SELECT unnest($1::T[]), ...`` per table (columns passed as lists, as the
warehouse's DuckDB adapter does). DuckDB errors are translated to :class:`StoreWriteError`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import astuple
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

from agent_service.errors import GaelpError
from agent_service.ingest.ga4 import Ga4Batch
from agent_service.ingest.tables import GA4_TABLES, GA4_VIEWS
from agent_service.warehouse.schema import TableSchema

__all__ = ["Ga4Store", "StoreWriteError"]

_DUCK_TYPES = {"STRING": "VARCHAR", "INT64": "BIGINT", "FLOAT64": "DOUBLE", "BOOL": "BOOLEAN", "JSON": "JSON"}


class StoreWriteError(GaelpError):
    """The DuckDB file could not be opened or written."""


class Ga4Store:
    """GA4 tables in one DuckDB database.

    :param path: database file (created if missing), or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self.con = duckdb.connect(self.path)
        except duckdb.Error as exc:
            raise StoreWriteError(f"cannot open DuckDB {self.path}: {exc}") from exc
        self._ensure()

    def __enter__(self) -> Ga4Store:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the database."""
        self.con.close()

    def _ensure(self) -> None:
        try:
            for s in GA4_TABLES.values():
                cols = ", ".join(
                    f"{c.name} {_DUCK_TYPES[c.type]}"
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
        parts = [(f"{origin}|{s.user_pseudo_id}|{s.ga_session_id}", origin, *astuple(s)) for s in batch.sessions]
        convs = [(c.conversion_id, origin, *astuple(c)[1:]) for c in batch.conversions]
        errors = [(f"{origin}#{e.row}", origin, e.row, e.field, e.reason, e.excerpt) for e in batch.errors]
        st = batch.stats
        starts = [s.start_ms for s in batch.sessions]
        ingest = [(origin, int(time.time() * 1000), st.rows, st.events, st.duplicates, len(batch.errors),
                   st.without_session, len(parts), len(convs), min(starts, default=None),
                   max((s.end_ms for s in batch.sessions), default=None))]
        con = self.con
        try:
            con.begin()
            for name in GA4_TABLES:
                con.execute(f"DELETE FROM {name} WHERE origin = ?", [origin])
            for name, rows in (("ga4_session_parts", parts), ("ga4_conversions", convs),
                               ("ga4_ingest_errors", errors), ("ga4_ingests", ingest)):
                _insert(con, GA4_TABLES[name], rows)
            con.commit()
        except duckdb.Error as exc:
            con.rollback()
            raise StoreWriteError(f"DuckDB {self.path}: writing {origin}: {exc}") from exc

    def count(self, table: str) -> int:
        """Rows of a table or view."""
        if table not in GA4_TABLES and table not in GA4_VIEWS:
            raise KeyError(table)
        row = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query (reports, tests)."""
        return self.con.execute(sql, list(params or [])).fetchall()


def _insert(con: duckdb.DuckDBPyConnection, schema: TableSchema, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    names = ", ".join(schema.column_names)
    values = ", ".join(f"unnest(${i}::{_DUCK_TYPES[c.type]}[])" for i, c in enumerate(schema.columns, start=1))
    columns = [list(col) for col in zip(*rows, strict=True)]
    conflict = "" if schema.name == "ga4_session_parts" else " ON CONFLICT DO NOTHING"
    con.execute(f"INSERT INTO {schema.name} ({names}) SELECT {values}{conflict}", columns)

