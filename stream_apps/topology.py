"""GAELP's stream topology: every topic, its consumer and what it produces.

    gaelp.bid-requests    ──► decide            ──► gaelp.decisions
    gaelp.auction-results ──► record_outcomes   ──► gaelp.experience   (spend settled, touch stored)
    gaelp.ad-events       ──► record_clicks     ──► gaelp.experience
    gaelp.identity-links  ──► link_identities   ──► (identity graph in the store)
    gaelp.conversions     ──► join_conversions  ──► gaelp.experience   (credit; windows closed → final)
    every input topic     ──► (bad records)     ──► gaelp.dead-letters (with field and reason)
    gaelp.experience      ──► learner (agent_service.runtime.learner_service) ──► versioned weights

Each agent is a thin loop: take a batch of events, hand them to ``Flow.handle`` (the domain,
identical in ``gaelp simulate``), publish its outputs and wait for them to be stored, run the
clean-up, and only then let Faust ack (and so commit) the batch. Store or bus failures are
retried with backoff without acking, so a Redis restart or a broker blip delays the batch
instead of losing it. Topic names come from ``TopicsConfig``.

Faust facts this relies on (faust-streaming 0.15): ``take_events`` turns the stream's own
acking off and acks the yielded events in a ``finally`` once the loop body returns — so a body
that never returns before its effects are stored commits only processed offsets. Auto-commit
of aiokafka is off; Faust commits acked offsets every ``broker_commit_interval``. On a
rebalance (``App._on_partitions_revoked``) and on stop it stops the flow, drops buffered events
that were never handed to an agent (unacked, so the next owner gets them again) and waits in
``consumer.wait_empty()`` for the batches in flight to finish, then commits. A body that raised
would still be acked, which is why an unexpected error does not escape: the batch is retried
a few times, then its records go to the dead-letter topic (nothing is dropped silently).

``BatchWorker`` (the default, ``serve.stream_runtime = "batch"``; ``"faust"`` runs the agents
above) runs the same agents without Faust's per-event machinery: Faust hands every record
through its conductor, a channel queue and the stream's processors — about 130 µs of CPU per
event before a handler runs (``bench/bench_stream.py`` with a no-op handler), a ceiling near 7k
events/s. The batch worker is one aiokafka group member over
every input topic: each fetched batch is split by topic (in the order of the graph above), each
part's effects are stored (``handle_part``), then the batch's outputs are published, its clean-ups
run and only then its positions committed — in a task of its own, while the next batch is fetched
and its effects stored (batches still publish and commit one after another, in fetch order;
``Flow.advance`` skips the joins and closes whose clean-up is pending). When a rebalance is about
to take the partitions (the consumer's revoke hook), the batches in hand are let finish and commit
first, so the next owner starts after them; a batch that cannot finish within ``REVOKE_WAIT_S``
(its store is down) is not waited for and commits only partitions this worker still holds once it
is done. A batch whose effects did not complete is never committed: its
records go to the next owner again, whose effects are the same ones (idempotent by event id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import faust

from agent_service.config import GaelpConfig
from agent_service.errors import BusError, StoreError
from agent_service.metrics import Metrics
from agent_service.pipeline.flow import Flow
from agent_service.pipeline.records import HandleResult, Output, publish_result
from agent_service.ports.bus import BusRecord, Consumer, EventBus

__all__ = ["BatchWorker", "build_app", "handle_batch", "handle_part", "input_topics", "publish_retrying", "to_records"]

log = logging.getLogger(__name__)

BATCH = 2_000
"""Events per handler call at most (more amortises store round trips; fewer lowers latency)."""
WITHIN_S = 0.05
"""How long an agent waits to fill a batch (a handler call costs a fixed number of round trips)."""
POISON_TRIES = 3
"""Attempts of a batch that fails unexpectedly before its records are dead-lettered."""
REVOKE_WAIT_S = 5.0
"""How long a rebalance waits for the batch in hand (it is under aiokafka's rebalance timeout,
beyond which the group would drop this member anyway)."""


def to_records(topic: str, events: Iterable[Any]) -> list[BusRecord]:
    """Faust events as the bus port's records (topic, partition, offset, key, value, headers)."""
    out = []
    for ev in events:
        msg = ev.message
        headers = tuple((k, v) for k, v in (ev.headers or {}).items())
        out.append(BusRecord(topic, msg.partition, msg.offset, msg.key, msg.value, headers))
    return out


