"""An in-memory warehouse with failure injection (the test fake of the port).

Rows are kept per table by id (a second insert of an id is skipped, as in the real
adapters). Failures are scripted: :meth:`InMemoryWarehouse.fail_next` makes the next
requests raise (optionally after writing part of the batch — the "unknown outcome" case that
causes duplicates in naive writers), :attr:`reject_ids` refuses rows for good and
:attr:`flaky_ids` fails rows transiently once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent_service.warehouse.port import (
    InsertOutcome,
    PermanentWarehouseError,
    TransientWarehouseError,
    table_schema,
)
from agent_service.warehouse.schema import TABLES, TableSchema

__all__ = ["InMemoryWarehouse"]


class InMemoryWarehouse:
    """Tables as dicts ``id -> row``; every request is recorded in :attr:`requests`.

    :param tables: schemas (default ``schema.TABLES``).
    """

    def __init__(self, tables: Mapping[str, TableSchema] | None = None) -> None:
        self.schemas = dict(tables or TABLES)
        self.tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schemas}
        self.requests: list[tuple[str, list[str]]] = []
        self.writes: dict[str, int] = {}
        self.reject_ids: set[str] = set()
        self.flaky_ids: set[str] = set()
        self._failures: list[tuple[str, float]] = []

    def fail_next(self, n: int = 1, kind: str = "transient", written_fraction: float = 0.0) -> None:
        """Make the next ``n`` requests fail.

        :param n: requests to fail.
        :param kind: ``"transient"`` or ``"permanent"``.
        :param written_fraction: share of the batch written before the failure.
        """
        self._failures += [(kind, written_fraction)] * n

    async def ensure_tables(self) -> None:
        """Tables exist from the start."""

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> InsertOutcome:
        """Write new ids, skip known ones; apply scripted failures."""
        id_col = table_schema(self.schemas, table).id_column
        self.requests.append((table, [r[id_col] for r in rows]))
        store = self.tables[table]
        if self._failures:
            kind, frac = self._failures.pop(0)
            for r in rows[: int(len(rows) * frac)]:
                self._write(store, id_col, r)
            if kind == "permanent":
                raise PermanentWarehouseError("scripted permanent failure")
            raise TransientWarehouseError("scripted transient failure")
        retry, rejected = [], {}
        for i, r in enumerate(rows):
            rid = r[id_col]
            if rid in self.reject_ids:
                rejected[i] = "invalid: scripted rejection"
            elif rid in self.flaky_ids:
                self.flaky_ids.discard(rid)
                retry.append(i)
            else:
                self._write(store, id_col, r)
        return InsertOutcome(tuple(retry), rejected)

    def _write(self, store: dict[str, dict[str, Any]], id_col: str, row: Mapping[str, Any]) -> None:
        rid = row[id_col]
        self.writes[rid] = self.writes.get(rid, 0) + 1
        store.setdefault(rid, dict(row))

    async def close(self) -> None:
        """Nothing to release."""
