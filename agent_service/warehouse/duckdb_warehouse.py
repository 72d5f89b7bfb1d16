"""The embedded warehouse: a DuckDB file (or ``:memory:``).

Each table has its id column as PRIMARY KEY; a batch is one statement,
``INSERT INTO t SELECT unnest($1::T1[]), ... ON CONFLICT DO NOTHING``, with each column
passed as one list parameter (hundreds of times faster than ``executemany``), so a resent
batch writes only the ids not yet stored. DuckDB calls block, so they run on one dedicated
thread (DuckDB connections are not shared across threads); the event loop stays free.

Errors are mapped once: I/O and transaction conflicts are transient, everything else
(constraint, conversion, catalog, binder errors) permanent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from agent_service.warehouse.port import (
    InsertOutcome,
    PermanentWarehouseError,
    TransientWarehouseError,
    table_schema,
)
from agent_service.warehouse.schema import DUCKDB_TYPES, TABLES, TableSchema

__all__ = ["DuckDBWarehouse"]

T = TypeVar("T")

_TRANSIENT = (duckdb.IOException, duckdb.TransactionException, duckdb.InterruptException)


class DuckDBWarehouse:
    """Warehouse tables in a DuckDB database.

    :param path: database file, or ``":memory:"``.
    :param tables: schemas (default ``schema.TABLES``).
    """

    def __init__(self, path: str | Path = ":memory:", tables: Mapping[str, TableSchema] | None = None) -> None:
        self.path = str(path)
        self.schemas = dict(tables or TABLES)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gaelp-duckdb")
        self._con: duckdb.DuckDBPyConnection | None = None
        self._sql = {name: _insert_sql(s) for name, s in self.schemas.items()}

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            try:
                self._con = duckdb.connect(self.path)
            except duckdb.Error as exc:
                raise TransientWarehouseError(f"cannot open DuckDB {self.path}: {exc}") from exc
        return self._con

    async def ensure_tables(self) -> None:
        """Create the tables (``CREATE TABLE IF NOT EXISTS``)."""

        def create() -> None:
            con = self._connection()
            for s in self.schemas.values():
                cols = ", ".join(
                    f"{c.name} {DUCKDB_TYPES[c.type]}"
                    + (" PRIMARY KEY" if c.name == s.id_column else (" NOT NULL" if c.required else ""))
                    for c in s.columns)
                con.execute(f"CREATE TABLE IF NOT EXISTS {s.name} ({cols})")

        await self._run(_mapped(create))

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> InsertOutcome:
        """Insert new ids of ``rows`` in one statement; known ids are skipped."""
        schema = table_schema(self.schemas, table)
        if not rows:
            return InsertOutcome()
        params = [[r.get(c) for r in rows] for c in schema.column_names]
        sql = self._sql[table]
        await self._run(_mapped(lambda: self._connection().execute(sql, params)))
        return InsertOutcome()

    async def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query (reports, tests)."""
        return await self._run(_mapped(lambda: self._connection().execute(sql, params or []).fetchall()))

    async def close(self) -> None:
        """Close the connection and stop the thread."""

        def shut() -> None:
            if self._con is not None:
                self._con.close()
                self._con = None

        await self._run(shut)
        self._pool.shutdown(wait=True)


def _insert_sql(schema: TableSchema) -> str:
    names = ", ".join(schema.column_names)
    values = ", ".join(
        f"unnest(${i}::VARCHAR[])::JSON" if c.type == "JSON" else f"unnest(${i}::{DUCKDB_TYPES[c.type]}[])"
        for i, c in enumerate(schema.columns, start=1))
    return f"INSERT INTO {schema.name} ({names}) SELECT {values} ON CONFLICT DO NOTHING"


def _mapped(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` with DuckDB errors translated to warehouse errors (run on the DuckDB thread)."""

    def call() -> T:
        try:
            return fn()
        except _TRANSIENT as exc:
            raise TransientWarehouseError(f"DuckDB: {exc}") from exc
        except duckdb.Error as exc:
            raise PermanentWarehouseError(f"DuckDB: {exc}") from exc

    return call
