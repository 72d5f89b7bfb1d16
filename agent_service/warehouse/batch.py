"""Batched, retried, idempotent writes to a :class:`~agent_service.warehouse.port.Warehouse`.

Rows are validated when added (a bad row raises ``DecodeError`` at once, naming the
column), buffered per table, and written when a table holds ``max_rows`` rows (size
trigger, flushed in the background) or its oldest row has waited ``max_delay_s`` (time
trigger, checked by the background task or :meth:`BatchWriter.flush_due`).

A batch stays owned by the writer until the warehouse acknowledges it:
- a transient failure of the request is retried with exponential backoff and full jitter
  (``uniform(0, min(backoff_max_s, backoff_initial_s * multiplier**(attempt-1)))``); after
  ``max_attempts`` the rows go back to the head of the buffer for the next flush — nothing
  is dropped; :meth:`close` raises if rows are still unwritten;
- rows the warehouse reports as transiently failed are resent alone; rows rejected for good
  go to ``on_dead_letter`` with the reason (and ``dead_letters``);
- every row carries its table's id as the insert id, and the writer drops an id it already
  buffers or wrote recently, so no row is sent twice after success and a resent batch is
  deduplicated by the warehouse.

Batching uses wall-clock time (an injected ``clock`` and ``tick``): it is I/O pacing, not event logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent_service.config.batch import BatchConfig
from agent_service.errors import DecodeError
from agent_service.warehouse.port import (
    PermanentWarehouseError,
    TransientWarehouseError,
    Warehouse,
    WarehouseError,
)
from agent_service.warehouse.schema import TABLES, TableSchema

__all__ = ["BatchConfig", "BatchWriter", "RefusedRow"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefusedRow:
    """A row the warehouse refused for good."""

    table: str
    row: dict[str, Any]
    reason: str


class _Table:
    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.rows: list[dict[str, Any]] = []
        self.ids: set[str] = set()  # buffered or in flight
        self.first_at: float | None = None
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None


class BatchWriter:
    """Buffers rows per table and writes them in batches with retries.

    :param warehouse: the adapter written to.
    :param config: batching and retry settings.
    :param tables: table schemas (default: ``schema.TABLES``).
    :param sleep: async sleep used for backoff (inject a fake in tests).
    :param clock: monotonic clock in seconds used for the time trigger.
    :param tick: async sleep between the time trigger's checks (a test steps it with its clock).
    :param on_dead_letter: called with each permanently rejected row.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        config: BatchConfig | None = None,
        *,
        tables: Mapping[str, TableSchema] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        tick: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        on_dead_letter: Callable[[RefusedRow], None] | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.config = config or BatchConfig()
        self._tables = {name: _Table(s) for name, s in (tables or TABLES).items()}
        self._sleep = sleep
        self._clock = clock
        self._tick = tick
        self._rng = random.Random(self.config.seed)
        self._on_dead_letter = on_dead_letter
        self._ticker: asyncio.Task[None] | None = None
        self._space = asyncio.Condition()
        self.dead_letters: list[RefusedRow] = []
        self.written = 0
        self.retries = 0
        self.requests = 0
        self.last_error: WarehouseError | None = None

    # ------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background task of the time trigger."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_loop(), name="gaelp-warehouse-ticker")

    async def close(self) -> None:
        """Stop the time trigger and flush everything; raises if rows remain unwritten."""
        if self._ticker is not None:
            # Stopped while it holds no table's lock: a batch it has taken out of the buffer is
            # written (or put back) before it stops, never dropped with it.
            async with contextlib.AsyncExitStack() as held:
                for t in self._tables.values():
                    await held.enter_async_context(t.lock)
                self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for t in self._tables.values():
            if t.task is not None:
                with contextlib.suppress(WarehouseError):
                    await t.task
        await self.flush()
        left = self.pending
        if left:
            raise TransientWarehouseError(
                f"{left} rows still unwritten after {self.config.max_attempts} attempts: {self.last_error}")

    async def __aenter__(self) -> BatchWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pending(self) -> int:
        """Rows buffered or in flight, over all tables."""
        return sum(len(t.ids) for t in self._tables.values())

    # ------------------------------------------------------------------------------------
    # Adding
    # ------------------------------------------------------------------------------------
    async def add(self, table: str, row: Mapping[str, Any]) -> bool:
        """Validate and buffer one row; False if its id was already buffered or written.

        :param table: table name (see ``schema.TABLES``).
        :param row: column → value.
        """
        return (await self.add_many(table, [row])) == 1

    async def add_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Validate and buffer rows; how many were new. All rows are validated first.

        :param table: table name.
        :param rows: rows for that table.
        """
        t = self._tables.get(table)
        if t is None:
            raise DecodeError("$.table", f"unknown table {table!r}; expected one of {', '.join(self._tables)}")
        clean = [t.schema.validate(r) for r in rows]
        if self.pending >= self.config.max_buffered_rows:
            for name, other in self._tables.items():
                if other.rows:
                    self._kick(name, drain=True)
            async with self._space:
                await self._space.wait_for(lambda: self.pending < self.config.max_buffered_rows)
        added = 0
        id_col = t.schema.id_column
        for r in clean:
            rid = r[id_col]
            if rid in t.ids or rid in t.recent:
                continue
            t.ids.add(rid)
            t.rows.append(r)
            added += 1
        if t.rows and t.first_at is None:
            t.first_at = self._clock()
        if len(t.rows) >= self.config.max_rows:
            self._kick(table)
        return added

    # ------------------------------------------------------------------------------------
    # Flushing
    # ------------------------------------------------------------------------------------
    async def flush(self, table: str | None = None) -> None:
        """Write every buffered row of ``table`` (all tables when None), in batches."""
        for name in [table] if table is not None else list(self._tables):
            t = self._tables[name]
            while t.rows:
                if not await self._flush_one(name):
                    break  # retries exhausted: rows kept for later

    async def flush_due(self) -> None:
        """Flush tables whose oldest buffered row has waited ``max_delay_s``."""
        now = self._clock()
        for name, t in self._tables.items():
            if t.rows and t.first_at is not None and now - t.first_at >= self.config.max_delay_s:
                await self.flush(name)

    def _kick(self, table: str, drain: bool = False) -> None:
        t = self._tables[table]
        if t.task is None or t.task.done():
            t.task = asyncio.create_task(self._background_flush(table, drain), name=f"gaelp-warehouse-{table}")

    async def _background_flush(self, table: str, drain: bool) -> None:
        t = self._tables[table]
        while t.rows and (drain or len(t.rows) >= self.config.max_rows):
            if not await self._flush_one(table):
                return

    async def _tick_loop(self) -> None:
        period = max(self.config.max_delay_s / 4, 0.005)
        while True:
            await self._tick(period)
            try:
                await self.flush_due()
            except WarehouseError as exc:  # rows are kept; surfaced by close()
                log.warning("warehouse flush failed: %s", exc)

    async def _flush_one(self, table: str) -> bool:
        """Write one batch of ``table`` until acknowledged or rejected (True), or out of
        attempts (False: the rows are back at the head of the buffer)."""
        t = self._tables[table]
        cfg = self.config
        async with t.lock:
            batch, t.rows = t.rows[:cfg.max_rows], t.rows[cfg.max_rows:]
            if not t.rows:
                t.first_at = None  # rows left keep the older time: flushed sooner, never later
            attempt = 0
            while batch:
                attempt += 1
                self.requests += 1
                try:
                    outcome = await self.warehouse.insert(table, batch)
                except PermanentWarehouseError as exc:
                    self._dead(t, batch, str(exc))
                    batch = []
                    break
                except TransientWarehouseError as exc:
                    self.last_error = exc
                    outcome = None
                if outcome is not None:
                    retry = set(outcome.retry)
                    done = [r for i, r in enumerate(batch) if i not in retry and i not in outcome.rejected]
                    self._dead(t, [batch[i] for i in sorted(outcome.rejected)],
                               reasons=[outcome.rejected[i] for i in sorted(outcome.rejected)])
                    self._done(t, done)
                    batch = [batch[i] for i in sorted(retry)]
                    if not batch:
                        break
                if attempt >= cfg.max_attempts:
                    t.rows[:0] = batch  # back to the head of the buffer: never dropped
                    t.first_at = t.first_at or self._clock()
                    return False
                self.retries += 1
                cap = min(cfg.backoff_max_s, cfg.backoff_initial_s * cfg.backoff_multiplier ** (attempt - 1))
                await self._sleep(self._rng.uniform(0.0, cap))
        await self._notify_space()
        return True

    def _done(self, t: _Table, rows: list[dict[str, Any]]) -> None:
        id_col = t.schema.id_column
        for r in rows:
            rid = r[id_col]
            t.ids.discard(rid)
            if self.config.recent_ids:
                t.recent[rid] = None
                if len(t.recent) > self.config.recent_ids:
                    t.recent.popitem(last=False)
        self.written += len(rows)

    def _dead(self, t: _Table, rows: list[dict[str, Any]], reason: str = "", reasons: list[str] | None = None) -> None:
        for i, r in enumerate(rows):
            t.ids.discard(r[t.schema.id_column])
            letter = RefusedRow(t.schema.name, r, reasons[i] if reasons else reason)
            self.dead_letters.append(letter)
            log.error("warehouse rejected a %s row: %s", t.schema.name, letter.reason)
            if self._on_dead_letter is not None:
                self._on_dead_letter(letter)

    async def _notify_space(self) -> None:
        async with self._space:
            self._space.notify_all()
