"""One contract for every StateStore adapter: in-memory and Redis run the same tests, grouped by
use-case port (``DecideStore``, ``RecordReader``, ``OutcomeStore``, ``WindowStore``,
``IdentityStore``, ``BudgetStore``, ``ProfileStore``). A test seeds and reads state only through port methods."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.redis_store import RedisStore
from agent_service.contracts.codec import encode
from agent_service.contracts.events import Action, Decision, Touch, encoded_state, state_values
from agent_service.errors import BudgetError
from agent_service.ports.store import (
    ACTIVITY_HALF_LIFE_MS,
    Activity,
    ClickEffect,
    ContextQuery,
    DecideContext,
    DecisionDraft,
    IdentityAssignment,
    JoinEffect,
    JoinQuery,
    PersonProfile,
    ResultEffect,
    StateStore,
)
from tests.store_probe import started_store

pytestmark = pytest.mark.services

TTL = 3600



@pytest.fixture
async def twin(store: StateStore, request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    """A second, empty store of the same adapter (what a restore starts from)."""
    async with started_store("memory" if isinstance(store, MemoryStore) else "redis", request) as s:
        yield s


def _touch(decision_id: str, t: int, device: str = "dev1") -> Touch:
    return Touch(decision_id=decision_id, event_time=t, channel="social", creative=1, segment=0,
                 device_id=device, cost_micros=10)


def _decision(i: str, version: int = 0) -> Decision:
    return Decision(id=i, event_time=1, request_id="r", imp_id="1", person_id="p", device_id="d",
                    campaign="c", state=[0.5, 1.0], propensity=0.25, model_version=version,
                    action=Action(bid_cpm_micros=2_000_000, creative=3, channel="social", segment=1))


def _draft(i: str, micros: int, period: int, version: int = 0) -> DecisionDraft:
    """A decision reserving ``micros`` (a no-bid ``budget`` decision if the budget is short)."""
    d = _decision(i, version)
    return DecisionDraft(d, micros, period, msgspec.structs.replace(d, bid=False, no_bid_reason="budget") if micros else None)


def _won(decision_id: str, device: str, t: int, close_ms: int = 0, cost: int = 0, period: int = 0) -> ResultEffect:
    """A won auction result: settles ``decision_id``, stores its touch, opens its window."""
    return ResultEffect(f"outcome:{decision_id}", b"W", "c", period, decision_id, cost, device,
                        _touch(decision_id, t, device), close_ms)


async def _journey(store: StateStore, person: str, since_ms: int = 0) -> list[tuple[str, bool]]:
    """(decision, clicked) of ``person``'s journey, as the conversion join reads it."""
    [ctx] = await store.join_contexts([JoinQuery("conv:probe", person, None, since_ms)])
    return [(t.decision_id, t.clicked) for t in ctx.journey]


async def _seen(store: StateStore, device: str, max_touches: int = 8) -> DecideContext:
    """What the decision path reads for ``device``."""
    [ctx] = await store.decide_contexts([ContextQuery(device, "probe:1", "c", 4)], max_touches)
    return ctx


# --- DecideStore (and the ledger it reads, BudgetStore) ------------------------------------------
async def test_reservations_are_atomic_and_exact_under_concurrency(store: StateStore) -> None:
    await store.set_budget("c", 0, 1_000)
    results = await asyncio.gather(*(store.reserve_and_put("c", [_draft(f"r{i}", 100, 0)], TTL) for i in range(25)))
    assert sum(d.bid for [d] in results) == 10
    state = await store.budget("c", 0)
    assert state.reserved == 1_000 and state.spent == 0 and state.remaining == 0


async def test_settle_is_idempotent_and_a_settled_decision_reserves_nothing_again(store: StateStore) -> None:
    await store.set_budget("c", 1, 1_000)
    [a] = await store.reserve_and_put("c", [_draft("a", 600, 1)], TTL)
    [again] = await store.reserve_and_put("c", [_draft("a", 600, 1)], TTL)  # redelivery: no double hold
    # compared as bytes: the stored decision may come back with its state still encoded (logged again as is)
    assert a.bid and encode(again) == encode(a) and (await store.budget("c", 1)).reserved == 600
    [b] = await store.reserve_and_put("c", [_draft("b", 600, 1)], TTL)
    assert not b.bid and b.no_bid_reason == "budget"
    assert await store.settle("c", 1, "a", 250)
    assert not await store.settle("c", 1, "a", 250)
    await store.reserve_and_put("c", [_draft("a", 600, 1)], TTL)  # settled reservation is not re-opened
    state = await store.budget("c", 1)
    assert (state.spent, state.reserved) == (250, 0)
    assert not await store.settle("c", 1, "unknown", 5)


async def test_negative_money_is_refused(store: StateStore) -> None:
    with pytest.raises(BudgetError):
        await store.reserve_and_put("c", [_draft("x", -1, 2)], TTL)
    with pytest.raises(BudgetError):
        await store.set_budget("c", 2, -5)
    with pytest.raises(BudgetError):
        await store.init_budget("c", 2, -5)
    with pytest.raises(BudgetError):
        await store.settle("c", 2, "x", -1)


async def test_init_budget_does_not_override(store: StateStore) -> None:
    await store.init_budget("c", 7, 100)
    await store.init_budget("c", 7, 999)
    assert (await store.budget("c", 7)).budget == 100
    await store.set_budget("c", 7, 50)
    assert (await store.budget("c", 7)).budget == 50


