"""The warehouse: decisions, events, attributions, experience and experiment arms, written in batches.

- :mod:`~agent_service.warehouse.schema`: the tables (:data:`TABLES`), id column = insert id;
- :mod:`~agent_service.warehouse.port`: the :class:`Warehouse` port and its errors;
- :class:`BatchWriter`: size and time triggers, retries with backoff and jitter, no loss,
  no duplicates;
- adapters: :class:`InMemoryWarehouse` (tests), ``duckdb_warehouse.DuckDBWarehouse``
  (embedded default) and ``bigquery_warehouse.BigQueryWarehouse`` (production), imported
  from their modules so that the domain never imports duckdb or BigQuery.
"""

from agent_service.warehouse.batch import BatchConfig, BatchWriter, RefusedRow
from agent_service.warehouse.memory import InMemoryWarehouse
from agent_service.warehouse.port import (
    InsertOutcome,
    PermanentWarehouseError,
    TransientWarehouseError,
    Warehouse,
    WarehouseError,
)
from agent_service.warehouse.schema import TABLES, Column, TableSchema

__all__ = [
    "TABLES",
    "BatchConfig",
    "BatchWriter",
    "Column",
    "RefusedRow",
    "InMemoryWarehouse",
    "InsertOutcome",
    "PermanentWarehouseError",
    "TableSchema",
    "TransientWarehouseError",
    "Warehouse",
    "WarehouseError",
]
