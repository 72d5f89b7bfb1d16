"""The decide path's plumbing on both stores: one budget check shared by a request's imps,
first-price shading, the tmax deadline, currencies, redelivered requests, pseudonymised ids."""

from __future__ import annotations

import time

import pytest

from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode, encode
from agent_service.contracts.events import Conversion, DeadLetter, IdentityLink
from agent_service.contracts.openrtb import BidRequest, Device, Imp, Site, User
from agent_service.pipeline.pseudonym import Pseudonymizer, redact
from agent_service.ports.store import StateStore
from tests.flowkit import DAY, T0, FlowKit
from tests.store_probe import read_claim, read_identity

pytestmark = pytest.mark.services



def _req(rid: str, imps: int = 1, floor: float = 0.5, **kw: object) -> BidRequest:
    return BidRequest(id=rid, imp=[Imp(id=str(i), bidfloor=floor) for i in range(imps)],
                      device=Device(ifa=f"dev-{rid}", devicetype=4), site=Site(cat=["IAB1"]),
                      ext={"gaelp": {"event_time": T0 + 12 * 3_600_000}}, **kw)  # type: ignore[arg-type]


async def test_imps_of_one_request_share_one_budget_check(store: StateStore) -> None:
    # $0.012 fits any single bid ($10 CPM at most = 0.01) but not 30 ($0.50 CPM at least = 0.015):
    # the request's imps reserve greedily in one step, never past the budget.
    kit = FlowKit(store, GaelpConfig().replace("budget", daily_usd=0.012))
    [result] = await kit.flow.decider.decide([(_req("m", imps=30), T0 + 12 * 3_600_000)])
    bid = [d for d in result.decisions if d.bid]
    assert len(result.decisions) == 30 and 0 < len(bid) < 30
    assert {d.no_bid_reason for d in result.decisions if not d.bid} == {"budget"}
    ledger = await store.budget("c", T0 // DAY)
    assert ledger.reserved == sum(d.action.bid_cpm_micros // 1000 for d in bid) <= ledger.budget
    assert result.response is not None
    assert sorted(b.impid for b in result.response.seatbid[0].bid) == sorted(d.imp_id for d in bid)


async def test_first_price_bids_are_shaded_but_never_under_the_floor(store: StateStore) -> None:
    kit = FlowKit(store, GaelpConfig().replace("budget", daily_usd=100.0))
    second = [await kit.flow.decider.decide([(_req(f"s{i}", at=2), T0 + 12 * 3_600_000)]) for i in range(20)]
    first = [await kit.flow.decider.decide([(_req(f"f{i}", at=1), T0 + 12 * 3_600_000)]) for i in range(20)]
    sp = [r[0].decisions[0].action.bid_cpm_micros for r in second if r[0].decisions[0].bid]
    fp = [r[0].decisions[0].action.bid_cpm_micros for r in first if r[0].decisions[0].bid]
    assert sp and fp and sum(fp) / len(fp) < sum(sp) / len(sp)
    assert min(fp) >= 500_000  # the floor (and the $0.50 minimum bid)


async def test_past_the_deadline_is_a_no_bid_without_reservation(store: StateStore) -> None:
    kit = FlowKit(store, GaelpConfig().replace("budget", daily_usd=100.0))
    [late, ok] = await kit.flow.decider.decide(
        [(_req("late"), T0 + 12 * 3_600_000), (_req("ok"), T0 + 12 * 3_600_000)],
        deadlines=[time.perf_counter() - 1, None])
    assert late.response is None and late.decisions[0].no_bid_reason == "tmax"
    assert ok.decisions[0].bid
    ledger = await store.budget("c", T0 // DAY)
    assert ledger.reserved == ok.decisions[0].action.bid_cpm_micros // 1000


async def test_foreign_currencies_are_no_bids(store: StateStore) -> None:
    kit = FlowKit(store)
    [a, b] = await kit.flow.decider.decide([(_req("eur", cur=["EUR"]), T0), (_req("ok", cur=["EUR", "USD"]), T0)])
    assert a.decisions[0].no_bid_reason == "currency" and b.response is not None and b.response.cur == "USD"


async def test_floors_in_a_configured_currency_are_converted_up_and_honoured(store: StateStore) -> None:
    """[serve.usd_per_unit]: a EUR floor of 3.00 at 1.1 USD/EUR is $3.30; every bid is at or over
    it (priced in USD), an unlisted currency stays a no-bid, a floor over the $10 cap a no-bid."""
    cfg = GaelpConfig().replace("budget", daily_usd=100.0).replace("serve", usd_per_unit={"EUR": 1.1})
    kit = FlowKit(store, cfg)
    t = T0 + 12 * 3_600_000

    def req(rid: str, floor: float, cur: str) -> BidRequest:
        return BidRequest(id=rid, imp=[Imp(id="1", bidfloor=floor, bidfloorcur=cur)],
                          device=Device(ifa=f"dev-{rid}", devicetype=4), site=Site(cat=["IAB1"]))

    eur = [r for i in range(30) for r in await kit.flow.decider.decide([(req(f"e{i}", 3.0, "EUR"), t)])]
    bids = [r.decisions[0] for r in eur if r.decisions[0].bid]
    assert bids and min(d.action.bid_cpm_micros for d in bids) >= 3_300_000
    assert all(r.response is None or (r.response.cur == "USD" and r.response.seatbid[0].bid[0].price >= 3.3)
               for r in eur)
    assert {r.decisions[0].no_bid_reason for r in eur if not r.decisions[0].bid} <= {"floor", "pacing"}
    [gbp] = await kit.flow.decider.decide([(req("g", 0.5, "GBP"), t)])
    assert gbp.response is None and gbp.decisions[0].no_bid_reason == "floor_currency"
    [high] = await kit.flow.decider.decide([(req("h", 9.5, "EUR"), t)])  # $10.45: over the $10 cap
    assert high.response is None and high.decisions[0].no_bid_reason == "floor"


def test_foreign_floor_conversion_rounds_up_exactly() -> None:
    from agent_service.money import floor_to_usd_micros

    assert floor_to_usd_micros(3.0, 1.1) == 3_300_000  # 3.0 * 1.1 is 3.3000000000000003 in floats
    assert floor_to_usd_micros(0.1, 0.3) == 30_000
    assert floor_to_usd_micros(1.0000001, 1.0) == 1_000_001  # a part of a micro rounds up
    with pytest.raises(ValueError):
        floor_to_usd_micros(1.0, 0.0)


async def test_redelivered_request_reuses_its_decision_and_reservation(store: StateStore) -> None:
    kit = FlowKit(store, GaelpConfig().replace("budget", daily_usd=100.0))
    first = [await kit.flow.decider.decide([(_req(f"r{i}"), T0 + 12 * 3_600_000)]) for i in range(10)]
    reserved = (await store.budget("c", T0 // DAY)).reserved
    again = [await kit.flow.decider.decide([(_req(f"r{i}"), T0 + 12 * 3_600_000)]) for i in range(10)]
    # the same decisions, byte for byte as logged (a state may be held encoded: Decision.state)
    assert [[encode(d) for d in r[0].decisions] for r in first] == [[encode(d) for d in r[0].decisions] for r in again]
    assert (await store.budget("c", T0 // DAY)).reserved == reserved


async def test_raw_ids_never_leave_the_service(store: StateStore) -> None:
    kit = FlowKit(store)
    ids = kit.flow.decider.ids
    req = BidRequest(id="pii", imp=[Imp(id="1")], device=Device(ip="198.51.100.7", ua="UA"),
                     user=User(buyeruid="alice@example.com"), ext={"gaelp": {"event_time": T0}})
    [dec] = (await kit.flow.decider.decide([(req, T0)]))[0].decisions
    assert "alice" not in dec.device_id and dec.device_id == ids("u-alice@example.com")
    await kit.handle(kit.topics.identity_links, IdentityLink(id="l", event_time=T0, device_id="phone-raw",
                                                              person_id="alice@example.com"))
    assert (await read_identity(store, ids("phone-raw"))).person_id == ids("alice@example.com")
    assert (await read_identity(store, "phone-raw")).person_id == "d:phone-raw"  # nothing stored under the raw id
    bad = (b'{"id": "c1", "event_time": -1, "value_micros": 1, "user_id": "alice@example.com",'
           b' "device_id": "phone-raw"}')
    [out] = await kit.handle(kit.topics.conversions, bad)
    letter = decode(out.value, DeadLetter)
    assert "alice" not in letter.payload and "phone-raw" not in letter.payload
    assert ids("phone-raw") in letter.payload
    await kit.ticks(T0 + DAY)
    await kit.handle(kit.topics.conversions, Conversion(id="c2", event_time=T0 + 1, value_micros=5,
                                                        user_id="alice@example.com"))
    for key in ("conv:c2",):
        assert b"alice" not in (await read_claim(store, key) or b"")


def test_pseudonymizer_is_keyed_and_stable() -> None:
    a, b = Pseudonymizer(b"k" * 16), Pseudonymizer(b"j" * 16)
    assert a("x") == a("x") != b("x") and len(a("x")) == 24
    assert Pseudonymizer.from_env({"GAELP_ID_SALT": "s" * 16})("x") == Pseudonymizer(b"s" * 16)("x")
    with pytest.raises(Exception, match="GAELP_ID_SALT"):
        Pseudonymizer.from_env({}, required=True)
    doc = {"user": {"id": "u1", "yob": 1990}, "device": {"ifa": "d1", "ip": "1.2.3.4"}, "imp": [{"id": "1"}]}
    out = redact(doc, a)
    assert out["user"]["id"] == a("u1") and out["device"]["ifa"] == a("d1") and out["imp"][0]["id"] == "1"
