"""The persistent user DB: the state store's persons snapshotted to the warehouse ``users`` table
and restored from it (``gaelp users``), so a new campaign or a flushed store starts warm.

A snapshot pages through ``ProfileStore.export_profiles`` and writes the rows through a
``BatchWriter`` (any ``Warehouse``: DuckDB or BigQuery), all under one snapshot id. A restore
reads one snapshot back from DuckDB or BigQuery in person order (keyset pages), checks each row (``warehouse.users.profile_of``)
and imports the good ones in batches; a malformed row is counted and reported with its row
number (1-based, person order) and field, and the rest is restored.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from agent_service.errors import ConfigError, DecodeError
from agent_service.ports.store import PersonProfile, ProfileStore
from agent_service.warehouse.batch import BatchConfig, BatchWriter
from agent_service.warehouse.port import Warehouse
from agent_service.warehouse.schema import TABLES
from agent_service.warehouse.users import profile_of, user_row

if TYPE_CHECKING:  # drivers are imported by whoever opens a warehouse, never here
    from agent_service.warehouse.bigquery_warehouse import BigQueryWarehouse
    from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse

__all__ = ["RestoreReport", "SnapshotReport", "SnapshotRowError", "bigquery_latest_snapshot",
           "bigquery_snapshot_rows", "bigquery_user_rows", "duckdb_user_rows", "latest_snapshot", "restore_users",
           "snapshot_rows", "snapshot_users"]

_USERS = TABLES["users"]


@dataclass(frozen=True)
class SnapshotReport:
    snapshot: str
    persons: int
    seconds: float


@dataclass(frozen=True)
class SnapshotRowError:
    """A malformed row: its number in the snapshot (1-based, person order), person and field."""

    row: int
    person_id: str
    field: str
    reason: str


@dataclass
class RestoreReport:
    snapshot: str
    rows: int = 0
    restored: int = 0
    errors_by_field: Counter[str] = field(default_factory=Counter)
    first_errors: list[SnapshotRowError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> int:
        return sum(self.errors_by_field.values())


async def snapshot_users(store: ProfileStore, warehouse: Warehouse, snapshot: str, started_ms: int,
                         batch: int = 1_000, progress: bool = False) -> SnapshotReport:
    """Write every person of ``store`` to ``users`` under ``snapshot``.

    :param started_ms: the snapshot's time (``users.event_time``).
    :param batch: persons per export call and rows per insert request.
    :param progress: a progress bar (persons written) on stderr.
    """
    t0 = time.perf_counter()
    persons = 0
    async with BatchWriter(warehouse, BatchConfig(max_rows=batch, max_buffered_rows=4 * batch)) as writer:
        with tqdm(desc="snapshot", unit="person", disable=not progress, mininterval=0.5) as bar:
            # The next batch is read while this one is turned into rows (Redis works meanwhile).
            ahead: asyncio.Task[tuple[list[PersonProfile], str]] | None = asyncio.create_task(
                store.export_profiles("", batch))
            try:
                while ahead is not None:
                    rows, cursor = await ahead
                    ahead = asyncio.create_task(store.export_profiles(cursor, batch)) if cursor else None
                    persons += await writer.add_many("users", [user_row(p, snapshot, started_ms) for p in rows])
                    bar.update(len(rows))
            finally:
                if ahead is not None:
                    ahead.cancel()
    return SnapshotReport(snapshot, persons, time.perf_counter() - t0)


async def restore_users(rows: AsyncIterator[Mapping[str, Any]], store: ProfileStore, snapshot: str, ttl_s: int,
                        batch: int = 1_000, total: int | None = None, progress: bool = False,
                        keep_errors: int = 10) -> RestoreReport:
    """Import the good rows of ``rows`` into ``store``; malformed ones are counted, not imported.

    :param ttl_s: expiry of the journeys and profiles written (window + slack).
    :param total: rows expected (the progress bar's length).
    :param keep_errors: malformed rows kept in ``first_errors``.
    """
    t0 = time.perf_counter()
    report = RestoreReport(snapshot)
    pending: list[PersonProfile] = []
    # One batch is written while the next is read and checked.
    writing: asyncio.Task[int] | None = None

    async def written() -> None:
        if writing is not None:
            n = await writing
            report.restored += n
            bar.update(n)

    with tqdm(total=total, desc="restore", unit="person", disable=not progress, mininterval=0.5) as bar:
        try:
            async for row in rows:
                report.rows += 1
                try:
                    pending.append(profile_of(row))
                except DecodeError as exc:
                    report.errors_by_field[exc.field] += 1
                    if len(report.first_errors) < keep_errors:
                        report.first_errors.append(
                            SnapshotRowError(report.rows, str(row.get("person_id")), exc.field, exc.reason))
                if len(pending) >= batch:
                    await written()
                    writing, pending = asyncio.create_task(store.import_profiles(pending, ttl_s)), []
            await written()
            writing = asyncio.create_task(store.import_profiles(pending, ttl_s))
            await written()
        finally:
            if writing is not None:
                writing.cancel()
    report.seconds = time.perf_counter() - t0
    return report


async def bigquery_latest_snapshot(warehouse: BigQueryWarehouse) -> tuple[str, int]:
    """The newest snapshot id in BigQuery's ``users`` and its row count; ConfigError when there is none."""
    got = await warehouse.query(f"SELECT snapshot, count(*) AS n FROM `{warehouse.table_id('users')}` "
                                "GROUP BY snapshot ORDER BY max(event_time) DESC, snapshot DESC LIMIT 1")
    if not got:
        raise ConfigError("--snapshot", f"{warehouse.table_id('users')} holds no users snapshot")
    return str(got[0]["snapshot"]), int(got[0]["n"])


async def bigquery_snapshot_rows(warehouse: BigQueryWarehouse, snapshot: str) -> int:
    """Rows of ``snapshot`` in BigQuery's ``users``."""
    got = await warehouse.query(f"SELECT count(*) AS n FROM `{warehouse.table_id('users')}` WHERE snapshot = @snapshot",
                                {"snapshot": snapshot})
    return int(got[0]["n"])


async def bigquery_user_rows(warehouse: BigQueryWarehouse, snapshot: str, batch: int = 1_000
                             ) -> AsyncIterator[dict[str, Any]]:
    """The rows of ``snapshot`` in BigQuery, in person order, ``batch`` per query (keyset paging)."""
    sql = (f"SELECT {', '.join(_USERS.column_names)} FROM `{warehouse.table_id('users')}` WHERE snapshot = @snapshot "
           f"AND (@after IS NULL OR person_id > @after) ORDER BY person_id LIMIT {int(batch)}")
    after: str | None = None
    while True:
        got = await warehouse.query(sql, {"snapshot": snapshot, "after": after})
        for row in got:
            yield row
        if len(got) < batch:
            return
        after = str(got[-1]["person_id"])


async def latest_snapshot(warehouse: DuckDBWarehouse) -> tuple[str, int]:
    """The newest snapshot id in ``users`` and its row count; ConfigError when there is none."""
    got = await warehouse.query("SELECT snapshot, count(*) FROM users GROUP BY snapshot "
                                "ORDER BY max(event_time) DESC, snapshot DESC LIMIT 1")
    if not got:
        raise ConfigError("--snapshot", f"the warehouse {warehouse.path} holds no users snapshot")
    return str(got[0][0]), int(got[0][1])


async def snapshot_rows(warehouse: DuckDBWarehouse, snapshot: str) -> int:
    """Rows of ``snapshot`` in ``users``."""
    [(n,)] = await warehouse.query("SELECT count(*) FROM users WHERE snapshot = ?", [snapshot])
    return int(n)


async def duckdb_user_rows(warehouse: DuckDBWarehouse, snapshot: str, batch: int = 1_000
                           ) -> AsyncIterator[dict[str, Any]]:
    """The rows of ``snapshot`` in person order, ``batch`` per query (keyset paging)."""
    names = _USERS.column_names
    sql = (f"SELECT {', '.join(names)} FROM users WHERE snapshot = ? AND (? IS NULL OR person_id > ?) "
           f"ORDER BY person_id LIMIT {int(batch)}")
    after: str | None = None
    while True:
        got = await warehouse.query(sql, [snapshot, after, after])
        for values in got:
            yield dict(zip(names, values, strict=True))
        if len(got) < batch:
            return
        after = str(got[-1][names.index("person_id")])
