"""The warehouse sink: what the stream produced, from the bus into the warehouse tables.

A consumer in its own group reads the decisions, auction-results, ad-events, conversions,
experience and outside-decisions topics and turns each record into rows of ``warehouse.schema.TABLES``:

==================  =====================================================================
table               rows
==================  =====================================================================
decisions           one per decision (state, action, propensity, model version)
events              auction results (``win``/``loss``), impressions, clicks, conversions
attributions        one per credited (conversion, decision): model, fraction, micros — read
                    from the stored join of the conversion when its first credit record passes
experience          one per experience record (outcome, click, credit, final); the state is
                    left out (join ``decisions`` on ``decision_id``)
outside_decisions   one per outside bidder's decision (``contracts/outside.py``), ids pseudonymised
==================  =====================================================================

Rows go through :class:`~agent_service.warehouse.BatchWriter` (batched, retried with
backoff) with the record's own id as insert id, so a redelivered record is never stored
twice; the sink commits its offsets only after the writer has flushed every row of what it
consumed (a crash in between redelivers, and the ids deduplicate). Ids are the pseudonyms
the service uses everywhere (decisions carry them already; conversions' raw ids are
pseudonymised here with the service's salt): no raw user or device id reaches the warehouse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgspec import Struct, field

from agent_service.attribution.config import canonical_model
from agent_service.config import GaelpConfig, TopicsConfig, WarehouseConfig
from agent_service.contracts.codec import decode, to_builtins
from agent_service.contracts.events import (
    Action,
    AdEvent,
    AuctionResult,
    Conversion,
    Decision,
    RewardParts,
    state_values,
)
from agent_service.contracts.outside import OutsideDecision
from agent_service.errors import BusError, ConfigError, DecodeError, StoreError
from agent_service.identity.model import device_node
from agent_service.metrics import Metrics
from agent_service.pipeline.outcomes import JoinRecord
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.ports.bus import BusRecord, Consumer, EventBus
from agent_service.ports.store import RecordReader
from agent_service.runtime.event_loop import poll_until_idle
from agent_service.warehouse import (
    BatchConfig,
    BatchWriter,
    TransientWarehouseError,
    Warehouse,
    WarehouseError,
)

if TYPE_CHECKING:
    from agent_service.pipeline.experiments import LiveExperiments

__all__ = ["WarehouseSink", "batch_config", "open_warehouse", "run_sink", "start_sink", "stop_sink"]

log = logging.getLogger(__name__)
_CREDIT = ":credit:"


class _ExperienceRow(Struct, frozen=True, kw_only=True):
    """The fields of an ``Experience`` the table keeps (decoding skips the long state vector)."""

    id: str
    event_time: int
    decision_id: str
    kind: str
    action: Action
    propensity: float
    model_version: int
    reward: float
    parts: RewardParts = field(default_factory=RewardParts)
    done: bool = False


class WarehouseSink:
    """Consumes the stream's outputs and writes them to the warehouse (see the module docstring).

    :param bus: the event bus.
    :param topics: topic names.
    :param writer: the batch writer (the sink flushes it and closes it on :meth:`stop`).
    :param store: the state store (decisions for events' person/device; stored joins for attributions).
    :param ids: the service's pseudonymizer (conversions' raw ids).
    :param attribution_model: the stream's attribution model (``join.attribution``; written canonical).
    :param group: consumer group of the sink.
    :param max_records: records per poll.
    """

    def __init__(self, bus: EventBus, topics: TopicsConfig, writer: BatchWriter, store: RecordReader,
                 ids: Pseudonymizer, attribution_model: str, group: str = "gaelp-warehouse",
                 max_records: int = 5_000) -> None:
        self.writer = writer
        self.store = store
        self.ids = ids
        self.model = canonical_model(attribution_model, "join.attribution")
        self.topics = topics
        self.max_records = max_records
        self._consumer: Consumer = bus.consumer(
            [topics.decisions, topics.candidate_decisions, topics.auction_results, topics.ad_events, topics.conversions,
             topics.experience, topics.outside_decisions], group)
        self.rows: Counter[str] = Counter()
        """New rows handed to the writer, per table."""
        self.skipped: Counter[str] = Counter()
        """Records or rows left out, by reason."""
        self.experiments: LiveExperiments | None = None
        """Creative experiments whose per-arm results go to ``experiment_arms`` (from the store, not the bus)."""
        self.experiments_every_s = 10.0
        """Least wall time between two writes of the experiments' results."""
        self._experiments_at = time.monotonic()

    async def start(self) -> None:
        await self._consumer.start()

    async def flush_experiments(self) -> int:
        """Append the experiments' per-arm growth to ``experiment_arms`` now (exactly once; rows sent)."""
        self._experiments_at = time.monotonic()
        if self.experiments is None:
            return 0
        return await self.experiments.flush(self.writer.warehouse, int(time.time() * 1000))

    async def stop(self) -> None:
        """Flush and close the writer, then leave the group (uncommitted records come again)."""
        try:
            await self.flush_experiments()
            await self.writer.close()
        finally:
            await self._consumer.stop()

    async def poll(self, timeout_ms: int = 0) -> int:
        """Write one batch of records and commit it; how many records it had.

        :raises TransientWarehouseError: rows could not be written (nothing committed; the
            rows stay buffered and the records will come again after a restart).
        """
        if self.experiments is not None and time.monotonic() - self._experiments_at >= self.experiments_every_s:
            await self.flush_experiments()
        records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
        if not records:
            if self.writer.pending:
                await self._flush()
                await self._consumer.commit()
            return 0
        for table, rows in (await self._rows(records)).items():
            self.rows[table] += await self._add(table, rows)
        await self._flush()  # (also what a failed earlier poll left buffered)
        await self._consumer.commit()
        return len(records)

    async def drain(self) -> int:
        """Poll until nothing is waiting."""
        return await poll_until_idle(self.poll)

    async def _flush(self) -> None:
        await self.writer.flush()
        if self.writer.pending:
            raise TransientWarehouseError(f"{self.writer.pending} rows not written yet: {self.writer.last_error}")

    async def _add(self, table: str, rows: list[dict[str, Any]]) -> int:
        """Hand rows to the writer in chunks one short of its batch size, flushing each: the
        writer never starts a background flush, so when this returns every row of the poll is
        either written or back in the buffer (never in flight behind the commit)."""
        step = max(1, self.writer.config.max_rows - 1)
        added = 0
        for k in range(0, len(rows), step):
            chunk = rows[k:k + step]
            try:
                added += await self.writer.add_many(table, chunk)
            except DecodeError:  # one bad row must not hold the others back: add them one by one
                for row in chunk:
                    try:
                        added += await self.writer.add(table, row)
                    except DecodeError as exc:
                        self.skipped[f"invalid_{table}"] += 1
                        log.error("warehouse row left out: %s %s", exc.field, exc.reason)
            await self._flush()
        return added

    # --- records → rows ------------------------------------------------------------------------
    async def _rows(self, records: Sequence[BusRecord]) -> dict[str, list[dict[str, Any]]]:
        t = self.topics
        kinds: dict[str, type[Any]] = {t.decisions: Decision, t.candidate_decisions: Decision,
                                       t.auction_results: AuctionResult, t.ad_events: AdEvent,
                                       t.conversions: Conversion, t.experience: _ExperienceRow,
                                       t.outside_decisions: OutsideDecision}
        decoded: list[Any] = []
        candidates: list[Decision] = []
        for rec in records:
            if rec.is_tick:
                continue
            try:
                x = decode(rec.value, kinds[rec.topic])
            except DecodeError:
                self.skipped["undecodable"] += 1  # the flow dead-letters it with the reason
                continue
            (candidates if rec.topic == t.candidate_decisions else decoded).append(x)
        decisions = {d.id: d for d in decoded if isinstance(d, Decision)}
        wanted = {x.decision_id for x in decoded if isinstance(x, AuctionResult | AdEvent)} - decisions.keys()
        decisions.update(await self.store.get_decisions(sorted(wanted)))
        credits = [x for x in decoded if isinstance(x, _ExperienceRow) and x.kind == "credit"]
        attributions = await self._attributions(credits, decisions)
        out: dict[str, list[dict[str, Any]]] = {"decisions": [], "events": [], "attributions": attributions,
                                                "experience": []}
        for c in candidates:  # the candidate's shadow row beside the live one of the same request and imp
            out["decisions"].append({**_decision_row(c), "decision_id": f"{c.id}@v{c.model_version}"})
        for x in decoded:
            if isinstance(x, Decision):
                out["decisions"].append(_decision_row(x))
            elif isinstance(x, AuctionResult | AdEvent):
                out["events"].append(_event_row(x, decisions.get(x.decision_id)))
            elif isinstance(x, Conversion):
                out["events"].append(self._conversion_row(x))
            elif isinstance(x, OutsideDecision):
                out.setdefault("outside_decisions", []).append(self._outside_row(x))
            else:
                out["experience"].append(_experience_row(x))
        return {k: v for k, v in out.items() if v}

    def _conversion_row(self, conv: Conversion) -> dict[str, Any]:
        return {"event_id": conv.id, "event_time": conv.event_time, "kind": "conversion",
                "person_id": self.ids(conv.user_id) if conv.user_id else None,
                "device_id": self.ids(conv.device_id) if conv.device_id else None,
                "value_micros": conv.value_micros}

    def _outside_row(self, d: OutsideDecision) -> dict[str, Any]:
        person = self.ids(d.user_id) if d.user_id else device_node(self.ids(d.device_id))
        return {"decision_id": d.id, "event_time": d.event_time, "request_id": d.request_id, "imp_id": d.imp_id,
                "person_id": person, "device_id": self.ids(d.device_id), "bidder": d.bidder,
                "bidder_version": d.bidder_version, "bid_micros": d.bid_cpm_micros, "channel": d.channel,
                "creative": d.creative, "propensity": d.propensity, "features": d.features}

    async def _attributions(self, credits: Sequence[_ExperienceRow], decisions: dict[str, Decision]
                            ) -> list[dict[str, Any]]:
        """Every credit of each conversion credited in ``credits``, from its stored join."""
        conversions = {exp.id[len(exp.decision_id) + len(_CREDIT):]: exp.event_time for exp in credits
                       if exp.id.startswith(exp.decision_id + _CREDIT)}
        if not conversions:
            return []
        ids = sorted(conversions)
        joins = await self.store.peek_many([f"conv:{c}" for c in ids])
        records = {c: decode(raw, JoinRecord) for c, raw in zip(ids, joins, strict=True) if raw is not None}
        self.skipped["join_expired"] += len(ids) - len(records)
        missing = sorted({d for r in records.values() for d, _ in r.credits} - decisions.keys())
        decisions.update(await self.store.get_decisions(missing))
        rows = []
        for conv_id, record in records.items():
            total = sum(m for _, m in record.credits)
            for decision_id, micros in record.credits:
                dec = decisions.get(decision_id)
                rows.append({"attribution_id": f"{conv_id}:{decision_id}", "event_time": conversions[conv_id],
                             "conversion_id": conv_id, "decision_id": decision_id,
                             "person_id": record.person_id or None,
                             "channel": dec.action.channel if dec is not None else None, "model": self.model,
                             "fraction": micros / total if total else 1.0 / len(record.credits),
                             "credit_micros": micros})
        return rows


