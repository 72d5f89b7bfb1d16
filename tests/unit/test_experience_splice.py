"""Experience records spliced from their claims (``Outcomes._claimed_and_record``) are byte for
byte what encoding the ``Experience`` gives: over random decisions as the Redis store reads them
back (state left encoded), for outcome, click, credit and final records, and on the fallback path
(a state held as a list)."""

from __future__ import annotations

import dataclasses
import random
from unittest import mock

import msgspec
import numpy as np

from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.redis_store import _decision_enc, _decode_decision
from agent_service.agent.learning.reward import slot_value_usd
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode, encode
from agent_service.contracts.events import (
    Action,
    AuctionResult,
    Decision,
    Experience,
    RewardParts,
    encoded_state,
)
from agent_service.metrics import Metrics
from agent_service.money import micros_to_usd
from agent_service.pipeline import outcomes as outcomes_mod
from agent_service.pipeline.flow import stream_attribution
from agent_service.pipeline.outcomes import Outcomes

_ODD = ['"state":[]', 'x\\"state":[]\\', "\\", '"', "é", "\u2028", "\x00\x1f", "日本", "😀", ":outcome", "{}", "[]"]


def _text(rng: random.Random) -> str:
    parts = [rng.choice(_ODD) if rng.random() < 0.3 else f"{rng.getrandbits(40):x}" for _ in range(rng.randint(1, 4))]
    return "".join(parts)[:200] or "x"


def _int(rng: random.Random) -> int:
    return rng.choice([0, 1, rng.randint(0, 10**6), rng.randint(0, 2**62), 2**63 - 1])


def _float(rng: random.Random) -> float:
    return rng.choice([0.0, -0.0, 1.0, 0.5, rng.uniform(-1e6, 1e6), rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30),
                       5e-324, 1.7976931348623157e308, -1e-7])


def _decision(rng: random.Random) -> Decision:
    width = rng.choice([0, 1, 7, 268])
    values = np.array([rng.uniform(-1, 1) * 10.0 ** rng.randint(-8, 8) for _ in range(width)], np.float32)
    state = encoded_state(values) if rng.random() < 0.8 else [_float(rng) for _ in range(width)]
    return Decision(
        id=_text(rng), event_time=_int(rng), request_id=_text(rng), imp_id=_text(rng), person_id=_text(rng),
        device_id=_text(rng), campaign=_text(rng), state=state,
        action=Action(bid_cpm_micros=_int(rng), creative=_int(rng), channel=_text(rng), segment=_int(rng),
                      multiplier=rng.randint(0, 9)),
        propensity=rng.choice([1.0, 0.5, rng.random() or 1.0, 1e-9]), model_version=_int(rng),
        value_estimate_micros=_int(rng), bid=rng.random() < 0.9, no_bid_reason=rng.choice([None, _text(rng)]),
        shadow=rng.random() < 0.1)


def _outcomes(rng: random.Random) -> Outcomes:
    cfg = GaelpConfig()
    reward = dataclasses.replace(cfg.reward, alpha_immediate=abs(_float(rng)), alpha_delayed=abs(_float(rng)),
                                 alpha_attribution=abs(_float(rng)), alpha_diversity=abs(_float(rng)),
                                 top_slot_value_usd=abs(_float(rng)), position_decay=rng.uniform(0, 3),
                                 click_value_usd=abs(_float(rng)))
    cfg = dataclasses.replace(cfg, reward=reward)
    return Outcomes(cfg, MemoryStore(), Metrics(), stream_attribution(cfg))


def _reference(o: Outcomes, dec: Decision, kind: str, suffix: str, event_time: int, parts: RewardParts,
               won: bool = False, done: bool = False, position: int | None = None) -> tuple[bytes, bytes]:
    """The claim and record as encoded before the splice: the whole ``Experience``, and it without its state."""
    exp = o._experience(dec, kind, suffix, event_time, parts, won=won, done=done, position=position)
    return encode(msgspec.structs.replace(exp, state=[])), encode(exp)


