"""The decision log's spill file, and the bid batcher overflowing to it while the bus is down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.record_spill import RecordSpill
from agent_service.config import GaelpConfig
from agent_service.errors import BusError
from agent_service.http.app import build_http_app
from tests.flowkit import T0, FlowKit


def test_records_come_back_in_order_across_restarts_and_torn_tails(tmp_path: Path) -> None:
    path = tmp_path / "spill" / "d-0.spill"
    s = RecordSpill(path)
    s.append([(b"k0", b"v0"), (b"k1", b"v1" * 100)])
    s.append([(b"k2", b"")])
    assert s.count == 3 and s.peek(2) == [(b"k0", b"v0"), (b"k1", b"v1" * 100)]
    s.pop()
    assert s.count == 1
    s.append([(b"k3", b"v3")])
    s.close()
    with path.open("ab") as f:  # a crash in the middle of an append
        f.write(b"\x00\x00\x00\x05ab")
    again = RecordSpill(path)  # a restart: only what was not published, the torn record cut off
    assert again.count == 2 and again.peek(10) == [(b"k2", b""), (b"k3", b"v3")]
    again.pop()
    assert again.count == 0 and path.stat().st_size == 0  # emptied: the file starts over
    again.append([(b"k4", b"v4")])
    assert again.peek(10) == [(b"k4", b"v4")]
    again.close()


def test_a_second_process_takes_the_next_file(tmp_path: Path) -> None:
    first = RecordSpill.claim(tmp_path, "decisions-g-c")
    second = RecordSpill.claim(tmp_path, "decisions-g-c")
    assert (first.path.name, second.path.name) == ("decisions-g-c-0.spill", "decisions-g-c-1.spill")
    first.append([(b"a", b"1")])
    first.close()
    back = RecordSpill.claim(tmp_path, "decisions-g-c")  # the holder is gone: its file, with its records
    assert back.path == first.path and back.count == 1
    with pytest.raises(BlockingIOError):
        RecordSpill(second.path)
    back.close()
    second.close()


class _FlakyBus:
    """A bus whose publishing fails while ``down``; records what it published."""

    def __init__(self) -> None:
        self.down = True
        self.published: list[bytes] = []

    async def publish_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        if self.down:
            raise BusError("broker unreachable")
        self.published += [k for k, _ in records if k is not None]


async def test_the_decision_log_overflows_to_disk_and_loses_nothing(tmp_path: Path) -> None:
    kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
    bus = _FlakyBus()
    spill = RecordSpill(tmp_path / "d-0.spill")
    app = build_http_app(kit.flow.decider, bus, kit.topics.decisions, kit.metrics,  # type: ignore[arg-type]
                         clock=lambda: T0 + 12 * 3_600_000, admin_token=None, spill=spill, max_log_backlog=3)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for i in range(10):  # one at a time: the log order is the answer order
            body = {"id": f"r{i}", "imp": [{"id": "1", "bidfloor": 0.5}], "tmax": 10_000,
                    "device": {"ifa": f"dev-{i}"}}
            assert (await client.post("/openrtb2/bid", json=body)).status in (200, 204)
        assert spill.count == 7  # the bus is down: 3 in memory, the 7 oldest on disk
        assert kit.metrics.errors.labels("decision_log_spilled")._value.get() == 7
        bus.down = False
        for _ in range(100):
            if len(bus.published) == 10:
                break
            await asyncio.sleep(0.1)
        assert bus.published == [f"r{i}:1".encode() for i in range(10)]  # all, oldest first, once
        assert spill.count == 0
        assert kit.metrics.errors.labels("decision_log_dropped")._value.get() == 0
    finally:
        await client.close()


async def test_a_shutdown_with_the_bus_down_leaves_the_log_on_disk_for_the_next_process(tmp_path: Path) -> None:
    kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
    bus = _FlakyBus()
    path = tmp_path / "d-0.spill"

    def app(spill: RecordSpill) -> TestClient:
        return TestClient(TestServer(build_http_app(
            kit.flow.decider, bus, kit.topics.decisions, kit.metrics,  # type: ignore[arg-type]
            clock=lambda: T0 + 12 * 3_600_000, admin_token=None, spill=spill, max_log_backlog=100)))

    spill = RecordSpill(path)
    first = app(spill)
    await first.start_server()
    for i in range(4):
        body = {"id": f"s{i}", "imp": [{"id": "1", "bidfloor": 0.5}], "tmax": 10_000, "device": {"ifa": f"d{i}"}}
        await first.post("/openrtb2/bid", json=body)
    await first.close()  # the bus is still down: the 4 in memory go to the file
    spill.close()  # as `gaelp serve` does when it stops
    assert bus.published == []
    bus.down = False
    second = app(RecordSpill(path))  # the next process, same file
    await second.start_server()
    try:
        for _ in range(100):
            if len(bus.published) == 4:
                break
            await asyncio.sleep(0.05)
        assert bus.published == [f"s{i}:1".encode() for i in range(4)]
    finally:
        await second.close()
