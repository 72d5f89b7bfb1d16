"""Warehouse: schema checks, BatchWriter (size/time triggers, retries, no loss, no duplicates), DuckDB."""

from __future__ import annotations

import asyncio
import json

import pytest

from agent_service.errors import ConfigError, DecodeError
from agent_service.warehouse import (
    TABLES,
    BatchConfig,
    BatchWriter,
    InMemoryWarehouse,
    TransientWarehouseError,
)
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse


def event(i: int, **extra) -> dict:
    return {"event_id": f"e{i}", "event_time": 1_700_000_000_000 + i, "kind": "click", "decision_id": f"d{i}",
            "cost_micros": 1000 * i, "payload": {"i": i}, **extra}


class FakeTime:
    """Clock and sleep that never wait: sleeps advance the clock and are recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def writer(wh, t: FakeTime, **cfg) -> BatchWriter:
    return BatchWriter(wh, BatchConfig(seed=1, **cfg), sleep=t.sleep, clock=t.clock)


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------
def test_schema_validation_names_table_and_column() -> None:
    events = TABLES["events"]
    row = events.validate(event(1))
    assert row["payload"] == '{"i":1}' and row["person_id"] is None
    for bad, field in [
        ({**event(1), "event_time": "soon"}, "events.event_time"),
        ({**event(1), "event_time": True}, "events.event_time"),
        ({k: v for k, v in event(1).items() if k != "kind"}, "events.kind"),
        ({**event(1), "colour": "red"}, "events.colour"),
        ({**event(1), "event_id": ""}, "events.event_id"),
        ({**event(1), "payload": {"x": float("nan")}}, "events.payload"),
    ]:
        with pytest.raises(DecodeError) as err:
            events.validate(bad)
        assert err.value.field == field
    assert set(TABLES) == {"decisions", "events", "attributions", "experience", "experiment_arms", "users",
                           "outside_decisions"}
    for schema in TABLES.values():
        assert schema.columns[0].name == schema.id_column and schema.columns[0].required
        assert all(c.description for c in schema.columns)


def test_batch_config_names_the_bad_key() -> None:
    with pytest.raises(ConfigError, match="warehouse.max_rows"):
        BatchConfig(max_rows=0)
    with pytest.raises(ConfigError, match="warehouse.max_buffered_rows"):
        BatchConfig(max_rows=100, max_buffered_rows=10)


# ---------------------------------------------------------------------------------------
# BatchWriter
# ---------------------------------------------------------------------------------------
async def test_size_trigger_batches_and_duplicates_are_dropped() -> None:
    wh, t = InMemoryWarehouse(), FakeTime()
    w = writer(wh, t, max_rows=10, max_delay_s=60)
    assert await w.add_many("events", [event(i) for i in range(25)]) == 25
    assert await w.add("events", event(3)) is False  # buffered or written already
    await asyncio.sleep(0)  # let the background flush run
    for task in [tb.task for tb in w._tables.values() if tb.task]:
        await task
    assert [len(ids) for _, ids in wh.requests] == [10, 10]
    assert w.pending == 5
    await w.close()
    assert [len(ids) for _, ids in wh.requests] == [10, 10, 5]
    assert len(wh.tables["events"]) == 25 and max(wh.writes.values()) == 1
    assert await w.add("events", event(7)) is False  # recently written: not sent again


async def test_time_trigger_flushes_old_rows_only() -> None:
    wh, t = InMemoryWarehouse(), FakeTime()
    w = writer(wh, t, max_rows=100, max_delay_s=2.0)
    await w.add("events", event(1))
    t.now += 1.0
    await w.flush_due()
    assert wh.requests == []
    t.now += 1.5
    await w.add("decisions", {"decision_id": "d1", "event_time": 5})
    await w.flush_due()
    assert wh.requests == [("events", ["e1"])]
    t.now += 2.0
    await w.flush_due()
    assert wh.requests[-1] == ("decisions", ["d1"])


async def test_background_ticker_applies_the_time_trigger() -> None:
    wh, t = InMemoryWarehouse(), FakeTime()
    flushed_at: list[float] = []

    async def tick(s: float) -> None:  # each tick advances the injected clock and lets the loop run
        t.now += s
        if wh.requests and not flushed_at:
            flushed_at.append(t.now - s)
        await asyncio.sleep(0)

    async with BatchWriter(wh, BatchConfig(max_rows=1000, max_delay_s=2.0), clock=t.clock, tick=tick) as w:
        await w.add("events", event(1))
        for _ in range(100):
            if flushed_at:
                break
            await asyncio.sleep(0)
        assert wh.requests == [("events", ["e1"])]
        assert flushed_at == [2.0]  # on the first tick at which the row had waited max_delay_s


async def test_transient_failures_are_retried_with_backoff_and_nothing_is_lost() -> None:
    wh, t = InMemoryWarehouse(), FakeTime()
    w = writer(wh, t, max_rows=50, backoff_initial_s=0.5, backoff_max_s=4.0, max_attempts=10)
    wh.fail_next(2)  # two failed requests, nothing written
    wh.fail_next(1, written_fraction=0.5)  # unknown outcome: half written, then an error
    await w.add_many("events", [event(i) for i in range(120)])
    await w.close()
    assert len(wh.tables["events"]) == 120
    assert w.retries == 3 and len(t.sleeps) == 3
    caps = [0.5, 1.0, 2.0]
    assert all(0 <= s <= c for s, c in zip(t.sleeps, caps, strict=True))  # full jitter under the cap
    first_ids = wh.requests[0][1]
    assert wh.requests[1][1] == first_ids and wh.requests[2][1] == first_ids  # same rows, same ids
    # Rows acknowledged are never sent again; resent rows were deduplicated by id.
    acknowledged_then_resent = [rid for _, ids in wh.requests[4:] for rid in ids if rid in first_ids]
    assert acknowledged_then_resent == []


async def test_exhausted_retries_keep_rows_and_close_reports_them() -> None:
    wh, t = InMemoryWarehouse(), FakeTime()
    w = writer(wh, t, max_rows=10, max_attempts=3)
    wh.fail_next(100)
    await w.add_many("events", [event(i) for i in range(5)])
    with pytest.raises(TransientWarehouseError, match="5 rows still unwritten"):
        await w.close()
    assert w.pending == 5 and len(wh.requests) == 3
    wh._failures.clear()
    await w.flush()  # the next flush writes them: nothing was lost
    assert len(wh.tables["events"]) == 5 and w.pending == 0


async def test_per_row_outcomes_retry_flaky_rows_and_dead_letter_rejected_ones() -> None:
    wh, t = InMemoryWarehouse(), FakeTime()
    letters = []
    w = BatchWriter(wh, BatchConfig(seed=0), sleep=t.sleep, clock=t.clock, on_dead_letter=letters.append)
    wh.flaky_ids = {"e2", "e5"}
    wh.reject_ids = {"e3"}
    await w.add_many("events", [event(i) for i in range(8)])
    await w.close()
    assert sorted(wh.tables["events"]) == sorted(f"e{i}" for i in range(8) if i != 3)
    assert wh.requests[1][1] == ["e2", "e5"]  # only the flaky rows are resent
    assert [(d.table, d.row["event_id"]) for d in letters] == [("events", "e3")]
    assert "invalid" in letters[0].reason and max(wh.writes.values()) == 1


async def test_permanent_request_failure_dead_letters_the_batch_without_retry() -> None:
    wh, t = InMemoryWarehouse(), FakeTime()
    w = writer(wh, t)
    wh.fail_next(1, kind="permanent")
    await w.add_many("events", [event(i) for i in range(3)])
    await w.close()
    assert len(w.dead_letters) == 3 and w.retries == 0 and wh.tables["events"] == {}


async def test_backpressure_waits_for_space() -> None:
    wh = InMemoryWarehouse()
    w = BatchWriter(wh, BatchConfig(max_rows=5, max_buffered_rows=5, max_delay_s=60))
    await w.add_many("events", [event(i) for i in range(5)])
    await w.add_many("decisions", [{"decision_id": "d", "event_time": 1}])  # waits until events drain
    assert len(wh.tables["events"]) == 5
    await w.close()
    assert "d" in wh.tables["decisions"]


class SlowWarehouse(InMemoryWarehouse):
    """Suspends inside every insert, so rows keep arriving while a batch is in flight."""

    async def insert(self, table, rows):
        for _ in range(3):
            await asyncio.sleep(0)
        return await super().insert(table, rows)


async def test_rows_added_during_a_flush_never_stall_the_writer() -> None:
    wh = SlowWarehouse()
    w = BatchWriter(wh, BatchConfig(max_rows=50, max_buffered_rows=200, max_delay_s=60))

    async def feed() -> None:
        for i in range(0, 2000, 30):
            await w.add_many("events", [event(j) for j in range(i, min(i + 30, 2000))])
        await w.close()

    await asyncio.wait_for(feed(), timeout=30)  # a deadlock would hang here
    assert len(wh.tables["events"]) == 2000 and max(wh.writes.values()) == 1
    assert all(len(ids) <= 50 for _, ids in wh.requests)


class GatedWarehouse(InMemoryWarehouse):
    """Holds every insert until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def insert(self, table, rows):
        self.entered.set()
        await self.gate.wait()
        return await super().insert(table, rows)


