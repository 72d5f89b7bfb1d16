"""The warehouse sink: rows from real flow records, attributions with fractions, pseudonymous
ids only, no duplicates under redelivery, offsets committed only after the rows are written,
and the same sink against BigQuery (the local recorder of tests/test_warehouse_bigquery.py)
and inside `gaelp simulate`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.memory_store import MemoryStore
from agent_service.config import GaelpConfig, WarehouseConfig
from agent_service.contracts.codec import decode, encode
from agent_service.contracts.events import AdEvent, AuctionResult, Conversion, Decision, IdentityLink
from agent_service.runtime.simulate import run_simulation
from agent_service.runtime.warehouse_sink import WarehouseSink, open_warehouse
from agent_service.warehouse import BatchConfig, BatchWriter, InMemoryWarehouse, TransientWarehouseError
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse
from tests.flowkit import DAY, T0, FlowKit, bid_request
from tests.test_warehouse_bigquery import DATASET, PROJECT, Recorder

HEX = re.compile(r"^(d:)?[0-9a-f]{24}$")


async def stream_records(kit: FlowKit) -> list[tuple[str, bytes]]:
    """What one small journey leaves on the topics the sink reads: two won decisions on a phone,
    an impression and a click, a login, and a conversion on the laptop credited linearly."""
    t = kit.topics
    out: list[tuple[str, bytes]] = []

    async def feed(topic: str, *values: Any) -> list[Any]:
        out.extend((topic, encode(v)) for v in values)
        outputs = await kit.handle(topic, *values)
        out.extend((o.topic, o.value) for o in outputs if o.topic in (t.decisions, t.experience))
        return outputs

    for rid, at in (("r1", T0 + 1_000), ("r2", T0 + 60_000)):
        outs = await kit.handle(t.bid_requests, bid_request(rid, "phone-raw", at))
        out.extend((o.topic, o.value) for o in outs)
        [dec] = [decode(o.value, Decision) for o in outs if o.topic == t.decisions]
        await feed(t.auction_results, AuctionResult(id=f"res-{rid}", event_time=at + 50, decision_id=dec.id, won=True,
                                                    price_paid_micros=1_500))
        await feed(t.ad_events, AdEvent(id=f"imp-{rid}", event_time=at + 60, decision_id=dec.id, kind="impression"))
    await feed(t.ad_events, AdEvent(id="clk-r1", event_time=T0 + 2_000, decision_id=dec.id, kind="click"))
    await kit.handle(t.identity_links, IdentityLink(id="l1", event_time=T0 + 3_000, device_id="phone-raw",
                                                    person_id="alice-raw"),
                     IdentityLink(id="l2", event_time=T0 + 3_000, device_id="laptop-raw", person_id="alice-raw"))
    await kit.ticks(T0 + 3 * DAY)
    await feed(t.conversions, Conversion(id="conv-1", event_time=T0 + 2 * DAY, value_micros=9_000_001,
                                         user_id="alice-raw", device_id="laptop-raw"))
    return out


async def publish(bus: MemoryBus, records: list[tuple[str, bytes]]) -> None:
    for topic, value in records:
        await bus.publish(topic, None, value)


def kit_and_bus() -> tuple[FlowKit, MemoryBus]:
    return FlowKit(MemoryStore(), GaelpConfig().replace("join", attribution="linear")), MemoryBus()


def sink_for(kit: FlowKit, bus: MemoryBus, warehouse: Any, **batch: Any) -> WarehouseSink:
    writer = BatchWriter(warehouse, BatchConfig(seed=0, **batch), sleep=_no_sleep)
    return WarehouseSink(bus, kit.topics, writer, kit.store, kit.flow.decider.ids, kit.cfg.join.attribution)


async def _no_sleep(_: float) -> None:
    return None


async def test_rows_from_flow_records_with_attribution_fractions_and_pseudonyms(tmp_path: Path) -> None:
    kit, bus = kit_and_bus()
    await publish(bus, await stream_records(kit))
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    await wh.ensure_tables()
    sink = sink_for(kit, bus, wh)
    await sink.start()
    assert await sink.drain() > 0
    await sink.stop()
    q = wh.query
    assert (await q("SELECT count(*) FROM decisions"))[0][0] == 2
    kinds = dict(await q("SELECT kind, count(*) FROM events GROUP BY kind"))
    assert kinds == {"win": 2, "impression": 2, "click": 1, "conversion": 1}
    rows = await q("SELECT decision_id, person_id, model, fraction, credit_micros FROM attributions ORDER BY 1")
    alice = kit.flow.decider.ids("alice-raw")
    assert [(p, m) for _, p, m, _, _ in rows] == [(alice, "linear")] * 2
    assert sum(r[4] for r in rows) == 9_000_001 and sum(r[3] for r in rows) == pytest.approx(1.0)
    assert {r[0] for r in rows} == {d for (d,) in await q("SELECT decision_id FROM decisions")}
    kinds = [k for (k,) in await q("SELECT experience_id FROM experience ORDER BY 1")]
    assert sum(":credit:conv-1" in k for k in kinds) == 2 and sum(k.endswith(":outcome") for k in kinds) == 2
    ids = [v for t in ("decisions", "events") for r in await q(f"SELECT person_id, device_id FROM {t}") for v in r if v]
    ids += [p for (p,) in await q("SELECT person_id FROM attributions")]
    assert ids and all(HEX.match(v) for v in ids), [v for v in ids if not HEX.match(v)][:5]  # pseudonyms only
    conv = await q("SELECT person_id, device_id, value_micros FROM events WHERE kind = 'conversion'")
    assert conv == [(alice, kit.flow.decider.ids("laptop-raw"), 9_000_001)]
    await wh.close()


async def test_commit_only_after_the_rows_are_written_and_no_duplicates() -> None:
    kit, bus = kit_and_bus()
    records = await stream_records(kit)
    await publish(bus, records)
    wh = InMemoryWarehouse()
    wh.fail_next(1_000)  # the warehouse is down: every request fails
    first = sink_for(kit, bus, wh, max_attempts=2)
    await first.start()
    with pytest.raises(TransientWarehouseError):
        await first.poll()
    with pytest.raises(TransientWarehouseError):
        await first.stop()  # still down: nothing was committed
    assert bus.lag("gaelp-warehouse", kit.topics.decisions) == 2
    wh._failures.clear()  # back up; the next member of the group gets every record again
    await publish(bus, records)  # and the source redelivers everything once more
    second = sink_for(kit, bus, wh)
    await second.start()
    await second.drain()
    await second.stop()
    assert bus.lag("gaelp-warehouse", kit.topics.experience) == 0
    assert {n: len(rows) for n, rows in wh.tables.items() if rows} == {"decisions": 2, "events": 6, "attributions": 2,
                                                               "experience": 5}
    assert set(wh.writes.values()) == {1}  # each id written once


async def test_bigquery_sink_against_the_recorder() -> None:
    rec = Recorder()
    async with rec.serving() as url:
        cfg = WarehouseConfig(backend="bigquery", bigquery_project=PROJECT, bigquery_dataset=DATASET,
                              bigquery_api_endpoint=url, bigquery_anonymous=True, max_rows=3)
        wh = open_warehouse(cfg)
        try:
            assert wh is not None
            await wh.ensure_tables()
            kit, bus = kit_and_bus()
            records = await stream_records(kit)
            await publish(bus, records + records)  # every record delivered twice
            sink = sink_for(kit, bus, wh, max_rows=3)
            await sink.start()
            await sink.drain()
            await sink.stop()
            assert {t: len(c) for t, c in rec.stored.items() if c} == {"decisions": 2, "events": 6, "attributions": 2,
                                                                  "experience": 5}
            assert all(n == 1 for c in rec.stored.values() for n in c.values()) and rec.resent_after_ack == []
            for body in rec.inserts():
                assert len(body["rows"]) <= 3
                for row in body["rows"]:
                    assert row["insertId"] in json.dumps(row["json"])  # the insert id is the row's own id
        finally:
            if wh is not None:
                await wh.close()


async def test_simulate_writes_the_warehouse_file(tmp_path: Path) -> None:
    cfg = GaelpConfig().replace("simulation", days=0.25, opportunities_per_day=4_000, drain_days=15, users=400)
    run = await run_simulation(cfg, tmp_path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["warehouse"]["file"] == "warehouse.duckdb"
    wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    try:
        counts = {t: (await wh.query(f"SELECT count(*), count(DISTINCT {c}) FROM {t}"))[0] for t, c in (
            ("decisions", "decision_id"), ("events", "event_id"), ("attributions", "attribution_id"),
            ("experience", "experience_id"))}
        assert all(n == distinct for n, distinct in counts.values())  # no duplicate ids
        assert {t: n for t, (n, _) in counts.items()} == report["warehouse"]["rows"]
        assert counts["decisions"][0] == sum(run.daily_decisions.values()) > 0
        kinds = dict(await wh.query("SELECT kind, count(*) FROM events GROUP BY kind"))
        assert kinds.get("win", 0) == kinds.get("impression", 0) == report["impressions"] > 0
        assert kinds.get("click", 0) == report["clicks"]
        assert kinds.get("win", 0) + kinds.get("loss", 0) == sum(run.daily_bids.values())
        assert counts["experience"][0] == run.learner["experience_records"]
        devices = [d for (d,) in await wh.query("SELECT device_id FROM decisions UNION SELECT device_id FROM events")]
        assert all(d is None or HEX.match(d) for d in devices)
    finally:
        await wh.close()
    ident = report["identity"]
    assert ident["devices"] > 0 and 0 <= ident["graph"]["f1"] <= 1
    assert ident["graph"]["recall"] >= ident["login_only"]["recall"]


def test_warehouse_settings_name_the_bad_key(tmp_path: Path) -> None:
    from agent_service.config import load_config
    from agent_service.errors import ConfigError

    bad = tmp_path / "bad.toml"
    for text, key in (('[warehouse]\nbackend = "s3"\n', "warehouse.backend"),
                      ("[warehouse]\nmax_rows = 1\n", "warehouse.max_rows"),
                      ("[warehouse]\nbigquery_anonymous = true\n", "warehouse.bigquery_anonymous"),
                      ("[identity]\nmax_ip_devices = 1\n", "identity.max_ip_devices")):
        bad.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(bad)
        assert err.value.key == key
    with pytest.raises(ConfigError) as err:
        open_warehouse(WarehouseConfig(backend="bigquery"))
    assert err.value.key == "warehouse.bigquery_project"
    bad.write_text('[warehouse]\nbackend = "bigquery"\n')
    cfg = load_config(bad, env={"GAELP_BIGQUERY_PROJECT": "p1", "GAELP_WAREHOUSE_DUCKDB": "/x/w.duckdb"})
    assert (cfg.warehouse.bigquery_project, cfg.warehouse.duckdb_path) == ("p1", "/x/w.duckdb")
    assert open_warehouse(WarehouseConfig(backend="off")) is None
