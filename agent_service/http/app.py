"""aiohttp application: ``POST /openrtb2/bid``, ``GET /metrics``, ``GET /healthz``, admin actions.

The bid endpoint answers 200 with a BidResponse, 204 for no bid, 400 naming the field for
invalid JSON or schema. A failure of the store or the bus is answered with a no-bid (204) and
counted, never a 5xx: an exchange treats errors like timeouts and throttles the bidder. The
same holds for any unexpected failure (caught once here, at the edge, logged and counted as
``internal``).

Concurrent requests are decided together (``BidBatcher``): while a batch is being decided,
new requests queue and form the next batch, so the store round trips and the network call are
paid once per batch, not per request; two batches may be in flight, one's CPU work overlapping
the other's Redis round trips. Each request's time budget is ``tmax`` (or the
configured default) minus the network allowance: past it before the reservation the answer is
a no-bid; a bid decided after the whole ``tmax`` is withdrawn before it is answered or logged
(reservation freed, a 204, logged as a no-bid ``tmax_late``).
Decisions are published to the decision log after the answer is sent, gathered for up to
``log_linger_ms`` first (one produce request for many passes: at a few requests per pass, a
produce request per pass cost the bidder more CPU than the agent's model); while the bus is down
they wait in memory and, past a bound, in a local spill file (``RecordSpill``), published oldest
first when the bus is back.

Admin actions need ``Authorization: Bearer <GAELP_ADMIN_TOKEN>``; without a configured token
they are refused.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from agent_service.adapters.record_spill import RecordSpill
from agent_service.contracts.codec import decode_bid_request, encode
from agent_service.contracts.events import Decision
from agent_service.contracts.openrtb import BidRequest
from agent_service.errors import BusError, ConfigError, DecodeError, GaelpError, StoreError
from agent_service.metrics import Metrics
from agent_service.pipeline.decide import Decider, DecideResult
from agent_service.ports.bus import EventBus

__all__ = ["BidBatcher", "build_http_app", "build_metrics_app"]

log = logging.getLogger(__name__)
_OPENRTB = {"x-openrtb-version": "2.6"}
_MAX_BODY = 256 * 1024
_MAX_LOG_BACKLOG = 200_000
_LOG_CHUNK = 512


def _error(status: int, field: str, reason: str) -> web.Response:
    return web.json_response({"error": reason, "field": field}, status=status, headers=_OPENRTB)


class _Pending:
    __slots__ = ("deadline", "event_time", "expires", "future", "req")

    def __init__(self, req: BidRequest, event_time: int, deadline: float, expires: float,
                 future: asyncio.Future[DecideResult]):
        self.req, self.event_time, self.deadline, self.future = req, event_time, deadline, future
        self.expires = expires


class BidBatcher:
    """Decides concurrent bid requests in batches (see the module docstring).

    :param decider: the decision path.
    :param bus: where decisions are logged (after the answers are released).
    :param decisions_topic: topic of the decision log.
    :param metrics: service metrics.
    :param max_batch: most requests per batch.
    :param linger_s: how long a batch may fill before it is decided.
    :param max_passes: batches decided at once: while one waits for Redis, the next one's agent
        pass runs (the reservation is atomic in Redis and a duplicate request's decision is stored
        once, so overlapping passes are safe).
    :param spill: where decision-log records go while the bus is down and more than
        ``max_log_backlog`` wait (None: they are dropped and counted).
    :param max_log_backlog: decision-log records kept in memory while the bus is down.
    :param linger: async sleep of the linger (a test holds it open until its requests queued).
    :param log_linger_s: how long decisions gather before they are published (0: after each
        pass); a full chunk is published at once.
    """

    def __init__(self, decider: Decider, bus: EventBus, decisions_topic: str, metrics: Metrics,
                 max_batch: int = 256, linger_s: float = 0.0, max_passes: int = 2,
                 spill: RecordSpill | None = None, max_log_backlog: int = _MAX_LOG_BACKLOG,
                 log_linger_s: float = 0.0,
                 linger: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.decider, self.bus, self.topic, self.metrics = decider, bus, decisions_topic, metrics
        self.spill, self.max_log_backlog = spill, max_log_backlog
        self.max_batch = max_batch
        self.max_passes = max_passes
        self.linger_s = linger_s
        self._linger = linger
        self.log_linger_s = log_linger_s
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log: collections.deque[Decision] = collections.deque()
        self._log_wake = asyncio.Event()
        self._log_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gaelp-bid-batcher")
        self._log_task = asyncio.create_task(self._publish_log(), name="gaelp-decision-log")
        if self.spill is not None and self.spill.count:  # left by a previous process: publish them first
            log.info("publishing %d spilled decision-log records", self.spill.count)
            self._log_wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._log_task is not None:
            self._log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
            self._log_task = None
        with contextlib.suppress(BusError):
            await self._drain_log()
        # The bus is down at shutdown: the next process publishes what is left.
        if self._log and self._spill_to_disk(list(self._log)):
            self._log.clear()
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(BusError("the service is stopping"))
        self._queue.clear()

    async def decide(self, req: BidRequest, event_time: int, deadline: float,
                     expires: float = float("inf")) -> DecideResult:
        """The decision for one request, decided with whatever else is waiting.

        :param deadline: ``decider.timer()`` by which a bid must be reserved.
        :param expires: ``decider.timer()`` after which an answer is useless (``tmax``): a bid
            decided later is withdrawn (reservation freed, logged as a no-bid ``tmax_late``)."""
        if self._task is None:
            raise BusError("BidBatcher used before start()")
        fut: asyncio.Future[DecideResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(req, event_time, deadline, expires, fut))
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        passes: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    if self.linger_s > 0 and len(self._queue) < self.max_batch:
                        await self._linger(self.linger_s)  # let concurrent requests join this pass
                    batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                    passes.add(task := asyncio.create_task(self._decide(batch)))
                    task.add_done_callback(passes.discard)
                    if len(passes) >= self.max_passes:  # wait for a pass to finish; requests queue meanwhile
                        await asyncio.wait(passes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in passes:
                task.cancel()

    async def _decide(self, batch: list[_Pending]) -> None:
        self.metrics.batch_size.observe(len(batch))
        try:
            results = await self.decider.decide([(p.req, p.event_time) for p in batch], [p.deadline for p in batch])
        except Exception as exc:  # the edge: every failure becomes a no-bid for these requests, never a crash
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        now = self.decider.timer()
        late = [k for k, (p, r) in enumerate(zip(batch, results, strict=True)) if r.response is not None
                and now > p.expires]
        for k in late:  # answers past tmax: withdrawn before anyone sees them, so the log shows no-bids
            try:
                results[k] = DecideResult(None, await self.decider.withdraw(results[k].decisions, "tmax_late"))
            except (StoreError, BusError) as exc:  # the reservation stays until its TTL; still a no-bid
                self.metrics.errors.labels("bid_path").inc()
                log.warning("withdrawing a late bid failed: %s", exc)
                results[k] = DecideResult(None, results[k].decisions)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)
            self._log.extend(result.decisions)
        if len(self._log) > self.max_log_backlog:  # the bus is down: keep bidding; the oldest go to disk
            excess = [self._log.popleft() for _ in range(len(self._log) - self.max_log_backlog)]
            if self._spill_to_disk(excess):
                self.metrics.errors.labels("decision_log_spilled").inc(len(excess))
            else:
                self.metrics.errors.labels("decision_log_dropped").inc(len(excess))
        self._log_wake.set()

    async def _publish_log(self) -> None:
        """Publish decisions to the decision log off the answer path (the decider has stored them)."""
        while True:
            await self._log_wake.wait()
            if self.log_linger_s > 0 and len(self._log) < _LOG_CHUNK:
                await asyncio.sleep(self.log_linger_s)  # let more passes join this produce request
            self._log_wake.clear()
            try:
                await self._drain_log()
            except BusError as exc:
                self.metrics.errors.labels("decision_log").inc()
                log.warning("decision log publish failed: %s", exc)
                await asyncio.sleep(0.5)
                self._log_wake.set()

    def _spill_to_disk(self, decisions: list[Decision]) -> bool:
        """Append decisions to the spill file; False if there is none or it cannot be written."""
        if self.spill is None:
            return False
        try:
            self.spill.append(_log_records(decisions))
        except OSError as exc:
            log.error("spilling the decision log failed: %s", exc)
            return False
        return True

    async def _drain_log(self) -> None:
        while self.spill is not None and self.spill.count:  # the oldest first
            await self.bus.publish_many(self.topic, self.spill.peek(_LOG_CHUNK))
            self.spill.pop()
        while self._log:
            chunk = [self._log[i] for i in range(min(len(self._log), _LOG_CHUNK))]
            await self.bus.publish_many(self.topic, _log_records(chunk))
            for d in chunk:  # published: now they may leave the backlog (unless spilled meanwhile)
                if not self._log or self._log[0] is not d:
                    break
                self._log.popleft()


def _log_records(decisions: list[Decision]) -> list[tuple[bytes, bytes]]:
    """Decision-log records: keyed by decision id (the partition and the readers' dedupe key)."""
    return [(d.id.encode(), encode(d)) for d in decisions]


def build_http_app(decider: Decider, bus: EventBus, decisions_topic: str, metrics: Metrics,
                   clock: Callable[[], int], admin_token: str | None,
                   admin_actions: dict[str, Callable[[dict[str, object]], Awaitable[dict[str, object]]]] | None = None,
                   tmax_default_ms: int = 100, network_allowance_ms: int = 20, max_batch: int = 256,
                   batch_linger_ms: float = 0.0, max_passes: int = 2, spill: RecordSpill | None = None,
                   max_log_backlog: int = _MAX_LOG_BACKLOG,
                   log_linger_ms: float = 0.0) -> web.Application:
    """The service's HTTP application.

    :param decider: the decision path.
    :param bus: where decisions are logged.
    :param decisions_topic: topic of the decision log.
    :param metrics: service metrics (exposed at /metrics).
    :param clock: wall clock in ms (event time of live requests).
    :param admin_token: bearer token of admin actions, or None to refuse them all.
    :param admin_actions: name → coroutine taking the JSON body and returning a JSON result.
    :param tmax_default_ms: time budget of a request without ``tmax``.
    :param network_allowance_ms: part of ``tmax`` left for the network.
    :param max_batch: most requests decided together.
    :param batch_linger_ms: how long a batch may fill before it is decided.
    :param max_passes: batches decided at once.
    :param spill: where the decision log overflows to while the bus is down (None: dropped, counted).
    :param max_log_backlog: decision-log records held in memory while the bus is down.
    :param log_linger_ms: how long decisions gather before they are published to the decision log.
    """
    actions = admin_actions or {}
    batcher = BidBatcher(decider, bus, decisions_topic, metrics, max_batch=max_batch, linger_s=batch_linger_ms / 1000,
                         max_passes=max_passes, spill=spill, max_log_backlog=max_log_backlog,
                         log_linger_s=log_linger_ms / 1000)

    async def bid(request: web.Request) -> web.Response:
        started = decider.timer()
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return _error(400, "$", f"request body over {_MAX_BODY} bytes")
            try:
                req = decode_bid_request(body)
            except DecodeError as exc:
                metrics.errors.labels("bad_request").inc()
                return _error(400, exc.field, exc.reason)
            tmax_s = (req.tmax or tmax_default_ms) / 1000
            deadline = started + max(tmax_s / 2, tmax_s - network_allowance_ms / 1000)
            try:
                result = await batcher.decide(req, clock(), deadline, expires=started + tmax_s)
            except (StoreError, BusError) as exc:
                metrics.errors.labels("bid_path").inc()
                log.warning("no bid (%s)", exc)
                return web.Response(status=204, headers=_OPENRTB)
            if result.response is None:
                return web.Response(status=204, headers=_OPENRTB)
            return web.Response(body=encode(result.response), content_type="application/json", headers=_OPENRTB)
        except Exception as exc:  # the edge: no request the spec allows may get a 5xx
            metrics.errors.labels("internal").inc()
            log.exception("no bid after an internal error: %s", type(exc).__name__)
            return web.Response(status=204, headers=_OPENRTB)
        finally:
            metrics.request_latency.observe(decider.timer() - started)

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model_version": decider.policy.version})

    async def admin(request: web.Request) -> web.Response:
        name = request.match_info["action"]
        if admin_token is None:
            return web.json_response({"error": "admin actions are disabled: set GAELP_ADMIN_TOKEN"}, status=403)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
            return web.json_response({"error": "missing or wrong admin token"}, status=401)
        action = actions.get(name)
        if action is None:
            return web.json_response({"error": f"unknown admin action {name!r}",
                                      "actions": sorted(actions)}, status=404)
        try:
            payload = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError as exc:
            return web.json_response({"error": f"invalid JSON: {exc}", "field": "$"}, status=400)
        if not isinstance(payload, dict):
            return web.json_response({"error": "expected a JSON object", "field": "$"}, status=400)
        try:
            return web.json_response(await action(payload))
        except (DecodeError, GaelpError) as exc:
            field = exc.field if isinstance(exc, DecodeError) else exc.key if isinstance(exc, ConfigError) else "$"
            return web.json_response({"error": str(exc), "field": field}, status=400)

    async def on_startup(_: web.Application) -> None:
        await batcher.start()

    async def on_cleanup(_: web.Application) -> None:
        await batcher.stop()

    app = web.Application(client_max_size=_MAX_BODY)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/openrtb2/bid", bid)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/admin/{action}", admin)
    return app


def build_metrics_app(metrics: Metrics, health: Callable[[], dict[str, object]]) -> web.Application:
    """``GET /metrics`` and ``GET /healthz`` only: the HTTP face of a process without the bid path
    (a stream worker, the learner, the warehouse sink).

    :param metrics: what ``/metrics`` exposes.
    :param health: extra fields of the ``/healthz`` answer.
    """

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **health()})

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    return app