async def test_decide_contexts_read_identity_last_touches_budget_and_stored_decision(store: StateStore) -> None:
    await store.record_results([_won(f"t{i}", "devC", 100 + i) for i in range(6)], TTL)
    await store.record_clicks([ClickEffect("click:t5", b"C", "devC", "t5")], TTL)
    await store.set_budget("c", 3, 777)
    await store.assign_identities([IdentityAssignment("devB", "bob", 0.95), IdentityAssignment("devB2", "bob", 1.0)], TTL)
    [stored] = await store.reserve_and_put("c", [_draft("q2:1", 0, 3)], TTL)
    ctxs = await store.decide_contexts([ContextQuery("devC", "q1:1", "c", 3), ContextQuery("devB", "q2:1", "c", 3)], 4)
    assert [(t.decision_id, t.clicked) for t in ctxs[0].journey] == [("t2", False), ("t3", False), ("t4", False),
                                                                    ("t5", True)]
    assert ctxs[0].identity == ("d:devC", 1.0, 1) and ctxs[0].budget == (777, 0, 0) and ctxs[0].existing is None
    assert ctxs[1].identity.person_id == "bob" and ctxs[1].identity.confidence == pytest.approx(0.95)
    assert ctxs[1].identity.device_count == 2 and encode(ctxs[1].existing) == encode(stored)
    assert await store.decide_contexts([], 8) == []


async def test_reserve_and_put_reserves_in_order_stores_each_decision_once(store: StateStore) -> None:
    await store.init_budget("c", 5, 1_000)
    await store.init_budget("c", 6, 100)
    got = await store.reserve_and_put("c", [_draft("a", 600, 5), _draft("b", 500, 5), _draft("n", 0, 5),
                                            _draft("c", 400, 5), _draft("x", 100, 6)], TTL)
    assert [(d.id, d.bid) for d in got] == [("a", True), ("b", False), ("n", True), ("c", True), ("x", True)]
    assert got[1].no_bid_reason == "budget"
    assert (await store.budget("c", 5)).reserved == 1_000 and (await store.budget("c", 6)).reserved == 100
    # a duplicate (redelivered request) gets the stored decision and reserves nothing more
    again = await store.reserve_and_put("c", [_draft("a", 999, 5, version=2), _draft("b", 1, 5)], TTL)
    assert [encode(d) for d in again] == [encode(got[0]), encode(got[1])]
    assert (await store.budget("c", 5)).reserved == 1_000
    stored = await store.get_decisions(["a", "b", "n", "c", "x"])
    assert [stored[i].bid for i in "abncx"] == [True, False, True, True, True]
    assert await store.settle("c", 5, "a", 450) and (await store.budget("c", 5)).spent == 450
    await store.replace_decisions([msgspec.structs.replace(got[3], bid=False, no_bid_reason="tmax_late")], TTL)
    assert (await store.get_decisions(["c"]))["c"].no_bid_reason == "tmax_late"  # a withdrawn bid, overwritten
    with pytest.raises(BudgetError):
        await store.reserve_and_put("c", [DecisionDraft(_decision("z"), 10, 5, None)], TTL)


async def test_reserve_and_put_never_overspends_under_concurrency(store: StateStore) -> None:
    await store.init_budget("c", 7, 10_000)

    async def one(k: int) -> list[Decision]:  # overlapping ids: concurrent duplicates
        return await store.reserve_and_put("c", [_draft(f"cc{(k * 5 + j) % 60}", 700, 7) for j in range(5)], TTL)

    results = await asyncio.gather(*(one(k) for k in range(20)))
    state = await store.budget("c", 7)
    bids = {d.id for r in results for d in r if d.bid}
    assert state.reserved == 700 * len(bids) <= 10_000  # one reservation per decided id, never over budget
    stored = await store.get_decisions([f"cc{i}" for i in range(60)])
    assert {i for i, d in stored.items() if d.bid} == bids  # what was answered is what was stored


async def test_context_profile_counts_each_new_decision_once(store: StateStore) -> None:
    def draft(i: str, person: str, context: int, micros: int = 0) -> DecisionDraft:
        d = msgspec.structs.replace(_decision(i), person_id=person)
        short = msgspec.structs.replace(d, bid=False, no_bid_reason="budget")
        return DecisionDraft(d, micros, 8, short if micros else None, context=context)

    await store.init_budget("c", 8, 100)
    await store.assign_identities([IdentityAssignment("devP", "pat", 1.0)], TTL)
    got = await store.reserve_and_put("c", [draft("p1", "pat", 3), draft("p2", "pat", 3, 500), draft("p3", "pat", 1),
                                            draft("p4", "pat", -1), draft("o1", "d:devO", 2)], TTL)
    assert not got[1].bid  # the budget could not hold it: stored as a no-bid, still a request seen
    # redelivered (and concurrent duplicate) drafts count nothing more
    await asyncio.gather(*(store.reserve_and_put("c", [draft("p1", "pat", 3), draft("p3", "pat", 5)], TTL)
                           for _ in range(5)))
    ctxs = await store.decide_contexts([ContextQuery("devP", "new:1", "c", 8), ContextQuery("devO", "new:2", "c", 8),
                                        ContextQuery("devX", "new:3", "c", 8)], 8)
    assert [c.contexts for c in ctxs] == [((1, 1), (3, 2)), ((2, 1),), ()]
    with pytest.raises(ValueError, match="context"):
        await store.reserve_and_put("c", [draft("p9", "pat", -2)], TTL)
    assert (await store.decide_contexts([ContextQuery("devP", "new:1", "c", 8)], 8))[0].contexts == ((1, 1), (3, 2))


