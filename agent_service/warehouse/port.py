"""The warehouse port: append rows to a table, idempotently by the table's id column.

Contract every adapter honours:

- ``insert(table, rows)`` writes rows whose ids are new and silently skips ids already
  stored (DuckDB: primary key; BigQuery: ``insertId``, deduplicated server-side), so
  resending a batch after an unknown outcome is safe;
- a failure of the whole request raises :class:`TransientWarehouseError` (retry later: 5xx,
  429, rate limits, timeouts, connection errors) or :class:`PermanentWarehouseError`
  (retrying will not help: bad request, unknown table);
- per-row failures come back in :class:`InsertOutcome`: rows to retry, and rows rejected
  for good (with the reason) that the caller dead-letters.

Error hierarchy (extends ``agent_service.errors``)::

    GaelpError
    └── WarehouseError
        ├── TransientWarehouseError
        └── PermanentWarehouseError

Adapters: :class:`~agent_service.warehouse.memory.InMemoryWarehouse` (tests),
:class:`~agent_service.warehouse.duckdb_warehouse.DuckDBWarehouse` (embedded default),
:class:`~agent_service.warehouse.bigquery_warehouse.BigQueryWarehouse` (production).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent_service.errors import GaelpError

if TYPE_CHECKING:
    from agent_service.warehouse.schema import TableSchema

__all__ = ["InsertOutcome", "PermanentWarehouseError", "TransientWarehouseError", "Warehouse", "WarehouseError",
           "table_schema"]


class WarehouseError(GaelpError):
    """The warehouse could not complete an operation."""


class TransientWarehouseError(WarehouseError):
    """The request failed in a way that may pass on retry (nothing or part was written)."""


class PermanentWarehouseError(WarehouseError):
    """The request can never succeed as sent."""


@dataclass(frozen=True)
class InsertOutcome:
    """Per-row result of one insert request (indices into the rows sent)."""

    retry: tuple[int, ...] = ()
    """Rows not written for a transient reason: send them again."""
    rejected: dict[int, str] = field(default_factory=dict)
    """Rows refused for good, with the reason: dead-letter them."""

    @property
    def ok(self) -> bool:
        """True when every row was written (or already present)."""
        return not self.retry and not self.rejected


def table_schema(schemas: Mapping[str, TableSchema], table: str) -> TableSchema:
    """The schema of ``table``; an unknown table is a :class:`PermanentWarehouseError` (no retry helps)."""
    schema = schemas.get(table)
    if schema is None:
        raise PermanentWarehouseError(f"no table {table!r}")
    return schema


class Warehouse(Protocol):
    """Append-only tables with idempotent inserts."""

    async def ensure_tables(self) -> None:
        """Create the tables of ``schema.TABLES`` if they do not exist."""
        ...

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> InsertOutcome:
        """Write ``rows`` (already validated by ``TableSchema.validate``) to ``table``."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
