"""Wire contracts: the spec examples decode, records round-trip, and any input either decodes
or raises DecodeError naming a field — never anything else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_service.contracts import (
    AdEvent,
    AuctionResult,
    BidRequest,
    BidResponse,
    Conversion,
    Decision,
    Experience,
    IdentityLink,
    decode,
    decode_bid_request,
    encode,
)
from agent_service.contracts.events import Action, Tick, encoded_state, encoded_states, state_values
from agent_service.errors import DecodeError

CONTRACTS = [BidRequest, AuctionResult, AdEvent, Conversion, IdentityLink, Decision, Experience, Tick]


def test_spec_examples_decode(shared_dir: Path) -> None:
    reqs = sorted((shared_dir / "reference/openrtb/bid-requests").glob("*.json"))
    assert reqs
    for path in reqs:
        req = decode_bid_request(path.read_bytes())
        assert req.id == json.loads(path.read_text())["id"] and req.imp
    for path in (shared_dir / "reference/openrtb/bid-responses").glob("*.json"):
        resp = decode(path.read_bytes(), BidResponse)
        assert resp.seatbid[0].bid[0].price > 0


def test_records_round_trip() -> None:
    action = Action(bid_cpm_micros=1_500_000, creative=3, channel="paid_search", segment=2, multiplier=1)
    records = [
        AuctionResult(id="a", event_time=5, decision_id="d", won=True, position=3, price_paid_micros=120),
        AdEvent(id="b", event_time=6, decision_id="d", kind="click"),
        Conversion(id="c", event_time=7, value_micros=10, user_id="u", device_id="v"),
        IdentityLink(id="e", event_time=8, device_id="v", person_id="u", kind="probabilistic", score=0.95),
        IdentityLink(id="f", event_time=8, device_id="v", other_device_id="w", kind="probabilistic", score=0.9,
                     ip="198.51.100.7"),
        IdentityLink(id="e", event_time=9, device_id="v", person_id="u", revoked=True),
        Decision(id="d", event_time=4, request_id="r", imp_id="1", person_id="p", device_id="v", campaign="c",
                 state=[0.1, 0.2], action=action, propensity=0.3, model_version=2),
        Experience(id="x", event_time=9, decision_id="d", kind="final", state=[0.1], action=action,
                   propensity=0.3, model_version=2, reward=1.5, done=True),
    ]
    for rec in records:
        assert decode(encode(rec), type(rec)) == rec


@pytest.mark.parametrize(("tp", "body", "field"), [
    (AuctionResult, {"id": "a", "event_time": 1, "decision_id": "d", "won": True, "position": 11}, "$.position"),
    (Conversion, {"id": "c", "event_time": 1, "value_micros": -5}, "$.value_micros"),
    (Conversion, {"id": "c", "value_micros": 5}, "$.event_time"),
    (AdEvent, {"id": "x", "event_time": 1, "decision_id": "d", "kind": "view"}, "$.kind"),
    (IdentityLink, {"id": "l", "event_time": 1, "device_id": "d", "person_id": "p", "score": 2}, "$.score"),
    (IdentityLink, {"id": "l", "event_time": 1, "device_id": "d"}, "$.person_id"),
    (IdentityLink, {"id": "l", "event_time": 1, "device_id": "d", "person_id": "p", "other_device_id": "e",
                    "kind": "probabilistic"}, "$.person_id"),
    (IdentityLink, {"id": "l", "event_time": 1, "device_id": "d", "other_device_id": "e"}, "$.person_id"),
    (IdentityLink, {"id": "l", "event_time": 1, "device_id": "d", "person_id": "p", "revoked": "yes"}, "$.revoked"),
    (AuctionResult, {"id": "", "event_time": 1, "decision_id": "d", "won": False}, "$.id"),
])
def test_bad_records_name_the_field(tp: type, body: dict, field: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(json.dumps(body), tp)
    assert err.value.field == field


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(["id", "imp", "event_time", "decision_id", "won", "value_micros",
                                                  "kind", "device_id", "person_id", "tmax", "at",
                                                  "other_device_id", "ip", "revoked", "score"]),
                                 json_values, max_size=6).map(lambda v: json.dumps(v).encode())),
       st.sampled_from(CONTRACTS))
def test_any_input_decodes_or_names_a_field(raw: bytes, tp: type) -> None:
    try:
        decode_bid_request(raw) if tp is BidRequest else decode(raw, tp)
    except DecodeError as exc:
        assert exc.field.startswith("$") and exc.reason


def test_identity_link_stays_backward_compatible() -> None:
    """A record from an older producer (no other_device_id / ip / revoked) decodes as before."""
    old = b'{"id":"l","event_time":3,"device_id":"d","person_id":"p","kind":"probabilistic","score":0.7}'
    link = decode(old, IdentityLink)
    assert (link.person_id, link.kind, link.score) == ("p", "probabilistic", 0.7)
    assert (link.other_device_id, link.ip, link.revoked) == (None, None, False)


_EDGES = np.array([0.0, -0.0, 1.0, -1.0, 0.1, -0.1, 1 / 3, 0.5, 2.0, 10.0, 123456789.0, 16777216.0, 1e10, -1e10,
                   3.4028235e38, -3.4028235e38, 1.1754944e-38, 1e-45, -1e-45, 1e-7, 0.30000001192092896], np.float32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=40))
def test_logged_state_reads_back_as_the_same_float32(values: list[float]) -> None:
    """The learner reads the logged state as float32: the compact encoding loses nothing there."""
    x = np.concatenate([np.asarray(values, np.float32), _EDGES])
    raw = encoded_state(x)
    back = np.asarray(decode(encode(_decision(raw)), Decision).state, np.float32)
    assert np.array_equal(back, x) and np.array_equal(np.asarray(state_values(_decision(raw)), np.float32), x)


def test_logged_state_is_compact_and_batches_agree() -> None:
    rng = np.random.default_rng(0)
    m = rng.uniform(-1, 1, (8, 300)).astype(np.float32)
    m[:, :100] = 0.0
    rows = encoded_states(m)
    assert [bytes(r) for r in rows] == [bytes(encoded_state(r)) for r in m]  # type: ignore[call-overload]
    assert all(np.array_equal(np.asarray(json.loads(bytes(r)), np.float32), x)  # type: ignore[call-overload]
               for r, x in zip(rows, m, strict=True))
    # float64 reprs of float32 values (~19 characters each) against the shortest float32 text, zeros as "0"
    assert len(bytes(rows[0])) < 0.6 * len(json.dumps(m[0].tolist()))  # type: ignore[call-overload]
    assert bytes(encoded_state([0.0, 1.0, 0.1, -2.0])) == b"[0,1,0.1,-2]"  # type: ignore[call-overload]


def test_logged_state_with_shared_spans_is_the_same_bytes() -> None:
    """Spans formatted once and reused (pacing, journey padding) give the bytes of whole rows."""
    rng = np.random.default_rng(1)
    m = rng.uniform(-5, 5, (9, 60)).astype(np.float32)
    m[:, 10:20] = rng.uniform(0, 1, 10).astype(np.float32)  # one span, the same in every row
    m[:, 20:60] = np.round(m[:, 20:60])  # integral values: "3", not "3.0"
    m[:, 40:60] = 0.0
    m[4, 45], m[5, :21] = -0.0, _EDGES
    whole = [bytes(r) for r in cast(list[msgspec.Raw], encoded_states(m))]
    for shared in (((10, 20), (20, 60)), ((0, 10),), ((10, 20),), ((59, 60),), ((0, 60),), ((5, 5), (40, 60))):
        for _ in range(2):  # the second time from the cache
            assert [bytes(r) for r in cast(list[msgspec.Raw], encoded_states(m, shared))] == whole


def _decision(state: list[float]) -> Decision:
    return Decision(id="d", event_time=4, request_id="r", imp_id="1", person_id="p", device_id="v", campaign="c",
                    state=state, action=Action(bid_cpm_micros=0, creative=0, channel="social", segment=0),
                    propensity=0.3, model_version=2)