async def test_recent_activity_is_time_weighted_counted_once_and_takes_late_requests(store: StateStore) -> None:
    def draft(i: str, t: int, search: bool) -> DecisionDraft:
        d = msgspec.structs.replace(_decision(i), person_id="d:devA", event_time=t)
        return DecisionDraft(d, 0, 9, context=0, search=search)

    h, t0 = ACTIVITY_HALF_LIFE_MS, 1_767_225_600_000
    await store.reserve_and_put("c", [draft("a1", t0, True), draft("a2", t0 + h, False)], TTL)
    await store.reserve_and_put("c", [draft("a1", t0, True)], TTL)  # redelivered: counts nothing
    await store.reserve_and_put("c", [draft("a0", t0 - h, True)], TTL)  # late: counts at its age
    [ctx] = await store.decide_contexts([ContextQuery("devA", "x:1", "c", 9)], 8)
    expected = Activity().add(t0, True).add(t0 + h, False).add(t0 - h, True)
    assert ctx.activity.at_ms == t0 + h == expected.at_ms
    assert ctx.activity.requests == pytest.approx(0.5 + 1 + 0.25) == pytest.approx(expected.requests)
    assert ctx.activity.search == pytest.approx(0.5 + 0.25)
    assert ctx.contexts == ((0, 3),)


# --- RecordReader ---------------------------------------------------------------------------------
async def test_decisions_keep_their_state_whether_it_was_stored_as_floats_or_encoded(store: StateStore) -> None:
    floats = _decision("s:1")
    encoded = msgspec.structs.replace(_decision("s:2"), state=encoded_state([0.25, -1.5, 3.0]))
    # ids that look like the state's key and its end, and an empty state (the Redis adapter cuts
    # the state out of the stored JSON without parsing it)
    tricky = msgspec.structs.replace(_decision("s:3"), request_id='r"state":[1,2]', imp_id="]",
                                     state=encoded_state([]))
    await store.reserve_and_put("c", [DecisionDraft(floats, 0, 0), DecisionDraft(encoded, 0, 0),
                                      DecisionDraft(tricky, 0, 0)], TTL)
    plain = await store.get_decisions(["s:1", "s:2", "missing"])
    assert list(plain) == ["s:1", "s:2"]
    assert plain["s:1"] == floats and plain["s:2"].state == [0.25, -1.5, 3.0]  # lists unless asked otherwise
    raw = await store.get_decisions(["s:1", "s:2", "s:3"], state_encoded=True)
    for got, original in ((raw["s:1"], floats), (raw["s:2"], encoded), (raw["s:3"], tricky)):
        assert encode(got) == encode(original)  # re-encoded (an experience record): the same bytes
        assert state_values(got) == state_values(original)
    assert await store.get_decisions([]) == {}


async def test_stored_decisions_are_checked_by_id(store: StateStore) -> None:
    await store.reserve_and_put("c", [DecisionDraft(_decision(f"e:{k}"), 0, 0) for k in range(3)], TTL)
    assert await store.stored_decisions(["e:0", "nope", "e:2", "e:0", "e:1", "x"]) == {"e:0", "e:1", "e:2"}
    assert await store.stored_decisions(["nope"]) == set() and await store.stored_decisions([]) == set()
    many = [f"m:{k}" for k in range(2_100)]  # across the Redis adapter's chunks of ids
    many[999], many[1000], many[2001] = "e:0", "e:1", "e:2"
    assert await store.stored_decisions(many) == {"e:0", "e:1", "e:2"}
    stored = [f"f:{k}" for k in range(1_100)]  # a first chunk all stored, a second one short
    await store.reserve_and_put("c", [DecisionDraft(_decision(i), 0, 0) for i in stored], TTL)
    assert await store.stored_decisions([*stored, "nope", stored[5]]) == set(stored)


async def test_claims_are_put_if_absent_and_read_back(store: StateStore) -> None:
    assert await store.claim_many([("k1", b"a"), ("k1", b"b")], 60) == [(True, b"a"), (False, b"a")]
    assert await store.claim_many([("k1", b"c"), ("k2", b"d")], 60) == [(False, b"a"), (True, b"d")]
    assert await store.peek_many(["k1", "k2", "k3"]) == [b"a", b"d", None]
    assert await store.peek_many([]) == [] and await store.claim_many([], 60) == []