def _decision_row(d: Decision) -> dict[str, Any]:
    a = d.action
    return {"decision_id": d.id, "event_time": d.event_time, "request_id": d.request_id, "person_id": d.person_id,
            "device_id": d.device_id, "campaign": d.campaign, "channel": a.channel, "creative": a.creative,
            "segment": a.segment, "bid_micros": a.bid_cpm_micros if d.bid else 0, "propensity": d.propensity,
            "model_version": d.model_version, "shadow": d.shadow, "state": state_values(d),
            "action": {**to_builtins(a), "bid": d.bid, "no_bid_reason": d.no_bid_reason,
                       "value_estimate_micros": d.value_estimate_micros, "imp_id": d.imp_id}}


def _event_row(ev: AuctionResult | AdEvent, dec: Decision | None) -> dict[str, Any]:
    row: dict[str, Any] = {"event_id": ev.id, "event_time": ev.event_time, "decision_id": ev.decision_id,
                           "person_id": dec.person_id if dec else None, "device_id": dec.device_id if dec else None}
    if isinstance(ev, AuctionResult):
        row.update(kind="win" if ev.won else "loss", cost_micros=ev.price_paid_micros,
                   payload={"position": ev.position} if ev.position is not None else None)
    else:
        row["kind"] = ev.kind
    return row


