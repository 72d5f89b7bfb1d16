"""The flow's effects: exactly once under redelivery for every event type, dead letters for
bad records, event-time joins with parking, window closing, and the hard budget."""

from __future__ import annotations

import pytest

from agent_service.adapters.memory_store import MemoryStore
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.events import (
    AdEvent,
    AuctionResult,
    Conversion,
    DeadLetter,
    Decision,
    Experience,
    IdentityLink,
)
from agent_service.errors import StoreError
from agent_service.metrics import Metrics
from agent_service.ports.store import StateStore
from tests.flowkit import DAY, T0, FlowKit, bid_request
from tests.store_probe import read_credits, read_identity, read_journey

pytestmark = pytest.mark.services



def _anon(kit: FlowKit, device: str) -> str:
    """The anonymous person id of a raw device id (ids are pseudonymised at the edge)."""
    return "d:" + kit.flow.decider.ids(device)


def _decisions(outputs: list) -> list[Decision]:
    return [decode(o.value, Decision) for o in outputs if o.topic.endswith("decisions")]


def _experience(outputs: list) -> list[Experience]:
    return [decode(o.value, Experience) for o in outputs if o.topic.endswith("experience")]


def _records(outputs: list) -> list[bytes]:
    return [o.value for o in outputs if o.topic.endswith("experience")]


async def _won(kit: FlowKit, rid: str = "r1", device: str = "dev1", t: int = T0 + 1000,
               price: int = 2_000) -> Decision:
    [dec] = _decisions(await kit.handle(kit.topics.bid_requests, bid_request(rid, device, t)))
    assert dec.bid, dec.no_bid_reason
    await kit.handle(kit.topics.auction_results, AuctionResult(
        id=f"res-{rid}", event_time=t + 50, decision_id=dec.id, won=True, price_paid_micros=price))
    return dec