async def handle_batch(flow: Flow, bus: EventBus, metrics: Metrics, topic: str, records: list[BusRecord]) -> None:
    """Handle, publish and clean up one batch; return only once its effects are stored."""
    await publish_retrying(bus, metrics, await handle_part(flow, metrics, topic, records), topic)


async def handle_part(flow: Flow, metrics: Metrics, topic: str, records: list[BusRecord]) -> HandleResult:
    """``flow.handle`` until it succeeds: store or bus failures are retried with backoff (effects
    are idempotent); a batch that raises anything else ``POISON_TRIES`` times becomes dead letters."""
    delay, failures = 0.1, 0
    while True:
        try:
            return await flow.handle(topic, records)
        except (StoreError, BusError) as exc:  # transient: retry the whole batch (effects are idempotent)
            metrics.errors.labels("store" if isinstance(exc, StoreError) else "bus").inc()
            log.warning("batch of %d on %s failed (%s); retrying in %.1fs", len(records), topic, exc, delay)
        except Exception as exc:  # a bug or a poison record: never ack it unprocessed, never die
            failures += 1
            metrics.errors.labels("handler").inc()
            log.exception("batch of %d on %s raised %s (try %d)", len(records), topic, type(exc).__name__, failures)
            if failures >= POISON_TRIES:
                return HandleResult([flow.dead_letter(r, "$", f"handler failed: {type(exc).__name__}") for r in records], [])
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def publish_retrying(bus: EventBus, metrics: Metrics, result: HandleResult, what: str) -> None:
    """Publish ``result``'s outputs durably, then run its clean-up, each retried until it succeeds
    (a redelivered output is deduplicated downstream by its id; the clean-ups are idempotent)."""
    delay = 0.1
    while True:
        try:
            await publish_result(bus, HandleResult(result.outputs, []))
            break
        except BusError as exc:
            metrics.errors.labels("bus").inc()
            log.warning("publishing %d records of %s failed (%s); retrying in %.1fs", len(result.outputs), what, exc, delay)
        except Exception:  # a bug: never die, never commit what was not published
            metrics.errors.labels("internal").inc()
            log.exception("publishing %d records of %s raised; retrying in %.1fs", len(result.outputs), what, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
    for step in result.after_publish:
        delay = 0.1
        while True:
            try:
                await step()
                break
            except (StoreError, BusError) as exc:
                metrics.errors.labels("store" if isinstance(exc, StoreError) else "bus").inc()
                log.warning("clean-up after %s failed (%s); retrying in %.1fs", what, exc, delay)
            except Exception:  # a bug: left undone, which is safe (a parked conversion or a due window
                # is found again and its stored effect re-emitted, deduplicated downstream by id)
                metrics.errors.labels("internal").inc()
                log.exception("clean-up after %s raised; skipped", what)
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def build_app(cfg: GaelpConfig, flow: Flow, bus: EventBus, metrics: Metrics) -> faust.App:
    """The Faust app with one agent per input topic (see the module docstring).

    :param cfg: configuration (topic names, broker, group id, session timeout).
    :param flow: the domain handlers.
    :param bus: the producer side used for outputs (awaited before acking).
    :param metrics: where retries are counted.
    """
    s, t = cfg.serve, cfg.topics
    app = faust.App(
        s.group_id, broker=f"kafka://{s.kafka}", store="memory://", web_enabled=False,
        topic_partitions=t.partitions, topic_allow_declare=False, consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.session_timeout_s, broker_heartbeat_interval=max(0.1, s.session_timeout_s / 6),
        broker_commit_every=BATCH, broker_commit_interval=1.0, stream_buffer_maxsize=4 * BATCH,
    )

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, value_type=bytes, key_type=bytes, value_serializer="raw", key_serializer="raw")

    def agent(name: str) -> None:
        @app.agent(topic(name), name=f"gaelp.{name}")
        async def handler(stream: faust.StreamT) -> None:
            # StreamT (faust's typing) lacks take_events; the Stream an agent receives has it
            async for events in cast(faust.Stream, stream).take_events(BATCH, within=WITHIN_S):
                await handle_batch(flow, bus, metrics, name, to_records(name, events))

    for name in input_topics(cfg):
        agent(name)
    return app


def input_topics(cfg: GaelpConfig) -> list[str]:
    """The topics the stream consumes, in the order a batch visits them (touches before conversions)."""
    t = cfg.topics
    return [t.bid_requests, t.outside_decisions, t.auction_results, t.ad_events, t.identity_links, t.conversions]


