"""aiohttp application: ``POST /openrtb2/bid``, ``GET /metrics``, ``GET /healthz``, admin actions.

The bid endpoint answers 200 with a BidResponse, 204 for no bid, 400 naming the field for
invalid JSON or schema. A failure of the store or the bus is answered with a no-bid (204) and
counted, never a 5xx: an exchange treats errors like timeouts and throttles the bidder.
Admin actions need ``Authorization: Bearer <GAELP_ADMIN_TOKEN>``; without a configured token
they are refused.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from agent_service.contracts.codec import decode_bid_request, encode
from agent_service.errors import BusError, DecodeError, GaelpError, StoreError
from agent_service.metrics import Metrics
from agent_service.pipeline.decide import Decider
from agent_service.ports.bus import EventBus

__all__ = ["build_http_app"]

log = logging.getLogger(__name__)
_OPENRTB = {"x-openrtb-version": "2.6"}
_MAX_BODY = 256 * 1024


def _error(status: int, field: str, reason: str) -> web.Response:
    return web.json_response({"error": reason, "field": field}, status=status, headers=_OPENRTB)


def build_http_app(decider: Decider, bus: EventBus, decisions_topic: str, metrics: Metrics,
                   clock: Callable[[], int], admin_token: str | None,
                   admin_actions: dict[str, Callable[[dict[str, object]], Awaitable[dict[str, object]]]] | None = None,
                   ) -> web.Application:
    """The service's HTTP application.

    :param decider: the decision path.
    :param bus: where decisions are logged.
    :param decisions_topic: topic of the decision log.
    :param metrics: service metrics (exposed at /metrics).
    :param clock: wall clock in ms (event time of live requests).
    :param admin_token: bearer token of admin actions, or None to refuse them all.
    :param admin_actions: name → coroutine taking the JSON body and returning a JSON result.
    """
    actions = admin_actions or {}

    async def bid(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            body = await request.read()
            if len(body) > _MAX_BODY:
                return _error(413, "$", f"request body over {_MAX_BODY} bytes")
            try:
                req = decode_bid_request(body)
            except DecodeError as exc:
                metrics.errors.labels("bad_request").inc()
                return _error(400, exc.field, exc.reason)
            try:
                [result] = await decider.decide([(req, clock())])
                for d in result.decisions:
                    await bus.publish(decisions_topic, d.id.encode(), encode(d))
            except (StoreError, BusError) as exc:
                metrics.errors.labels("bid_path").inc()
                log.warning("no bid for %s: %s", req.id, exc)
                return web.Response(status=204, headers=_OPENRTB)
            if result.response is None:
                return web.Response(status=204, headers=_OPENRTB)
            return web.Response(body=encode(result.response), content_type="application/json", headers=_OPENRTB)
        finally:
            metrics.request_latency.observe(time.perf_counter() - started)

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
            field = exc.field if isinstance(exc, DecodeError) else "$"
            return web.json_response({"error": str(exc), "field": field}, status=400)

    app = web.Application(client_max_size=_MAX_BODY + 1)
    app.router.add_post("/openrtb2/bid", bid)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/admin/{action}", admin)
    return app