# --- OutcomeStore ---------------------------------------------------------------------------------
async def test_record_results_apply_once_with_their_claim(store: StateStore) -> None:
    await store.init_budget("c", 1, 10_000)
    await store.reserve_and_put("c", [_draft("w", 3_000, 1), _draft("l", 2_000, 1)], TTL)
    won = _won("w", "devR", 500, close_ms=9_000, cost=1_200, period=1)
    lost = ResultEffect("outcome:l", b"L", "c", 1, "l", 0, "devR", None, 0)
    assert await store.record_results([won, lost, won], TTL) == [(True, b"W"), (True, b"L"), (False, b"W")]
    again = await store.record_results([won._replace(payload=b"other", cost_micros=9)], TTL)
    assert again == [(False, b"W")]
    assert await store.budget("c", 1) == (10_000, 1_200, 0)
    assert await _journey(store, "d:devR") == [("w", False)]
    assert await store.due_windows(9_000, 10) == ["w"]
    assert await store.peek_many(["outcome:w", "outcome:l"]) == [b"W", b"L"]


async def test_record_results_settle_each_ledger_of_a_batch_once(store: StateStore) -> None:
    for period in (2, 3):
        await store.init_budget("c", period, 10_000)
        await store.reserve_and_put("c", [_draft(f"p{period}:{k}", 1_000, period) for k in range(3)], TTL)
    assert await store.settle("c", 2, "p2:0", 100)  # settled before its result arrives: not again
    results = [ResultEffect(f"outcome:p{period}:{k}", b"R", "c", period, f"p{period}:{k}", 10 * (k + 1), "devS",
                            None, 0) for k in range(3) for period in (2, 3)]
    assert [a for a, _ in await store.record_results(results + results[:2], TTL)] == [True] * 6 + [False] * 2
    assert await store.budget("c", 2) == (10_000, 100 + 20 + 30, 0)
    assert await store.budget("c", 3) == (10_000, 10 + 20 + 30, 0)
    assert not await store.settle("c", 3, "p3:1", 999)  # settled by its result


