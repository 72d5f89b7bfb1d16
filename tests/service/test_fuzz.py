"""Fuzzing the service's inputs with hypothesis: every HTTP body gets 200 (a valid BidResponse),
204 or 400 naming the field, and every record on every input topic is either processed or
dead-lettered with the reason; nothing raises, the process never dies.

Inputs: arbitrary bytes, arbitrary JSON, and the spec's example requests with one field
replaced by an arbitrary JSON value (so the fuzzer gets past the top-level schema).
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.memory_store import MemoryStore
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode, decode_bid_request
from agent_service.contracts.events import AdEvent, AuctionResult, Conversion, DeadLetter, IdentityLink
from agent_service.contracts.openrtb import BidResponse
from agent_service.errors import DecodeError
from agent_service.http.app import build_http_app
from agent_service.ports.bus import BusRecord
from tests.flowkit import T0, FlowKit

_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, docs: list[dict[str, Any]]) -> bytes:
    doc = copy.deepcopy(draw(st.sampled_from(docs)))
    path = draw(st.sampled_from([p for p in _paths(doc) if p]))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if draw(st.booleans()):
        parent[path[-1]] = draw(json_values)
    elif isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent.pop(path[-1])
    return json.dumps(doc).encode()


class _Loop:
    """An event loop in a thread hosting the app and the flow (hypothesis tests are sync)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def service(shared_dir: Path) -> Iterator[tuple[_Loop, FlowKit, int, list[dict[str, Any]]]]:
    loop = _Loop()
    kit = FlowKit(MemoryStore(), GaelpConfig().replace("budget", daily_usd=1000.0))
    app = build_http_app(kit.flow.decider, MemoryBus(), kit.topics.decisions, kit.metrics,
                         clock=lambda: T0 + 3_600_000, admin_token="t")
    runner = web.AppRunner(app)
    loop.run(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    docs = [json.loads(p.read_text()) for p in sorted((shared_dir / "reference/openrtb/bid-requests").glob("*.json"))]
    yield loop, kit, port, docs
    loop.run(runner.cleanup())
    loop.close()


def _post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/openrtb2/bid", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _check_answer(body: bytes, status: int, payload: bytes) -> None:
    assert status in (200, 204, 400), (status, body[:200], payload[:200])
    if status == 400:
        assert json.loads(payload)["field"].startswith("$")
        return
    req = decode_bid_request(body)  # a 200/204 request must be valid
    if status == 200:
        resp = decode(payload, BidResponse)
        assert resp.id == req.id
        floors = {imp.id: imp.bidfloor for imp in req.imp}
        for bid in resp.seatbid[0].bid:
            assert bid.impid in floors and bid.price >= floors[bid.impid]


def test_bid_endpoint_answers_every_body(service) -> None:  # type: ignore[no-untyped-def]
    _, _, port, docs = service
    statuses: list[int] = []

    @_SETTINGS
    @given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()), mutated(docs)))
    def check(body: bytes) -> None:
        status, payload = _post(port, body)
        _check_answer(body, status, payload)
        statuses.append(status)

    check()
    assert len(statuses) >= 100 and {200, 400} <= set(statuses), sorted(set(statuses))


def test_spec_examples_get_valid_bids(service) -> None:  # type: ignore[no-untyped-def]
    _, _, port, docs = service
    for doc in docs:
        body = json.dumps(doc).encode()
        status, payload = _post(port, body)
        assert status == 200, payload
        _check_answer(body, status, payload)


_TOPIC_TYPES = {"auction_results": AuctionResult, "ad_events": AdEvent, "conversions": Conversion,
                "identity_links": IdentityLink, "bid_requests": None}


@pytest.mark.parametrize("topic_attr", sorted(_TOPIC_TYPES))
def test_every_topic_processes_or_dead_letters_every_record(service, topic_attr: str) -> None:  # type: ignore[no-untyped-def]
    loop, kit, _, docs = service
    topic = getattr(kit.topics, topic_attr)
    tp = _TOPIC_TYPES[topic_attr]
    seeds = docs if tp is None else [{"id": "x", "event_time": T0, "decision_id": "r:1", "won": True,
                                      "kind": "click", "value_micros": 5, "device_id": "d", "person_id": "p"}]
    if topic_attr == "identity_links":  # device-to-device matches with an IP, and revocations
        seeds.append({"id": "m", "event_time": T0, "device_id": "d", "other_device_id": "e", "kind": "probabilistic",
                      "score": 0.95, "ip": "192.0.2.1", "revoked": False})
    offsets = iter(range(10**9))
    seen: list[int] = []

    @_SETTINGS
    @given(st.lists(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                              mutated(seeds)), min_size=1, max_size=5))
    def check(values: list[bytes]) -> None:
        records = [BusRecord(topic, 0, next(offsets), None, v) for v in values]
        result = loop.run(kit.flow.handle(topic, records))
        for step in result.after_publish:
            loop.run(step())
        letters = {decode(o.value, DeadLetter).id for o in result.outputs if o.topic == kit.topics.dead_letters}
        for rec in records:
            try:
                decode_bid_request(rec.value) if tp is None else decode(rec.value, tp)
            except DecodeError:
                assert f"{topic}:0:{rec.offset}" in letters, rec.value[:200]
        seen.append(len(records))

    check()
    assert len(seen) >= 100