def _experience_row(x: _ExperienceRow) -> dict[str, Any]:
    p = x.parts
    return {"experience_id": x.id, "event_time": x.event_time, "decision_id": x.decision_id,
            "model_version": x.model_version, "propensity": x.propensity, "reward": x.reward,
            "r_immediate": p.immediate, "r_attribution": p.attribution, "r_delayed": p.delayed,
            "r_diversity": p.diversity, "final": x.done, "action": to_builtins(x.action)}


def open_warehouse(cfg: WarehouseConfig, duckdb_path: str | None = None) -> Warehouse | None:
    """The warehouse adapter ``cfg`` names (None when ``backend = "off"``); drivers are imported
    only when used. BigQuery credentials come from the environment (Application Default
    Credentials), or none at all for a local emulator (``bigquery_anonymous``).

    :param cfg: the ``[warehouse]`` settings.
    :param duckdb_path: overrides ``cfg.duckdb_path``.
    """
    if cfg.backend == "off":
        return None
    if cfg.backend == "duckdb":
        from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse

        path = Path(duckdb_path or cfg.duckdb_path or "warehouse.duckdb")
        path.parent.mkdir(parents=True, exist_ok=True)
        return DuckDBWarehouse(path)
    if not cfg.bigquery_project:
        raise ConfigError("warehouse.bigquery_project", "set the GCP project (or GAELP_BIGQUERY_PROJECT)")
    from agent_service.warehouse.bigquery_warehouse import BigQueryWarehouse

    credentials = None
    if cfg.bigquery_anonymous:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    return BigQueryWarehouse.connect(cfg.bigquery_project, cfg.bigquery_dataset,
                                     api_endpoint=cfg.bigquery_api_endpoint or None, credentials=credentials)