async def test_a_chunk_of_new_and_redelivered_results_settles_and_stores_each_once(store: StateStore) -> None:
    # More results than one script call takes, several per device and per ledger, some redelivered
    # from an earlier call and some repeated in the same one: each applied once, its first payload kept.
    for period in (7, 8):
        await store.init_budget("c", period, 10**9)
        await store.reserve_and_put("c", [_draft(f"k{period}:{k}", 1_000, period) for k in range(70)], TTL)
    results = [_won(f"k{period}:{k}", f"devQ{k % 4}", 1_000 + k, close_ms=50_000 + k, cost=k + 1, period=period)
               ._replace(payload=b"%d" % k) for k in range(70) for period in (7, 8)]
    first = await store.record_results(results[:30], TTL)
    assert first == [(True, b"%d" % (i // 2)) for i in range(30)]
    again = [r._replace(payload=b"x", cost_micros=999) for r in results[:30]]
    got = await store.record_results([*again[::3], *results[30:], *results[100:110]], TTL)
    assert got == ([(False, b"%d" % (i // 2)) for i in range(0, 30, 3)] + [(True, b"%d" % (i // 2)) for i in range(30, 140)]
                   + [(False, b"%d" % (i // 2)) for i in range(100, 110)])
    for period in (7, 8):
        assert await store.budget("c", period) == (10**9, sum(range(1, 71)), 0)
    for q in range(4):
        assert await _journey(store, f"d:devQ{q}") == sorted(
            [(f"k{period}:{k}", False) for k in range(q, 70, 4) for period in (7, 8)],
            key=lambda x: (int(x[0].split(":")[1]), x[0]))
    assert len(await store.due_windows(10**6, 1_000)) == 140


async def test_a_chunk_of_new_and_redelivered_clicks_marks_and_claims_each_once(store: StateStore) -> None:
    await store.record_results([_won(f"q{k}", f"devV{k % 3}", k) for k in range(90)], TTL)
    clicks = [ClickEffect(f"click:q{k}", b"%d" % k, f"devV{k % 3}", f"q{k}") for k in range(90)]
    assert await store.record_clicks(clicks[:20:2], TTL) == [(True, b"%d" % k) for k in range(0, 20, 2)]
    got = await store.record_clicks([c._replace(payload=b"x") for c in clicks[:40]] + clicks[40:] + clicks[85:], TTL)
    assert got == ([(k % 2 == 1 and k < 20 or 20 <= k, b"x" if (k % 2 == 1 and k < 20 or 20 <= k) else b"%d" % k)
                    for k in range(40)] + [(True, b"%d" % k) for k in range(40, 90)]
                   + [(False, b"%d" % k) for k in range(85, 90)])
    for d in range(3):
        assert await _journey(store, f"d:devV{d}") == [(f"q{k}", True) for k in range(d, 90, 3)]


async def test_journeys_are_ordered_by_time_and_read_since_a_time(store: StateStore) -> None:
    await store.record_results([_won("d2", "devP", 2_000), _won("d1", "devP", 1_000), _won("d3", "devP", 1_000)], TTL)
    assert await _journey(store, "d:devP") == [("d1", False), ("d3", False), ("d2", False)]
    assert await _journey(store, "d:devP", since_ms=1_500) == [("d2", False)]
    assert await _journey(store, "d:nobody") == []


async def test_clicks_merge_into_the_journey_before_or_after_the_touch(store: StateStore) -> None:
    click = ClickEffect("click:early", b"C", "devK", "early")
    assert await store.record_clicks([click, click], TTL) == [(True, b"C"), (False, b"C")]  # before its touch
    await store.record_results([_won("early", "devK", 10), _won("later", "devK", 20)], TTL)
    await store.record_clicks([ClickEffect("click:later", b"C2", "devK", "later")], TTL)
    assert await _journey(store, "d:devK") == [("early", True), ("later", True)]
    assert await store.peek_many(["click:early", "click:later"]) == [b"C", b"C2"]


async def test_joins_apply_once_with_their_credits_and_late_ones_credit_nothing(store: StateStore) -> None:
    await store.record_results([_won("t1", "devJ", 100)], TTL)
    [ctx] = await store.join_contexts([JoinQuery("conv:x", None, "devJ", 0)])
    assert ctx.stored is None and ctx.person_id == "d:devJ" and [t.decision_id for t in ctx.journey] == ["t1"]
    join = JoinEffect("conv:x", b"J", b"LATE", "x", [("t1", 700)])
    assert await store.record_joins([join, join], TTL) == [(True, b"J"), (False, b"J")]
    assert await store.credits_many(["t1", "none"]) == [{"x": 700}, {}]
    [ctx] = await store.join_contexts([JoinQuery("conv:x", None, "devJ", 0)])
    assert ctx.stored == b"J"
    # A conversion whose credited touch's window is already final is stored as late, no credit.
    await store.claim_many([("final:t1", b"F")], TTL)
    late = JoinEffect("conv:y", b"J2", b"LATE", "y", [("t1", 5)])
    assert await store.record_joins([late], TTL) == [(True, b"LATE")]
    assert await store.credits_many(["t1"]) == [{"x": 700}]
    # ... whichever of its credited decisions is final, among many
    many = [(f"o{k}", 1) for k in range(1_500)]
    late_last = JoinEffect("conv:w", b"J3", b"LATE", "w", [*many, ("t1", 5)])
    assert await store.record_joins([late_last, JoinEffect("conv:v", b"J4", b"LATE", "v", many)], TTL) == [
        (True, b"LATE"), (True, b"J4")]
    assert await store.credits_many(["t1", "o1499"]) == [{"x": 700}, {"v": 1}]
    [none] = await store.join_contexts([JoinQuery("conv:z", None, None, 0)])
    assert none == (None, "", [])
    [user] = await store.join_contexts([JoinQuery("conv:u", "alice", "devJ", 0)])  # the user wins over the device
    assert user == (None, "alice", [])


async def test_many_joins_in_one_call_each_keep_their_own_context_and_credits(store: StateStore) -> None:
    """More joins than one script call takes, with 0–3 credits each, some of them twice."""
    await store.record_results([_won(f"tm{i}", f"devM{i}", i + 1) for i in range(0, 120, 7)], TTL)
    ctxs = await store.join_contexts([JoinQuery(f"conv:m{i}", None, f"devM{i}", 0) for i in range(120)])
    assert [(c.person_id, [t.decision_id for t in c.journey]) for c in ctxs] == [
        (f"d:devM{i}", [f"tm{i}"] if i % 7 == 0 else []) for i in range(120)]
    effects = [JoinEffect(f"conv:m{i}", b"J%d" % i, b"LATE", f"m{i}", [(f"dm{i}-{k}", 10 * i + k) for k in range(i % 4)])
               for i in range(120)]
    got = await store.record_joins([*effects, effects[1], effects[118]], TTL)
    assert got == [(True, b"J%d" % i) for i in range(120)] + [(False, b"J1"), (False, b"J118")]
    assert await store.credits_many(["dm3-0", "dm3-2", "dm118-1", "dm4-0"]) == [{"m3": 30}, {"m3": 32}, {"m118": 1181}, {}]
    assert [c.stored for c in await store.join_contexts([JoinQuery(f"conv:m{i}", None, None, 0) for i in (0, 77)])] == [
        b"J0", b"J77"]


# --- WindowStore ----------------------------------------------------------------------------------
async def test_windows_come_due_in_close_order_until_dropped(store: StateStore) -> None:
    await store.record_results([_won("w1", "devW", 1, close_ms=300), _won("w2", "devW", 2, close_ms=100),
                                _won("w3", "devW", 3, close_ms=900)], TTL)
    assert await store.due_windows(500, 10) == ["w2", "w1"]
    assert await store.due_windows(500, 1) == ["w2"]
    await store.drop_windows(["w2"])
    assert await store.due_windows(500, 10) == ["w1"]
    await store.drop_windows([])
    assert await store.due_windows(1_000, 10) == ["w1", "w3"]


async def test_parked_items_keep_their_first_payload_and_come_due_by_event_time(store: StateStore) -> None:
    await store.park_many([("c1", 50, b"one"), ("c2", 10, b"two"), ("c1", 50, b"dup")])
    await store.park_many([("c2", 5, b"again")])
    assert await store.due_parked(15, 10) == [("c2", b"two")]
    assert await store.due_parked(100, 10) == [("c2", b"two"), ("c1", b"one")]
    await store.unpark(["c2"])
    assert await store.due_parked(100, 10) == [("c1", b"one")]
    await store.unpark([])


async def test_many_parked_items_park_once_each_across_calls(store: StateStore) -> None:
    items = [(f"m{k}", 1_000 - k, b"%d" % k) for k in range(1_200)]
    await store.park_many(items[:300])
    await store.park_many([(i, t, b"dup") for i, t, _ in items[:600]] + items[600:])
    first = [(i, b"dup" if 300 <= k < 600 else p) for k, (i, _, p) in enumerate(items)]  # 300-599: first parked as dup
    assert await store.due_parked(10**6, 2_000) == first[::-1]


async def test_watermarks_only_rise(store: StateStore) -> None:
    await store.advance_watermarks("t", {0: 5, 1: 9})
    await store.advance_watermarks("t", {0: 3, 2: 1})
    await store.advance_watermarks("u", {0: 7})
    await store.advance_watermarks("u", {0: 8})
    assert await store.watermarks_many(["t", "u", "v"]) == [{0: 5, 1: 9, 2: 1}, {0: 8}, {}]
    assert await store.watermarks_many([]) == []


# --- IdentityStore --------------------------------------------------------------------------------
async def test_identity_peers_person_devices_and_ip_devices(store: StateStore) -> None:
    assert await store.assign_identities([IdentityAssignment("d1", "pa", 1.0), IdentityAssignment("d2", "pa", 0.97)],
                                         TTL) == 2
    assert await store.identity_peers(["d2", "d9"]) == [("pa", ["d1", "d2"]), ("d:d9", ["d9"])]
    assert await store.person_devices(["pa", "nobody"]) == [["d1", "d2"], []]
    assert sorted(map(sorted, await store.ip_devices([("ip1", ["a", "b"]), ("ip2", ["c"])], cap=3))) == [["a", "b"], ["c"]]
    [seen] = await store.ip_devices([("ip1", ["c", "d", "a"])], cap=3)  # at most cap remembered
    assert sorted(seen) == ["a", "b", "c"]


async def test_a_device_takes_its_own_touches_and_clicks_across_merges_and_splits(store: StateStore) -> None:
    await store.record_results([_won("x1", "devA", 5), _won("y1", "devB", 6)], TTL)
    await store.record_clicks([ClickEffect("click:x1", b"C", "devA", "x1")], TTL)
    merge = [IdentityAssignment("devA", "alice", 1.0), IdentityAssignment("devB", "alice", 0.8)]
    assert await store.assign_identities(merge, TTL) == 2
    ctx = await _seen(store, "devB")
    assert ctx.identity.person_id == "alice" and ctx.identity.device_count == 2
    assert ctx.identity.confidence == pytest.approx(0.8)
    assert [(t.decision_id, t.clicked) for t in ctx.journey] == [("x1", True), ("y1", False)]
    assert await _journey(store, "d:devA") == [] and await _journey(store, "d:devB") == []
    await store.record_results([_won("x2", "devA", 7)], TTL)  # now lands on the person
    await store.record_clicks([ClickEffect("click:x2", b"C", "devA", "x2")], TTL)
    assert (await _journey(store, "alice"))[-1] == ("x2", True)
    assert await store.assign_identities([IdentityAssignment("devB", None, 1.0)], TTL) == 1  # the link was revoked
    assert await _journey(store, "alice") == [("x1", True), ("x2", True)]
    assert await _journey(store, "d:devB") == [("y1", False)]
    assert (await _seen(store, "devB")).identity == ("d:devB", 1.0, 1)
    assert (await _seen(store, "devA")).identity.device_count == 1


async def test_a_leaving_device_takes_only_its_own_touches_whatever_its_id(store: StateStore) -> None:
    # Ids that hold one another ("dv" in "dv1") or characters a JSON string escapes: a touch is the
    # device's by its device_id, not by any text it contains.
    devices = ["dv", "dv1", "x-dv", 'd"q \\é']
    assert await store.assign_identities([IdentityAssignment(d, "bob", 1.0) for d in devices], TTL) == 4
    await store.record_results([_won(f"z{k}", devices[k % 4], 10 + k) for k in range(600)], TTL)
    await store.record_clicks([ClickEffect(f"click:z{k}", b"C", devices[k % 4], f"z{k}") for k in range(0, 600, 5)], TTL)
    for i, d in enumerate(devices):  # "dv" leaves first, while "dv1" and "x-dv" stay
        assert await store.assign_identities([IdentityAssignment(d, None, 1.0)], TTL) == 1
        assert await _journey(store, f"d:{d}") == [(f"z{k}", k % 5 == 0) for k in range(i, 600, 4)]
    assert await _journey(store, "bob") == []


# The context profile follows its devices across identity merges and splits.
_T0, _H = 1_767_225_600_000, ACTIVITY_HALF_LIFE_MS


def _counted(i: str, device: str, person: str, context: int, t: int, search: bool = False) -> DecisionDraft:
    """A decision of ``device`` (resolved to ``person``) counted on the profile."""
    d = msgspec.structs.replace(_decision(i), person_id=person, device_id=device, event_time=t)
    return DecisionDraft(d, 0, 4, context=context, search=search)


async def _seen_person(store: StateStore, person: str) -> DecideContext:
    """What the decision path reads for ``person`` (through a device of no requests assigned to it)."""
    await store.assign_identities([IdentityAssignment(f"probe-{person}", person, 1.0)], TTL)
    return await _seen(store, f"probe-{person}")


def _assert_activity(got: Activity, expected: Activity) -> None:
    """Equal up to float error once both are weighted as of the same time."""
    t = max(got.at_ms, expected.at_ms)
    a, b = got.rebased(t), expected.rebased(t)
    assert (a.requests, a.search) == (pytest.approx(b.requests, rel=1e-9, abs=1e-12),
                                      pytest.approx(b.search, rel=1e-9, abs=1e-12))


async def test_merge_moves_each_device_profile_to_the_person(store: StateStore) -> None:
    await store.reserve_and_put("c", [_counted("m1", "mA", "d:mA", 1, _T0, True), _counted("m2", "mA", "d:mA", 2, _T0 + _H),
                                      _counted("m3", "mB", "d:mB", 2, _T0 + _H // 2, True)], TTL)
    merged = [IdentityAssignment("mA", "pm", 1.0), IdentityAssignment("mB", "pm", 0.9)]
    assert await store.assign_identities(merged, TTL) == 2
    for device in ("mA", "mB"):
        ctx = await _seen(store, device)
        assert ctx.identity.person_id == "pm" and ctx.contexts == ((1, 1), (2, 2))
        _assert_activity(ctx.activity, Activity().add(_T0, True).add(_T0 + _H, False).add(_T0 + _H // 2, True))
        assert ctx.activity.requests == pytest.approx(0.5 + 1 + 2 ** -0.5)
    for person in ("d:mA", "d:mB"):
        old = await _seen_person(store, person)
        assert old.contexts == () and old.activity.requests == pytest.approx(0, abs=1e-12)
        assert old.activity.search == pytest.approx(0, abs=1e-12)


async def test_split_takes_the_leaving_device_counts_with_it(store: StateStore) -> None:
    await store.assign_identities([IdentityAssignment("sA", "ps", 1.0), IdentityAssignment("sB", "ps", 0.8)], TTL)
    await store.reserve_and_put("c", [_counted("s1", "sA", "ps", 1, _T0), _counted("s2", "sB", "ps", 1, _T0 + _H, True),
                                      _counted("s3", "sB", "ps", 4, _T0 + 2 * _H, True)], TTL)
    assert (await _seen(store, "sA")).contexts == ((1, 2), (4, 1))
    assert await store.assign_identities([IdentityAssignment("sB", None, 1.0)], TTL) == 1  # the link was revoked
    stays, leaves = await _seen(store, "sA"), await _seen(store, "sB")
    assert stays.identity.person_id == "ps" and stays.contexts == ((1, 1),)
    _assert_activity(stays.activity, Activity().add(_T0, False))
    assert leaves.identity.person_id == "d:sB" and leaves.contexts == ((1, 1), (4, 1))
    _assert_activity(leaves.activity, Activity().add(_T0 + _H, True).add(_T0 + 2 * _H, True))
    # the leaving device joins another person: the counts follow again, and only its own
    await store.reserve_and_put("c", [_counted("s4", "sC", "d:sC", 7, _T0)], TTL)
    await store.assign_identities([IdentityAssignment("sB", "d:sC", 0.7)], TTL)
    assert (await _seen(store, "sC")).contexts == ((1, 1), (4, 1), (7, 1))
    assert (await _seen_person(store, "d:sB")).contexts == ()
    assert (await _seen(store, "sA")).contexts == ((1, 1),)


async def test_assigning_the_stored_person_again_moves_nothing(store: StateStore) -> None:
    await store.reserve_and_put("c", [_counted("a1", "aA", "d:aA", 3, _T0, True), _counted("a2", "aB", "d:aB", 5, _T0 + _H)],
                                TTL)
    merge = [IdentityAssignment("aA", "pa", 1.0), IdentityAssignment("aB", "pa", 1.0)]
    assert await store.assign_identities(merge, TTL) == 2
    before = await _seen(store, "aA")
    assert before.contexts == ((3, 1), (5, 1))
    for again in (merge, merge[::-1], merge[1:], [*merge, *merge]):
        assert await store.assign_identities(again, TTL) == 0
        after = await _seen(store, "aA")
        assert (after.contexts, after.activity) == (before.contexts, before.activity)
    assert await store.assign_identities([IdentityAssignment("aZ", None, 1.0)], TTL) == 0  # alone stays alone
    assert (await _seen(store, "aZ")).contexts == ()


async def test_redelivered_decision_counts_once_and_moves_with_its_device(store: StateStore) -> None:
    first = _counted("r1", "rA", "d:rA", 6, _T0, True)
    await store.reserve_and_put("c", [first], TTL)
    await asyncio.gather(*(store.reserve_and_put("c", [first], TTL) for _ in range(4)))
    assert (await _seen(store, "rA")).contexts == ((6, 1),)
    assert await store.assign_identities([IdentityAssignment("rA", "pr", 1.0)], TTL) == 1
    # redelivered after the merge (resolved to the new person now): still stored, counts nothing
    await store.reserve_and_put("c", [first, _counted("r1", "rA", "pr", 6, _T0, True)], TTL)
    ctx = await _seen(store, "rA")
    assert ctx.identity.person_id == "pr" and ctx.contexts == ((6, 1),)
    _assert_activity(ctx.activity, Activity().add(_T0, True))
    assert (await _seen_person(store, "d:rA")).contexts == ()
    assert await store.assign_identities([IdentityAssignment("rA", None, 1.0)], TTL) == 1
    assert (await _seen(store, "rA")).contexts == ((6, 1),) and (await _seen_person(store, "pr")).contexts == ()


# --- ProfileStore ---------------------------------------------------------------------------------
async def _export_all(store: StateStore, limit: int = 2) -> dict[str, PersonProfile]:
    """Every person, batch by batch until the cursor is "" (a person listed twice must come equal)."""
    out: dict[str, PersonProfile] = {}
    cursor, calls = "", 0
    while True:
        rows, cursor = await store.export_profiles(cursor, limit)
        calls += 1
        for r in rows:
            assert out.setdefault(r.person_id, r) == r
        if not cursor:
            return out
        assert calls < 10_000


async def _populate(store: StateStore) -> None:
    """Linked and unlinked persons with profiles, shares, journeys, clicks (one before its touch)
    and a split: every kind of state a person has."""
    await store.reserve_and_put("c", [_counted("u1", "uA", "d:uA", 1, _T0, True), _counted("u2", "uB", "d:uB", 2, _T0 + _H),
                                      _counted("u3", "uC", "d:uC", 3, _T0 + 2 * _H, True)], TTL)
    await store.record_results([_won("j1", "uA", 10), _won("j2", "uB", 20), _won("j3", "uC", 30), _won("j4", "uD", 40)],
                               TTL)
    await store.record_clicks([ClickEffect("click:j1", b"C", "uA", "j1"), ClickEffect("click:j9", b"C", "uE", "j9")], TTL)
    await store.assign_identities([IdentityAssignment("uA", "una", 1.0), IdentityAssignment("uB", "una", 0.75),
                                   IdentityAssignment("uC", "una", 0.6), IdentityAssignment("uF", "fay", 0.9)], TTL)
    await store.reserve_and_put("c", [_counted("u4", "uA", "una", 1, _T0 + 3 * _H)], TTL)
    await store.assign_identities([IdentityAssignment("uC", None, 1.0)], TTL)


async def test_profiles_export_every_person_and_import_into_an_empty_store_as_they_were(store: StateStore,
                                                                                       twin: StateStore) -> None:
    await _populate(store)
    rows = await _export_all(store)
    assert set(rows) == {"una", "fay", "d:uC", "d:uD", "d:uE"}
    una = rows["una"]
    assert [d for d, _ in una.devices] == ["uA", "uB"] and dict(una.devices)["uB"] == pytest.approx(0.75)
    assert una.contexts == ((1, 2), (2, 1)) and [s.device_id for s in una.shares] == ["uA", "uB"]
    assert [t.decision_id for t in una.journey] == ["j1", "j2"] and una.clicks == ("j1",)
    assert rows["d:uC"].devices == () and [s.device_id for s in rows["d:uC"].shares] == ["uC"]
    assert rows["d:uE"].journey == () and rows["d:uE"].clicks == ("j9",)  # a click held before its touch
    assert rows["fay"].contexts == () and rows["fay"].journey == () and rows["fay"].devices == (("uF", 0.9),)
    assert await twin.import_profiles(list(rows.values()), TTL) == len(rows)
    assert await _export_all(twin, limit=100) == rows
    devices = ["uA", "uB", "uC", "uD", "uE", "uF", "uZ"]
    queries = [ContextQuery(d, f"q:{d}", "c", 4) for d in devices]
    assert await twin.decide_contexts(queries, 8) == await store.decide_contexts(queries, 8)
    # the restored shares move with their devices as the originals do
    for s in (store, twin):
        await s.assign_identities([IdentityAssignment("uB", None, 1.0)], TTL)
    assert await _export_all(twin) == await _export_all(store)
    assert (await _seen(twin, "uB")).contexts == ((2, 1),) and (await _seen(twin, "uA")).contexts == ((1, 2),)


async def test_import_replaces_a_person_relinks_its_devices_and_is_idempotent(store: StateStore) -> None:
    await _populate(store)
    rows = await _export_all(store)
    una = rows["una"]
    moved = una._replace(devices=(("uA", 1.0), ("uF", 0.5)), shares=una.shares[:1], journey=una.journey[:1], clicks=())
    for _ in range(2):
        assert await store.import_profiles([moved], TTL) == 1
        again = await _export_all(store)
        assert again["una"] == moved
        assert (await _seen(store, "uB")).identity == ("d:uB", 1.0, 1)  # dropped from the person: unlinked
        assert (await _seen(store, "uF")).identity.person_id == "una"
        assert "fay" not in again  # its only device moved to the imported person
    assert await store.import_profiles([], TTL) == 0


# --- Redis only -----------------------------------------------------------------------------------
async def test_redis_pipelines_survive_a_lost_script_cache_and_run_each_effect_once(redis_server: Any) -> None:
    """After SCRIPT FLUSH (what a Redis restart does to the script cache) a pipeline of script
    calls is answered NOSCRIPT: those calls did not run, so the store loads the scripts and
    sends them again — each reservation exactly once, in one call of the port."""
    s = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    await s.start()
    try:
        for period in (5, 6):
            await s.init_budget("c", period, 1_000)
        for round_, ids in enumerate((("a", "x"), ("b", "y"))):
            await s.redis.script_flush()
            got = await s.reserve_and_put("c", [_draft(ids[0], 600 - 200 * round_, 5), _draft(ids[1], 100, 6)], TTL)
            assert [d.bid for d in got] == [True, True]
        assert (await s.budget("c", 5)).reserved == 600 + 400 and (await s.budget("c", 6)).reserved == 200
        assert set(await s.get_decisions(["a", "x", "b", "y"])) == {"a", "x", "b", "y"}
    finally:
        await s.stop()