async def test_bid_request_twice_is_one_decision_and_one_reservation(store: StateStore) -> None:
    kit = FlowKit(store)
    req = bid_request("r1", "dev1", T0 + 10)
    [first] = _decisions(await kit.handle(kit.topics.bid_requests, req))
    [again] = _decisions(await kit.handle(kit.topics.bid_requests, req))
    assert first == again
    ledger = await store.budget("c", T0 // DAY)
    assert ledger.reserved == first.action.bid_cpm_micros // 1000


async def test_auction_result_twice_settles_once(store: StateStore) -> None:
    kit = FlowKit(store)
    [dec] = _decisions(await kit.handle(kit.topics.bid_requests, bid_request("r1", "dev1", T0 + 10)))
    res = AuctionResult(id="res-1", event_time=T0 + 60, decision_id=dec.id, won=True, price_paid_micros=1_234)
    out1 = await kit.handle(kit.topics.auction_results, res)
    out2 = await kit.handle(kit.topics.auction_results, res, res)
    ledger = await store.budget("c", T0 // DAY)
    assert (ledger.spent, ledger.reserved) == (1_234, 0)
    assert len(await read_journey(store, _anon(kit, "dev1"))) == 1
    assert {e.id for e in _experience(out1)} == {e.id for e in _experience(out2)} == {f"{dec.id}:outcome"}
    assert _experience(out1)[0] == _experience(out2)[0]
    # re-emitted byte for byte, the state put back from the decision (the claim keeps none)
    assert _records(out2) == _records(out1) * 2 and len(_experience(out2)[1].state) == len(dec.state) > 0


async def test_click_twice_counts_once(store: StateStore) -> None:
    kit = FlowKit(store)
    dec = await _won(kit)
    click = AdEvent(id="clk-1", event_time=T0 + 5_000, decision_id=dec.id, kind="click")
    out1 = await kit.handle(kit.topics.ad_events, click)
    out2 = await kit.handle(kit.topics.ad_events, click)
    assert [e.id for e in _experience(out1)] == [e.id for e in _experience(out2)] == [f"{dec.id}:click"]
    assert _records(out2) == _records(out1) and len(_experience(out2)[0].state) == len(dec.state) > 0
    assert [t.clicked for t in await read_journey(store, _anon(kit, "dev1"))] == [True]


async def test_conversion_twice_is_credited_once(store: StateStore) -> None:
    kit = FlowKit(store)
    dec = await _won(kit)
    await kit.ticks(T0 + 3 * DAY)
    conv = Conversion(id="conv-1", event_time=T0 + 2 * DAY, value_micros=30_000_000, device_id="dev1")
    out1 = await kit.handle(kit.topics.conversions, conv)
    out2 = await kit.handle(kit.topics.conversions, conv, conv)
    assert await read_credits(store, dec.id) == {"conv-1": 30_000_000}
    credit_ids = {e.id for e in _experience(out1 + out2) if e.kind == "credit"}
    assert credit_ids == {f"{dec.id}:credit:conv-1"}
    assert Metrics.value(kit.metrics.conversions_joined) == 1


async def test_identity_link_twice_and_cross_device_join(store: StateStore) -> None:
    kit = FlowKit(store)
    dec = await _won(kit, device="phone")
    link_a = IdentityLink(id="l1", event_time=T0 + 2_000, device_id="phone", person_id="alice")
    link_b = IdentityLink(id="l2", event_time=T0 + 3_000, device_id="laptop", person_id="alice")
    await kit.handle(kit.topics.identity_links, link_a, link_b, link_a)
    assert (await read_identity(store, kit.flow.decider.ids("laptop"))).device_count == 2
    statuses = kit.metrics.identity_links.collect()[0].samples
    assert {(s.labels["status"], s.value) for s in statuses if s.name.endswith("_total")} == {("merged", 3.0)}
    assert Metrics.value(kit.metrics.identity_reassigned) == 2  # both devices moved to alice, once
    await kit.ticks(T0 + 4 * DAY)
    out = await kit.handle(kit.topics.conversions, Conversion(
        id="conv-x", event_time=T0 + 3 * DAY, value_micros=5_000_000, device_id="laptop"))
    assert [e.decision_id for e in _experience(out) if e.kind == "credit"] == [dec.id]


async def test_conversion_before_its_touch_is_parked_then_joined(store: StateStore) -> None:
    kit = FlowKit(store)
    [dec] = _decisions(await kit.handle(kit.topics.bid_requests, bid_request("r9", "dev9", T0 + 100)))
    conv = Conversion(id="conv-9", event_time=T0 + DAY, value_micros=7_000_000, device_id="dev9")
    assert _experience(await kit.handle(kit.topics.conversions, conv)) == []  # touches not complete yet
    await kit.handle(kit.topics.auction_results, AuctionResult(
        id="res-9", event_time=T0 + 150, decision_id=dec.id, won=True, price_paid_micros=900))
    out = await kit.ticks(T0 + 2 * DAY)
    assert [e.id for e in _experience(out) if e.kind == "credit"] == [f"{dec.id}:credit:conv-9"]
    assert await store.due_parked(T0 + 10 * DAY, 10) == []


async def test_window_closes_after_14_days_and_late_conversion_is_not_credited(store: StateStore) -> None:
    cfg = GaelpConfig()
    kit = FlowKit(store, cfg)
    dec = await _won(kit, rid="rw", device="devw")
    lateness = cfg.join.allowed_lateness_ms
    assert [e for e in _experience(await kit.ticks(T0 + 13 * DAY)) if e.kind == "final"] == []
    finals = [e for e in _experience(await kit.ticks(T0 + 14 * DAY + lateness + 3_600_000)) if e.kind == "final"]
    assert [(f.decision_id, f.done) for f in finals] == [(dec.id, True)]
    assert finals[0].reward == pytest.approx(-2_000 / 1e6)
    late = Conversion(id="conv-late", event_time=T0 + 10 * DAY, value_micros=1_000_000, device_id="devw")
    assert _experience(await kit.handle(kit.topics.conversions, late)) == []
    assert Metrics.value(kit.metrics.conversions_late) == 1
    assert await read_credits(store, dec.id) == {}


@pytest.mark.parametrize("topic_attr", ["auction_results", "ad_events", "conversions", "identity_links",
                                        "bid_requests"])
async def test_bad_records_go_to_dead_letters_and_the_rest_is_processed(store: StateStore, topic_attr: str) -> None:
    kit = FlowKit(store)
    topic = getattr(kit.topics, topic_attr)
    dec = await _won(kit, rid="rg", device="devg")
    good = {
        "auction_results": AuctionResult(id="res-g2", event_time=T0 + 70, decision_id=dec.id, won=False),
        "ad_events": AdEvent(id="clk-g", event_time=T0 + 900, decision_id=dec.id, kind="click"),
        "conversions": Conversion(id="conv-g", event_time=T0 + 90, value_micros=1, device_id="devg"),
        "identity_links": IdentityLink(id="l-g", event_time=T0 + 90, device_id="devg", person_id="gina"),
        "bid_requests": bid_request("rg2", "devg", T0 + 200),
    }[topic_attr]
    bad = [b"{not json", b'{"id": 5}', b'[1,2]', b"\xff\xfe"]
    outputs = await kit.handle(topic, *bad, good)
    letters = [decode(o.value, DeadLetter) for o in outputs if o.topic == kit.topics.dead_letters]
    assert len(letters) == len(bad)
    assert all(letter.topic == topic and letter.reason and letter.field.startswith("$") for letter in letters)
    assert letters[1].field == "$.id"


async def test_unknown_decision_is_dead_lettered(store: StateStore) -> None:
    kit = FlowKit(store)
    out = await kit.handle(kit.topics.auction_results, AuctionResult(
        id="res-u", event_time=T0, decision_id="nope:1", won=True, price_paid_micros=5))
    [letter] = [decode(o.value, DeadLetter) for o in out]
    assert letter.field == "$.decision_id" and "unknown decision" in letter.reason


async def test_budget_is_never_exceeded(store: StateStore) -> None:
    cfg = GaelpConfig().replace("budget", daily_usd=0.05)
    kit = FlowKit(store, cfg)
    reqs = [bid_request(f"b{i}", f"dev{i}", T0 + 20 * 3_600_000 + i) for i in range(300)]
    decisions = _decisions(await kit.handle(kit.topics.bid_requests, *reqs))
    won = [d for d in decisions if d.bid]
    assert 0 < len(won) < len(decisions)
    for d in won:
        await kit.handle(kit.topics.auction_results, AuctionResult(
            id=f"res-{d.id}", event_time=d.event_time + 5, decision_id=d.id, won=True,
            price_paid_micros=d.action.bid_cpm_micros // 1000))
    ledger = await store.budget("c", T0 // DAY)
    assert ledger.spent <= ledger.budget == 50_000 and ledger.reserved == 0
    assert {d.no_bid_reason for d in decisions if not d.bid} <= {"budget", "pacing"}


async def test_watermark_moves_only_after_the_batch_effects_are_stored() -> None:
    """Two agents run concurrently: a conversion must never be joined against a watermark whose
    touches are still being written (it would be claimed 'unattributed' for good)."""
    import asyncio

    store = MemoryStore()
    kit = FlowKit(store)
    for topic in (kit.topics.identity_links, kit.topics.ad_events):
        await kit.flow.handle(topic, [kit.tick(topic, T0 + 2 * DAY)])
    [dec] = _decisions(await kit.handle(kit.topics.bid_requests, bid_request("rr", "devr", T0 + 10)))
    release, writing = asyncio.Event(), asyncio.Event()
    record = store.record_results

    async def slow_results(effects, ttl_s):  # type: ignore[no-untyped-def]
        writing.set()
        await release.wait()
        return await record(effects, ttl_s)

    store.record_results = slow_results  # type: ignore[method-assign]
    t = kit.topics.auction_results
    results = asyncio.create_task(kit.flow.handle(t, [
        kit.record(t, AuctionResult(id="res-r", event_time=T0 + 60, decision_id=dec.id, won=True,
                                    price_paid_micros=900)),
        kit.tick(t, T0 + 2 * DAY)]))
    await asyncio.wait_for(writing.wait(), 10)  # the results batch is stuck writing its effects
    conv = Conversion(id="conv-r", event_time=T0 + DAY, value_micros=3_000_000, device_id="devr")
    assert _experience(await kit.handle(kit.topics.conversions, conv)) == []  # parked, not joined
    release.set()
    out = (await results).outputs
    credits = [e for e in _experience(out) if e.kind == "credit"]
    assert [e.id for e in credits] == [f"{dec.id}:credit:conv-r"]


async def test_joins_and_closes_awaiting_their_clean_up_are_not_redone_until_the_lease_lapses(
        store: StateStore) -> None:
    # The batch runtime handles a batch while the previous one's outputs are published and its
    # clean-ups (unpark, drop windows) not yet run: advance must not join or close them again.
    kit = FlowKit(store)
    t, lateness = kit.topics, kit.cfg.join.allowed_lateness_ms
    dec = await _won(kit, rid="rl", device="devl")
    conv = Conversion(id="conv-l", event_time=T0 + 2 * DAY, value_micros=3_000_000, device_id="devl")
    await kit.handle(t.conversions, conv)  # parked: the touch topics' watermark is behind it
    pending = []
    for topic in (t.identity_links, t.auction_results, t.ad_events, t.conversions):
        result = await kit.flow.handle(topic, [kit.tick(topic, T0 + 14 * DAY + lateness + 3_600_000)])
        pending += result.after_publish
    again = await kit.flow.advance()
    assert _experience(again.outputs) == [] and again.after_publish == []
    # lapsed leases (a result never published): found again, the same records re-emitted
    kit.flow._unparking = dict.fromkeys(kit.flow._unparking, 0.0)
    kit.flow._dropping = dict.fromkeys(kit.flow._dropping, 0.0)
    redone = await kit.flow.advance()
    assert sorted(e.id for e in _experience(redone.outputs)) == [f"{dec.id}:credit:conv-l", f"{dec.id}:final"]
    for step in pending + redone.after_publish:
        await step()
    assert await store.due_parked(T0 + 30 * DAY, 10) == [] and await store.due_windows(T0 + 30 * DAY, 10) == []
    assert (await kit.flow.advance()).outputs == []


async def test_results_across_slices_apply_once_in_order_and_none_after_a_failed_slice(
        store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent_service.pipeline.outcomes as outcomes

    monkeypatch.setattr(outcomes, "_RESULT_SLICE", 3)  # the store pipeline's slices, small
    kit = FlowKit(store)
    reqs = [bid_request(f"s{i}", f"dev{i}", T0 + 1000 + i) for i in range(10)]
    won = [d for d in _decisions(await kit.handle(kit.topics.bid_requests, *reqs)) if d.bid]
    assert len(won) >= 7
    results = [AuctionResult(id=f"res-{d.id}", event_time=d.event_time + 5, decision_id=d.id, won=True,
                             price_paid_micros=100 + k) for k, d in enumerate(won)]
    # a later result for the first decision, in another slice: the first one's effect stands
    late = AuctionResult(id="res-late", event_time=T0 + 5000, decision_id=won[0].id, won=False)
    out = await kit.handle(kit.topics.auction_results, *results, late)
    records = _records(out)
    assert [e.id for e in _experience(out)] == [f"{d.id}:outcome" for d in [*won, won[0]]]
    assert records[-1] == records[0] and _experience(out)[-1].won
    assert (await store.budget("c", T0 // DAY)).spent == sum(r.price_paid_micros for r in results)

    more = [d for d in _decisions(await kit.handle(kit.topics.bid_requests, *[
        bid_request(f"f{i}", f"devf{i}", T0 + 3000 + i) for i in range(12)])) if d.bid][:7]
    record, calls = store.record_results, []

    async def failing(effects, ttl_s):  # type: ignore[no-untyped-def]
        calls.append(len(effects))
        if len(calls) == 2:
            raise StoreError("redis down")
        return await record(effects, ttl_s)

    store.record_results = failing  # type: ignore[method-assign]
    spent = (await store.budget("c", T0 // DAY)).spent
    with pytest.raises(StoreError):
        await kit.handle(kit.topics.auction_results, *[AuctionResult(
            id=f"res-{d.id}", event_time=d.event_time + 5, decision_id=d.id, won=True, price_paid_micros=7)
            for d in more])
    assert calls == [3, 3]  # the slice after the failed one was never sent
    assert (await store.budget("c", T0 // DAY)).spent == spent + 3 * 7


@pytest.mark.parametrize("decision_id", ["d1", 'd"state":[]', 'x\\"state":[]\\', "d\u00e9\u2028"])
def test_outcome_record_spliced_from_its_claim_is_the_encoded_record(decision_id: str) -> None:
    """The outcome record is built by putting the stored state into the claim's bytes: byte for
    byte ``encode(exp)``, whatever the ids hold (more cases: ``test_experience_splice.py``)."""
    import msgspec

    from agent_service.contracts.codec import encode
    from agent_service.contracts.events import Action, RewardParts
    from agent_service.pipeline.outcomes import Outcomes

    outcomes = Outcomes(GaelpConfig(), MemoryStore(), Metrics(), None)  # type: ignore[arg-type]
    for state in ([0.5, -1.25e-7, 3.0], []):
        dec = Decision(id=decision_id, event_time=T0, request_id="r", imp_id="1", person_id="p", device_id="d",
                       campaign="c", state=msgspec.Raw(encode(state)),  # type: ignore[arg-type]  # as the store reads it
                       action=Action(bid_cpm_micros=1, creative=2, channel='c"state":[]', segment=0),
                       propensity=0.5, model_version=1)
        claimed, record = outcomes._claimed_and_record(dec, "outcome", "outcome", T0, RewardParts(immediate=0.25),
                                                       won=True)
        exp = outcomes._experience(dec, "outcome", "outcome", T0, RewardParts(immediate=0.25), won=True)
        assert claimed == encode(msgspec.structs.replace(exp, state=[]))
        assert claimed == record.replace(encode(state), b"[]", 1)  # the state spliced in, not a second encoding
        assert record == encode(exp)
        assert decode(record, Experience).state == state