async def start_sink(cfg: GaelpConfig, bus: EventBus, store: RecordReader, ids: Pseudonymizer) -> WarehouseSink | None:
    """Open the configured warehouse and start a sink on it (None when ``backend = "off"``).

    The DuckDB file defaults to ``warehouse.duckdb`` beside ``serve.model_dir``.
    """
    warehouse = open_warehouse(cfg.warehouse, cfg.warehouse.duckdb_path
                               or str(Path(cfg.serve.model_dir).parent / "warehouse.duckdb"))
    if warehouse is None:
        return None
    try:
        await warehouse.ensure_tables()
    except WarehouseError:
        await warehouse.close()
        raise
    sink = WarehouseSink(bus, cfg.topics, BatchWriter(warehouse, batch_config(cfg.warehouse)), store, ids,
                         cfg.join.attribution, group=f"{cfg.serve.group_id}-warehouse")
    if cfg.experiments:
        from agent_service.creatives import CatalogueFile
        from agent_service.runtime.assembly import live_experiments

        c = cfg.creatives
        sink.experiments = live_experiments(cfg, store, Metrics(), CatalogueFile(c.catalogue, c.count, c.capacity))
    await sink.start()
    return sink


async def stop_sink(sink: WarehouseSink) -> None:
    """Flush what the sink buffered (uncommitted records come again) and close its warehouse."""
    try:
        await sink.stop()
    except (WarehouseError, BusError) as exc:
        log.warning("warehouse sink stopped with rows unwritten: %s", exc)
    finally:
        await sink.writer.warehouse.close()


async def run_sink(sink: WarehouseSink, metrics: Metrics) -> None:
    """Write what the stream produced, forever; offsets are committed only after rows are written.

    Each time the sink catches up (a poll finds nothing after one that wrote), it logs the rows
    written so far per table (INFO): how an operator, or a test, sees it has written everything.
    """
    caught_up = True
    while True:
        try:
            if await sink.poll(timeout_ms=500):
                caught_up = False
            elif not caught_up:
                caught_up = True
                log.info("warehouse sink caught up; rows written: %s",
                         " ".join(f"{table}={n}" for table, n in sorted(sink.rows.items())))
        except (WarehouseError, BusError, StoreError) as exc:
            log.warning("warehouse sink: %s", exc)
            await asyncio.sleep(1.0)
        except Exception:  # a background loop must outlive a bug: count it, log it, go on
            metrics.errors.labels("internal").inc()
            log.exception("warehouse loop")
            await asyncio.sleep(1.0)


def batch_config(cfg: WarehouseConfig, seed: int | None = None) -> BatchConfig:
    """The batch writer's settings from the ``[warehouse]`` section."""
    return cfg.batch(seed)