async def test_closing_while_the_ticker_is_mid_request_keeps_and_writes_its_rows() -> None:
    wh = GatedWarehouse()
    w = BatchWriter(wh, BatchConfig(max_rows=500, max_delay_s=0.01))
    await w.start()
    await w.add_many("events", [event(i) for i in range(10)])
    await asyncio.wait_for(wh.entered.wait(), timeout=10)  # the time trigger's request is in flight
    closing = asyncio.create_task(w.close())
    await asyncio.sleep(0)  # close() must not stop the ticker inside that request (its rows would be lost)
    wh.gate.set()
    await asyncio.wait_for(closing, timeout=10)
    assert len(wh.tables["events"]) == 10 and w.pending == 0


async def test_bad_rows_are_refused_when_added() -> None:
    w = BatchWriter(InMemoryWarehouse())
    with pytest.raises(DecodeError, match="events.cost_micros"):
        await w.add("events", event(1, cost_micros=1.5))
    with pytest.raises(DecodeError, match="table"):
        await w.add("nope", event(1))
    assert w.pending == 0


# ---------------------------------------------------------------------------------------
# DuckDB adapter
# ---------------------------------------------------------------------------------------
async def test_duckdb_insert_is_idempotent_and_round_trips(tmp_path) -> None:
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    await wh.ensure_tables()
    await wh.ensure_tables()  # idempotent
    rows = [TABLES["events"].validate(event(i)) for i in range(600)]
    assert (await wh.insert("events", rows)).ok
    assert (await wh.insert("events", rows[100:300] + [TABLES["events"].validate(event(600))])).ok
    (count,) = (await wh.query("SELECT count(*) FROM events"))[0]
    assert count == 601
    got = await wh.query("SELECT event_id, event_time, kind, cost_micros, payload, person_id FROM events "
                         "WHERE event_id = 'e7'")
    assert got[0][:4] == ("e7", 1_700_000_000_007, "click", 7000)
    assert json.loads(got[0][4]) == {"i": 7} and got[0][5] is None
    exp = TABLES["experience"].validate({"experience_id": "d1:final", "event_time": 1, "decision_id": "d1",
                                         "reward": 2.5, "final": True, "state": [0.1, 0.2]})
    await wh.insert("experience", [exp])
    assert await wh.query("SELECT reward, final FROM experience") == [(2.5, True)]
    await wh.close()
    again = DuckDBWarehouse(tmp_path / "w.duckdb")  # the file persists
    assert (await again.query("SELECT count(*) FROM events"))[0][0] == 601
    await again.close()


async def test_batch_writer_on_duckdb_end_to_end(tmp_path) -> None:
    wh = DuckDBWarehouse(tmp_path / "e2e.duckdb")
    await wh.ensure_tables()
    async with BatchWriter(wh, BatchConfig(max_rows=64, max_delay_s=0.05)) as w:
        for i in range(300):
            await w.add("attributions", {"attribution_id": f"c{i // 3}:d{i}", "event_time": i,
                                         "conversion_id": f"c{i // 3}", "decision_id": f"d{i}",
                                         "model": "linear", "fraction": 1 / 3, "credit_micros": 333_333})
        await w.add("attributions", {"attribution_id": "c0:d0", "event_time": 0, "conversion_id": "c0",
                                     "decision_id": "d0", "model": "linear", "fraction": 1 / 3})
    assert (await wh.query("SELECT count(*), count(DISTINCT attribution_id) FROM attributions"))[0] == (300, 300)
    await wh.close()
