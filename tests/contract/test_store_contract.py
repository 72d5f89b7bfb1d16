"""One contract for every StateStore adapter: in-memory and Redis run the same tests."""

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
    ContextQuery,
    DecideContext,
    DecisionDraft,
    IdentityAssignment,
    StateStore,
)

pytestmark = pytest.mark.services


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        s: StateStore = MemoryStore()
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisStore(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def _touch(decision_id: str, t: int, clicked: bool = False) -> Touch:
    return Touch(decision_id=decision_id, event_time=t, channel="social", creative=1, segment=0,
                 device_id="dev1", cost_micros=10, clicked=clicked)


def _decision(i: str, version: int = 0) -> Decision:
    return Decision(id=i, event_time=1, request_id="r", imp_id="1", person_id="p", device_id="d",
                    campaign="c", state=[0.5, 1.0], propensity=0.25, model_version=version,
                    action=Action(bid_cpm_micros=2_000_000, creative=3, channel="social", segment=1))


async def test_budget_reserve_is_atomic_and_exact(store: StateStore) -> None:
    await store.set_budget("c", 0, 1_000)
    results = await asyncio.gather(*(store.reserve("c", 0, f"r{i}", 100) for i in range(25)))
    assert sum(results) == 10
    state = await store.budget("c", 0)
    assert state.reserved == 1_000 and state.spent == 0 and state.remaining == 0


async def test_reserve_and_settle_are_idempotent(store: StateStore) -> None:
    await store.set_budget("c", 1, 1_000)
    assert await store.reserve("c", 1, "a", 600)
    assert await store.reserve("c", 1, "a", 600)  # redelivery: already reserved, no double hold
    assert (await store.budget("c", 1)).reserved == 600
    assert not await store.reserve("c", 1, "b", 600)
    assert await store.settle("c", 1, "a", 250)
    assert not await store.settle("c", 1, "a", 250)
    assert await store.reserve("c", 1, "a", 600)  # settled reservation is not re-opened
    state = await store.budget("c", 1)
    assert (state.spent, state.reserved) == (250, 0)
    assert not await store.settle("c", 1, "unknown", 5)


async def test_negative_money_is_refused(store: StateStore) -> None:
    with pytest.raises(BudgetError):
        await store.reserve("c", 2, "x", -1)
    with pytest.raises(BudgetError):
        await store.set_budget("c", 2, -5)


async def test_journey_upsert_is_idempotent_and_ordered(store: StateStore) -> None:
    await store.upsert_touch("devP", _touch("d2", 2_000), ttl_s=3600)
    await store.upsert_touch("devP", _touch("d1", 1_000), ttl_s=3600)
    await store.upsert_touch("devP", _touch("d1", 1_000, clicked=True), ttl_s=3600)
    j = await store.journey("d:devP", since_ms=0)
    assert [t.decision_id for t in j] == ["d1", "d2"]
    assert j[0].clicked
    assert [t.decision_id for t in await store.journey("d:devP", since_ms=1_500)] == ["d2"]


async def test_identity_link_moves_anonymous_journey(store: StateStore) -> None:
    await store.upsert_touch("devA", _touch("x1", 5), ttl_s=3600)
    assert (await store.resolve("devA")).person_id == "d:devA"
    await store.link_identity("devA", "alice", 1.0)
    await store.link_identity("devB", "alice", 0.8)
    ident = await store.resolve("devB")
    assert ident.person_id == "alice" and ident.device_count == 2 and ident.confidence == pytest.approx(0.8)
    assert [t.decision_id for t in await store.journey("alice", 0)] == ["x1"]
    assert await store.journey("d:devA", 0) == []
    ctx = await store.decide_context("devA", "c", 9, max_touches=8)
    assert ctx.identity.person_id == "alice" and [t.decision_id for t in ctx.journey] == ["x1"]


async def test_decide_context_limits_touches_and_reads_budget(store: StateStore) -> None:
    for i in range(6):
        await store.upsert_touch("devC", _touch(f"t{i}", 100 + i), ttl_s=3600)
    await store.set_budget("c", 3, 777)
    ctx = await store.decide_context("devC", "c", 3, max_touches=4)
    assert [t.decision_id for t in ctx.journey] == ["t2", "t3", "t4", "t5"]
    assert ctx.budget.budget == 777 and ctx.identity.device_count == 1


async def test_put_decision_keeps_the_first(store: StateStore) -> None:
    first = await store.put_decision(_decision("k", version=1), ttl_s=60)
    again = await store.put_decision(_decision("k", version=2), ttl_s=60)
    assert first.model_version == 1 and again.model_version == 1
    got = await store.get_decisions(["k", "missing"])
    assert list(got) == ["k"] and got["k"] == first


async def test_windows_credit_claim_park_watermark(store: StateStore) -> None:
    await store.open_window("w1", 300)
    await store.open_window("w2", 100)
    await store.open_window("w3", 900)
    assert await store.due_windows(500, 10) == ["w2", "w1"]
    await store.drop_windows(["w2"])
    assert await store.due_windows(500, 10) == ["w1"]
    await store.add_credit("w1", "conv1", 40)
    await store.add_credit("w1", "conv1", 40)
    assert await store.credits("w1") == {"conv1": 40}
    assert await store.claim("k1", b"first", 60) == b"first"
    assert await store.claim("k1", b"second", 60) == b"first"
    assert await store.peek("k1") == b"first" and await store.peek("nope") is None
    await store.park("c2", 20, b"two")
    await store.park("c1", 10, b"one")
    await store.park("c1", 10, b"dup")
    assert await store.due_parked(15, 10) == [("c1", b"one")]
    await store.unpark(["c1"])
    assert await store.due_parked(100, 10) == [("c2", b"two")]
    await store.advance_watermark("t", 0, 50)
    await store.advance_watermark("t", 0, 40)
    await store.advance_watermark("t", 1, 7)
    assert await store.watermarks("t") == {0: 50, 1: 7}


async def test_clicks_merge_into_journey_before_or_after_the_touch(store: StateStore) -> None:
    await store.mark_click("devK", "early", ttl_s=3600)  # click arrives before its touch
    await store.upsert_touch("devK", _touch("early", 10), ttl_s=3600)
    await store.upsert_touch("devK", _touch("later", 20), ttl_s=3600)
    await store.mark_click("devK", "later", ttl_s=3600)
    assert [t.clicked for t in await store.journey("d:devK", 0)] == [True, True]
    await store.link_identity("devK", "kim", 1.0)
    ctx = await store.decide_context("devK", "c", 0, max_touches=5)
    assert [(t.decision_id, t.clicked) for t in ctx.journey] == [("early", True), ("later", True)]
    await store.upsert_touch("devK", _touch("linked", 30), ttl_s=3600)  # now lands on the person
    await store.mark_click("devK", "linked", ttl_s=3600)
    assert [(t.decision_id, t.clicked) for t in await store.journey("kim", 0)][-1] == ("linked", True)


async def test_init_budget_does_not_override(store: StateStore) -> None:
    await store.init_budget("c", 7, 100)
    await store.init_budget("c", 7, 999)
    assert (await store.budget("c", 7)).budget == 100
    await store.set_budget("c", 7, 50)
    assert (await store.budget("c", 7)).budget == 50


# --- batched calls (one round trip per batch on Redis) ------------------------------------------
async def test_decide_contexts_match_decide_context_and_return_stored_decisions(store: StateStore) -> None:
    from agent_service.ports.store import ContextQuery

    await store.init_budget("c", 3, 1_000)
    await store.upsert_touch("devA", _touch("t1", 100), 3600)
    await store.mark_click("devA", "t1", 3600)
    await store.link_identity("devB", "bob", 0.95)
    [stored] = await store.put_decisions([_decision("q2:1")], 3600)
    ctxs = await store.decide_contexts([ContextQuery("devA", "q1:1", "c", 3), ContextQuery("devB", "q2:1", "c", 3)], 8)
    single = await store.decide_context("devA", "c", 3, 8)
    assert ctxs[0]._replace(existing=None) == single and ctxs[0].existing is None
    assert [t.clicked for t in ctxs[0].journey] == [True]
    assert ctxs[1].identity.person_id == "bob" and ctxs[1].identity.confidence == pytest.approx(0.95)
    assert ctxs[1].existing == stored
    assert await store.decide_contexts([], 8) == []


async def test_put_decisions_is_put_if_absent(store: StateStore) -> None:
    first = await store.put_decisions([_decision("a", 1), _decision("b", 1)], 3600)
    again = await store.put_decisions([_decision("a", 2), _decision("c", 2)], 3600)
    assert [d.model_version for d in again] == [1, 2] and again[0] == first[0]
    assert set(await store.get_decisions(["a", "b", "c", "zz"])) == {"a", "b", "c"}


async def test_decisions_keep_their_state_whether_it_was_stored_as_floats_or_encoded(store: StateStore) -> None:
    floats = _decision("s:1")
    encoded = msgspec.structs.replace(_decision("s:2"), state=encoded_state([0.25, -1.5, 3.0]))
    await store.put_decisions([floats, encoded], 3600)
    plain = await store.get_decisions(["s:1", "s:2"])
    assert plain["s:1"] == floats and plain["s:2"].state == [0.25, -1.5, 3.0]  # lists unless asked otherwise
    raw = await store.get_decisions(["s:1", "s:2"], state_encoded=True)
    for got, original in ((raw["s:1"], floats), (raw["s:2"], encoded)):
        assert encode(got) == encode(original)  # re-encoded (an experience record): the same bytes
        assert state_values(got) == state_values(original)


async def test_reserve_and_put_reserves_in_order_stores_each_decision_once(store: StateStore) -> None:
    from agent_service.ports.store import DecisionDraft

    def draft(i: str, micros: int, period: int = 5) -> DecisionDraft:
        d = _decision(i)
        short = msgspec.structs.replace(d, bid=False, no_bid_reason="budget")
        return DecisionDraft(d, micros, period, short if micros else None)

    await store.init_budget("c", 5, 1_000)
    await store.init_budget("c", 6, 100)
    got = await store.reserve_and_put("c", [draft("a", 600), draft("b", 500), draft("n", 0), draft("c", 400),
                                            draft("x", 100, period=6)], 3600)
    assert [(d.id, d.bid) for d in got] == [("a", True), ("b", False), ("n", True), ("c", True), ("x", True)]
    assert got[1].no_bid_reason == "budget"
    assert (await store.budget("c", 5)).reserved == 1_000 and (await store.budget("c", 6)).reserved == 100
    # a duplicate (redelivered request) gets the stored decision and reserves nothing more
    again = await store.reserve_and_put("c", [draft("a", 999), draft("b", 1)], 3600)
    assert [encode(d) for d in again] == [encode(got[0]), encode(got[1])]
    assert (await store.budget("c", 5)).reserved == 1_000
    stored = await store.get_decisions(["a", "b", "n", "c", "x"])
    assert [stored[i].bid for i in "abncx"] == [True, False, True, True, True]
    assert await store.settle("c", 5, "a", 450) and (await store.budget("c", 5)).spent == 450
    await store.replace_decisions([msgspec.structs.replace(got[3], bid=False, no_bid_reason="tmax_late")], 3600)
    assert (await store.get_decisions(["c"]))["c"].no_bid_reason == "tmax_late"  # a withdrawn bid, overwritten
    with pytest.raises(BudgetError):
        await store.reserve_and_put("c", [DecisionDraft(_decision("z"), 10, 5, None)], 3600)
    with pytest.raises(BudgetError):
        await store.reserve_and_put("c", [draft("z", -1)], 3600)


async def test_context_profile_counts_each_new_decision_once(store: StateStore) -> None:
    from agent_service.ports.store import ContextQuery, DecisionDraft

    def draft(i: str, person: str, context: int, micros: int = 0, t: int = 1, search: bool = False) -> DecisionDraft:
        d = msgspec.structs.replace(_decision(i), person_id=person, event_time=t)
        short = msgspec.structs.replace(d, bid=False, no_bid_reason="budget")
        return DecisionDraft(d, micros, 8, short if micros else None, context=context, search=search)

    await store.init_budget("c", 8, 100)
    await store.link_identity("devP", "pat", 1.0)
    got = await store.reserve_and_put("c", [draft("p1", "pat", 3), draft("p2", "pat", 3, 500), draft("p3", "pat", 1),
                                            draft("p4", "pat", -1), draft("o1", "d:devO", 2)], 3600)
    assert not got[1].bid  # the budget could not hold it: stored as a no-bid, still a request seen
    # redelivered (and concurrent duplicate) drafts count nothing more
    await asyncio.gather(*(store.reserve_and_put("c", [draft("p1", "pat", 3), draft("p3", "pat", 5)], 3600)
                           for _ in range(5)))
    ctxs = await store.decide_contexts([ContextQuery("devP", "new:1", "c", 8), ContextQuery("devO", "new:2", "c", 8),
                                        ContextQuery("devX", "new:3", "c", 8)], 8)
    assert [c.contexts for c in ctxs] == [((1, 1), (3, 2)), ((2, 1),), ()]
    with pytest.raises(ValueError, match="context"):
        await store.reserve_and_put("c", [draft("p9", "pat", -2)], 3600)
    assert (await store.decide_contexts([ContextQuery("devP", "new:1", "c", 8)], 8))[0].contexts == ((1, 1), (3, 2))


async def test_recent_activity_is_time_weighted_counted_once_and_takes_late_requests(store: StateStore) -> None:
    from agent_service.ports.store import ACTIVITY_HALF_LIFE_MS, Activity, ContextQuery, DecisionDraft

    def draft(i: str, t: int, search: bool) -> DecisionDraft:
        d = msgspec.structs.replace(_decision(i), person_id="d:devA", event_time=t)
        return DecisionDraft(d, 0, 9, context=0, search=search)

    h, t0 = ACTIVITY_HALF_LIFE_MS, 1_767_225_600_000
    await store.reserve_and_put("c", [draft("a1", t0, True), draft("a2", t0 + h, False)], 3600)
    await store.reserve_and_put("c", [draft("a1", t0, True)], 3600)  # redelivered: counts nothing
    await store.reserve_and_put("c", [draft("a0", t0 - h, True)], 3600)  # late: counts at its age
    [ctx] = await store.decide_contexts([ContextQuery("devA", "x:1", "c", 9)], 8)
    expected = Activity().add(t0, True).add(t0 + h, False).add(t0 - h, True)
    assert ctx.activity.at_ms == t0 + h == expected.at_ms
    assert ctx.activity.requests == pytest.approx(0.5 + 1 + 0.25) == pytest.approx(expected.requests)
    assert ctx.activity.search == pytest.approx(0.5 + 0.25)
    assert ctx.contexts == ((0, 3),)



# --- the context profile follows its devices across identity merges and splits ---------------
_T0, _H = 1_767_225_600_000, ACTIVITY_HALF_LIFE_MS


def _counted(i: str, device: str, person: str, context: int, t: int, search: bool = False) -> DecisionDraft:
    """A decision of ``device`` (resolved to ``person``) counted on the profile."""
    d = msgspec.structs.replace(_decision(i), person_id=person, device_id=device, event_time=t)
    return DecisionDraft(d, 0, 4, context=context, search=search)


async def _seen(store: StateStore, device: str) -> DecideContext:
    """What the decision path reads for ``device``."""
    [ctx] = await store.decide_contexts([ContextQuery(device, "probe:1", "c", 4)], 8)
    return ctx


async def _seen_person(store: StateStore, person: str) -> DecideContext:
    """What the decision path reads for ``person`` (through a device of no requests assigned to it)."""
    await store.assign_identities([IdentityAssignment(f"probe-{person}", person, 1.0)], 3600)
    return await _seen(store, f"probe-{person}")


def _assert_activity(got: Activity, expected: Activity) -> None:
    """Equal up to float error once both are weighted as of the same time."""
    t = max(got.at_ms, expected.at_ms)
    a, b = got.rebased(t), expected.rebased(t)
    assert (a.requests, a.search) == (pytest.approx(b.requests, rel=1e-9, abs=1e-12),
                                      pytest.approx(b.search, rel=1e-9, abs=1e-12))


async def test_merge_moves_each_device_profile_to_the_person(store: StateStore) -> None:
    await store.reserve_and_put("c", [_counted("m1", "mA", "d:mA", 1, _T0, True), _counted("m2", "mA", "d:mA", 2, _T0 + _H),
                                      _counted("m3", "mB", "d:mB", 2, _T0 + _H // 2, True)], 3600)
    merged = [IdentityAssignment("mA", "pm", 1.0), IdentityAssignment("mB", "pm", 0.9)]
    assert await store.assign_identities(merged, 3600) == 2
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
    await store.assign_identities([IdentityAssignment("sA", "ps", 1.0), IdentityAssignment("sB", "ps", 0.8)], 3600)
    await store.reserve_and_put("c", [_counted("s1", "sA", "ps", 1, _T0), _counted("s2", "sB", "ps", 1, _T0 + _H, True),
                                      _counted("s3", "sB", "ps", 4, _T0 + 2 * _H, True)], 3600)
    assert (await _seen(store, "sA")).contexts == ((1, 2), (4, 1))
    assert await store.assign_identities([IdentityAssignment("sB", None, 1.0)], 3600) == 1  # the link was revoked
    stays, leaves = await _seen(store, "sA"), await _seen(store, "sB")
    assert stays.identity.person_id == "ps" and stays.contexts == ((1, 1),)
    _assert_activity(stays.activity, Activity().add(_T0, False))
    assert leaves.identity.person_id == "d:sB" and leaves.contexts == ((1, 1), (4, 1))
    _assert_activity(leaves.activity, Activity().add(_T0 + _H, True).add(_T0 + 2 * _H, True))
    # the leaving device joins another person: the counts follow again, and only its own
    await store.reserve_and_put("c", [_counted("s4", "sC", "d:sC", 7, _T0)], 3600)
    await store.assign_identities([IdentityAssignment("sB", "d:sC", 0.7)], 3600)
    assert (await _seen(store, "sC")).contexts == ((1, 1), (4, 1), (7, 1))
    assert (await _seen_person(store, "d:sB")).contexts == ()
    assert (await _seen(store, "sA")).contexts == ((1, 1),)


async def test_assigning_the_stored_person_again_moves_nothing(store: StateStore) -> None:
    await store.reserve_and_put("c", [_counted("a1", "aA", "d:aA", 3, _T0, True), _counted("a2", "aB", "d:aB", 5, _T0 + _H)],
                                3600)
    merge = [IdentityAssignment("aA", "pa", 1.0), IdentityAssignment("aB", "pa", 1.0)]
    assert await store.assign_identities(merge, 3600) == 2
    before = await _seen(store, "aA")
    assert before.contexts == ((3, 1), (5, 1))
    for again in (merge, merge[::-1], merge[1:], [*merge, *merge]):
        assert await store.assign_identities(again, 3600) == 0
        after = await _seen(store, "aA")
        assert (after.contexts, after.activity) == (before.contexts, before.activity)
    assert await store.assign_identities([IdentityAssignment("aZ", None, 1.0)], 3600) == 0  # alone stays alone
    assert (await _seen(store, "aZ")).contexts == ()


async def test_redelivered_decision_counts_once_and_moves_with_its_device(store: StateStore) -> None:
    first = _counted("r1", "rA", "d:rA", 6, _T0, True)
    await store.reserve_and_put("c", [first], 3600)
    await asyncio.gather(*(store.reserve_and_put("c", [first], 3600) for _ in range(4)))
    assert (await _seen(store, "rA")).contexts == ((6, 1),)
    assert await store.assign_identities([IdentityAssignment("rA", "pr", 1.0)], 3600) == 1
    # redelivered after the merge (resolved to the new person now): still stored, counts nothing
    await store.reserve_and_put("c", [first, _counted("r1", "rA", "pr", 6, _T0, True)], 3600)
    ctx = await _seen(store, "rA")
    assert ctx.identity.person_id == "pr" and ctx.contexts == ((6, 1),)
    _assert_activity(ctx.activity, Activity().add(_T0, True))
    assert (await _seen_person(store, "d:rA")).contexts == ()
    assert await store.assign_identities([IdentityAssignment("rA", None, 1.0)], 3600) == 1
    assert (await _seen(store, "rA")).contexts == ((6, 1),) and (await _seen_person(store, "pr")).contexts == ()

async def test_reserve_and_put_never_overspends_under_concurrency(store: StateStore) -> None:
    from agent_service.ports.store import DecisionDraft

    await store.init_budget("c", 7, 10_000)

    async def one(k: int) -> list[Decision]:
        drafts = []
        for j in range(5):
            d = _decision(f"cc{(k * 5 + j) % 60}")  # overlapping ids: concurrent duplicates
            drafts.append(DecisionDraft(d, 700, 7, msgspec.structs.replace(d, bid=False, no_bid_reason="budget")))
        return await store.reserve_and_put("c", drafts, 3600)

    results = await asyncio.gather(*(one(k) for k in range(20)))
    state = await store.budget("c", 7)
    bids = {d.id for r in results for d in r if d.bid}
    assert state.reserved == 700 * len(bids) <= 10_000  # one reservation per decided id, never over budget
    stored = await store.get_decisions([f"cc{i}" for i in range(60)])
    assert {i for i, d in stored.items() if d.bid} == bids  # what was answered is what was stored


async def test_record_results_apply_once_with_their_claim(store: StateStore) -> None:
    from agent_service.ports.store import ResultEffect

    await store.init_budget("c", 1, 10_000)
    assert await store.reserve_batch("c", 1, [("w", 3_000), ("l", 2_000)]) == [True, True]
    won = ResultEffect("outcome:w", b"W", "c", 1, "w", 1_200, "devR", _touch("w", 500), 9_000)
    lost = ResultEffect("outcome:l", b"L", "c", 1, "l", 0, "devR", None, 0)
    assert await store.record_results([won, lost, won], 3600) == [(True, b"W"), (True, b"L"), (False, b"W")]
    again = await store.record_results([won._replace(payload=b"other", cost_micros=9)], 3600)
    assert again == [(False, b"W")]
    assert await store.budget("c", 1) == (10_000, 1_200, 0)
    assert [t.decision_id for t in await store.journey("d:devR", 0)] == ["w"]
    assert await store.due_windows(9_000, 10) == ["w"]


async def test_record_clicks_and_joins_apply_once(store: StateStore) -> None:
    from agent_service.ports.store import ClickEffect, JoinEffect, JoinQuery

    await store.upsert_touch("devJ", _touch("t1", 100), 3600)
    click = ClickEffect("click:t1", b"C", "devJ", "t1")
    assert await store.record_clicks([click, click], 3600) == [(True, b"C"), (False, b"C")]
    assert [t.clicked for t in await store.journey("d:devJ", 0)] == [True]

    [ctx] = await store.join_contexts([JoinQuery("conv:x", None, "devJ", 0)])
    assert ctx.stored is None and ctx.person_id == "d:devJ" and [t.decision_id for t in ctx.journey] == ["t1"]
    join = JoinEffect("conv:x", b"J", b"LATE", "x", [("t1", 700)])
    assert await store.record_joins([join, join], 3600) == [(True, b"J"), (False, b"J")]
    assert await store.credits_many(["t1", "none"]) == [{"x": 700}, {}]
    [ctx] = await store.join_contexts([JoinQuery("conv:x", None, "devJ", 0)])
    assert ctx.stored == b"J"
    # A conversion whose credited touch's window is already final is stored as late, no credit.
    await store.claim("final:t1", b"F", 3600)
    late = JoinEffect("conv:y", b"J2", b"LATE", "y", [("t1", 5)])
    assert await store.record_joins([late], 3600) == [(True, b"LATE")]
    assert await store.credits("t1") == {"x": 700}
    [none] = await store.join_contexts([JoinQuery("conv:z", None, None, 0)])
    assert none == (None, "", [])


async def test_small_batched_helpers(store: StateStore) -> None:
    await store.link_identities([("d1", "pa", 1.0), ("d2", "pa", 0.97)])
    assert (await store.resolve("d2")).device_count == 2
    await store.park_many([("c1", 50, b"one"), ("c2", 10, b"two"), ("c1", 50, b"dup")])
    assert await store.due_parked(100, 10) == [("c2", b"two"), ("c1", b"one")]
    await store.advance_watermarks("t", {0: 5, 1: 9})
    await store.advance_watermarks("t", {0: 3})
    assert await store.watermarks_many(["t", "u"]) == [{0: 5, 1: 9}, {}]
    assert await store.claim_many([("k1", b"a"), ("k1", b"b")], 60) == [(True, b"a"), (False, b"a")]
    assert await store.peek_many(["k1", "k2"]) == [b"a", None]


async def test_redis_pipelines_survive_a_lost_script_cache_and_run_each_effect_once(redis_server: Any) -> None:
    """After SCRIPT FLUSH (what a Redis restart does to the script cache) a pipeline of script
    calls is answered NOSCRIPT: those calls did not run, so the store loads the scripts and
    sends them again — each reservation exactly once, in one call of the port."""
    from agent_service.ports.store import DecisionDraft

    def draft(i: str, micros: int, period: int) -> DecisionDraft:
        d = _decision(i)
        return DecisionDraft(d, micros, period, msgspec.structs.replace(d, bid=False, no_bid_reason="budget"))

    s = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    await s.start()
    try:
        for period in (5, 6):
            await s.init_budget("c", period, 1_000)
        for round_, ids in enumerate((("a", "x"), ("b", "y"))):
            await s.redis.script_flush()
            got = await s.reserve_and_put("c", [draft(ids[0], 600 - 200 * round_, 5), draft(ids[1], 100, 6)], 3600)
            assert [d.bid for d in got] == [True, True]
        assert (await s.budget("c", 5)).reserved == 600 + 400 and (await s.budget("c", 6)).reserved == 200
        assert set(await s.get_decisions(["a", "x", "b", "y"])) == {"a", "x", "b", "y"}
    finally:
        await s.stop()