class BatchWorker:
    """The topology's agents on one aiokafka group member, a fetched batch at a time (see the
    module docstring). Open with ``start``, close with ``stop`` (it lets the batch in hand finish).

    :param cfg: configuration (topic names, group id).
    :param flow: the domain handlers.
    :param bus: the producer side used for outputs and the consumer factory.
    :param metrics: where retries are counted.
    """

    def __init__(self, cfg: GaelpConfig, flow: Flow, bus: EventBus, metrics: Metrics) -> None:
        self.flow, self.bus, self.metrics = flow, bus, metrics
        self.order = input_topics(cfg)
        self._consumer: Consumer = bus.consumer(self.order, cfg.serve.group_id)
        self._consumer.on_revoke(self._finish_in_hand)
        self._in_hand = asyncio.Lock()
        """Held from a fetch's return until its batch's effects are stored and its publishing started."""
        self._publishing: asyncio.Task[None] | None = None
        """The previous batch's outputs being published, its clean-ups run and its positions committed."""
        self._done: dict[tuple[str, int], int] = {}
        """Positions after handled and published records, not committed yet."""
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="gaelp-stream-batch-worker")

    async def stop(self) -> None:
        self._stopping.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            self._task = None
            await self._consumer.stop()

    def assigned(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this worker's group member holds now."""
        return self._consumer.assigned()

    async def _run(self) -> None:
        delay = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    records = await self._consumer.getmany(timeout_ms=int(WITHIN_S * 1000), max_records=BATCH)
                except BusError as exc:
                    self.metrics.errors.labels("bus").inc()
                    log.warning("fetch failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.1
                if records:
                    async with self._in_hand:
                        result = await self._handle(records)
                        await self._published()  # batches publish and commit in fetch order
                        positions = {(rec.topic, rec.partition): rec.offset + 1 for rec in records}
                        self._publishing = asyncio.create_task(self._publish(result, positions),
                                                               name="gaelp-stream-batch-publish")
        finally:
            await self._published()

    async def _handle(self, records: list[BusRecord]) -> HandleResult:
        """Store the batch's effects, part by part in the graph's order; return what to publish."""
        by_topic: dict[str, list[BusRecord]] = {}
        for rec in records:
            by_topic.setdefault(rec.topic, []).append(rec)
        outputs: list[Output] = []
        after: list[Callable[[], Awaitable[None]]] = []
        for name in self.order:
            if name in by_topic:
                part = await handle_part(self.flow, self.metrics, name, by_topic[name])
                outputs += part.outputs
                after += part.after_publish
        return HandleResult(outputs, after)

    async def _publish(self, result: HandleResult, positions: dict[tuple[str, int], int]) -> None:
        """Runs while the next batch is handled: its outputs, its clean-ups, then its commit."""
        await publish_retrying(self.bus, self.metrics, result, "a batch")
        self._done.update(positions)  # only now: every record's effects are stored and published
        await self._commit()

    async def _published(self, timeout: float | None = None) -> bool:
        """Wait for the previous batch's publishing (and commit); False if ``timeout`` passed first."""
        task = self._publishing
        if task is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            return False
        self._publishing = None
        return True

    async def _commit(self) -> None:
        done, self._done = self._done, {}
        try:
            await self._consumer.commit(done)
        except BusError as exc:  # kept for the next commit, unless the partition moves on meanwhile
            self.metrics.errors.labels("bus").inc()
            log.warning("commit failed (%s); retried with the next batch", exc)
            for tp, pos in done.items():
                self._done.setdefault(tp, pos)

    async def _finish_in_hand(self) -> None:
        """Revoke hook: the partitions' next owner should start after the batches in hand."""
        deadline = asyncio.get_running_loop().time() + REVOKE_WAIT_S
        try:
            await asyncio.wait_for(self._in_hand.acquire(), REVOKE_WAIT_S)
        except TimeoutError:
            log.warning("batch in hand not done after %.0fs; its records go to the next owner again", REVOKE_WAIT_S)
            return
        try:
            if not await self._published(max(0.0, deadline - asyncio.get_running_loop().time())):
                log.warning("batch not published after %.0fs; its records go to the next owner again", REVOKE_WAIT_S)
                return
            await self._commit()
        finally:
            self._in_hand.release()