def test_spliced_records_are_the_encoded_records() -> None:
    rng = random.Random(17)
    checked = spliced = listed = 0
    for _ in range(40):
        o = _outcomes(rng)
        for _ in range(50):
            logged = _decision(rng)
            dec = _decode_decision(_decision_enc.encode(logged), True)  # as the stream reads it
            assert isinstance(dec.state, msgspec.Raw)
            for d in (dec, logged):  # state read back (spliced); as logged (Raw: spliced, or a list: encoded twice)
                spliced += isinstance(d.state, msgspec.Raw)
                listed += isinstance(d.state, list)
                won = rng.random() < 0.5
                res = AuctionResult(id=_text(rng), event_time=_int(rng), decision_id=d.id, won=won,
                                    position=rng.choice([None, *range(1, 11)]),
                                    price_paid_micros=_int(rng) if won else rng.choice([0, _int(rng)]))
                effect, record = o._result_effect(d, res)
                cost = res.price_paid_micros if res.won else 0
                position = res.position if res.won else None
                parts = RewardParts(immediate=slot_value_usd(o._rw, position) - micros_to_usd(cost),
                                    delayed=micros_to_usd(d.value_estimate_micros) if res.won else 0.0)
                assert (effect.payload, record) == _reference(o, d, "outcome", "outcome", res.event_time, parts,
                                                              won=won, position=position)
                t = _int(rng)
                click = RewardParts(immediate=o._rw.click_value_usd)
                assert o._claimed_and_record(d, "click", "click", t, click) == _reference(o, d, "click", "click", t,
                                                                                          click)
                credit = RewardParts(attribution=micros_to_usd(_int(rng)))
                suffix = f"credit:{_text(rng)}"
                assert o._claimed_and_record(d, "credit", suffix, t, credit) == _reference(o, d, "credit", suffix,
                                                                                           t, credit)
                final = RewardParts(immediate=_float(rng), attribution=_float(rng))
                assert (o._claimed_and_record(d, "final", "final", t, final, won=won, done=True)
                        == _reference(o, d, "final", "final", t, final, won=won, done=True))
                checked += 4
    assert checked == 40 * 50 * 2 * 4 and spliced > 3000 and listed > 200


def test_record_decodes_to_the_decisions_state() -> None:
    rng = random.Random(3)
    o = _outcomes(rng)
    logged = msgspec.structs.replace(_decision(rng), state=encoded_state(np.array([0.5, -1.25e-7, 3.0], np.float32)))
    dec = _decode_decision(_decision_enc.encode(logged), True)
    assert isinstance(dec.state, msgspec.Raw)
    claimed, record = o._claimed_and_record(dec, "outcome", "outcome", 5, RewardParts(immediate=0.25), won=True)
    assert decode(claimed, Experience).state == []
    assert decode(record, Experience).state == [0.5, -1.25e-7, 3.0]
    assert decode(record, Experience) == msgspec.structs.replace(decode(claimed, Experience), state=[0.5, -1.25e-7, 3.0])


def test_one_small_encoding_when_spliced_two_on_the_fallback() -> None:
    """A state read back encoded costs one encoding (the claim's); a state held as a list (the
    memory store, a decision not read from Redis) is encoded with the record, as before."""
    rng = random.Random(5)
    o = _outcomes(rng)
    logged = msgspec.structs.replace(_decision(rng), state=[0.25, 1.0])
    dec = _decode_decision(_decision_enc.encode(logged), True)
    for d, encodings in ((dec, 1), (logged, 2)):
        with mock.patch.object(outcomes_mod, "encode", side_effect=encode) as enc:
            got = o._claimed_and_record(d, "click", "click", 9, RewardParts(immediate=1.0))
        assert enc.call_count == encodings
        assert got == _reference(o, d, "click", "click", 9, RewardParts(immediate=1.0))
        assert b'"state":[]' in got[0] and b'"state":[0.25,1.0]' in got[1]
