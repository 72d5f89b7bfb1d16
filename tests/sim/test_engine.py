"""The vectorised engine: determinism, common random numbers, journeys, fatigue, conversions
(delay goodness of fit, no conversion without a touch, the lost tail), targeting, organic reach,
adaptive competitors, and the calibration's economics (a naive fixed bid loses)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from agent_service.units import DAY_MS
from simulators.batches import Actions, EngineConfig, concat, take
from simulators.calibration import load_calibration
from simulators.engine import Engine
from simulators.model import WorldModel
from tests.sim.helpers import actions, calibration

_CFG = EngineConfig(persons=600, opportunities_per_day=3_000, seed=11)


def _run(engine: Engine, days: float = 1.0, slots: int = 24, bid: float = 3.0, **kw):  # type: ignore[no-untyped-def]
    t0 = engine.cfg.start_ms
    outs, opps, truths = [], [], []
    for s in range(int(days * slots)):
        o = engine.sample(0, t0 + s * DAY_MS // slots, t0 + (s + 1) * DAY_MS // slots)
        out, tr = engine.resolve(o, actions(o, bid, **kw))
        outs.append(out)
        opps.append(o)
        truths.append(tr)
    return concat(opps), concat(outs), concat(truths)


def test_same_seed_same_events_bit_for_bit() -> None:
    a = _run(Engine(load_calibration(), _CFG))
    b = _run(Engine(load_calibration(), _CFG))
    for x, y in zip(a, b, strict=True):
        for col_x, col_y in zip(x, y, strict=True):
            assert col_x.dtype == col_y.dtype and np.array_equal(col_x, col_y, equal_nan=True)
    c = _run(Engine(load_calibration(), EngineConfig(persons=600, opportunities_per_day=3_000, seed=12)))
    assert not np.array_equal(a[0].t[:50], c[0].t[:50])


def test_common_random_numbers_across_policies() -> None:
    cheap = _run(Engine(load_calibration(), _CFG), bid=0.6)[0]
    rich = _run(Engine(load_calibration(), _CFG), bid=9.0)[0]
    for name in ("t", "person", "device", "floor", "comp_social", "comp_search", "u_click", "u_conv", "delay_days"):
        assert np.array_equal(getattr(cheap, name), getattr(rich, name)), name


def test_traffic_follows_the_hourly_profile() -> None:
    e = Engine(load_calibration(), EngineConfig(persons=600, opportunities_per_day=50_000, seed=1))
    t0 = e.cfg.start_ms
    o = e.sample(0, t0, t0 + DAY_MS)
    per_hour = np.bincount((o.t - t0) // 3_600_000, minlength=24) / o.t.size
    expected = e.model.traffic_hour
    assert np.abs(per_hour - expected).max() < 0.01
    assert abs(o.t.size - 50_000 * e.model.traffic_day[3]) < 5 * np.sqrt(50_000)  # a Thursday


def test_journeys_advance_with_exposures_and_decay_without() -> None:
    e = Engine(load_calibration(), _CFG)
    t0 = e.cfg.start_ms
    o = e.sample(0, t0, t0 + DAY_MS)
    people = np.unique(o.person)[:50]
    before = e.interest(people, np.full(people.size, t0 + DAY_MS))
    rows = take(o, np.isin(o.person, people))
    acts = actions(rows, 10.0, channel=2)
    out, _ = e.resolve(rows, acts)
    shown = np.unique(rows.person[out.won])
    after = e.interest(shown, np.full(shown.size, t0 + DAY_MS))
    assert (after > before[np.isin(people, shown)]).all()
    later = e.interest(shown, np.full(shown.size, t0 + 40 * DAY_MS))
    assert np.allclose(later, e.pop.baseline[shown], atol=0.01)  # relaxed back to baseline


def test_fatigue_lowers_the_click_probability_of_the_same_creative() -> None:
    e = Engine(calibration(channels={"social": {"competitor_cpm": 0.01, "competitor_sigma": 0.0}}), _CFG)
    t0 = e.cfg.start_ms
    o = e.sample(0, t0, t0 + DAY_MS // 4)
    one = take(o, np.array([0]))
    one = one._replace(offered=np.array([[False, False, True]]), floor=np.array([1], dtype=np.int32))
    probs = []
    for k in range(5):
        row = one._replace(t=one.t + k * 60_000)
        _, truth = e.resolve(row, actions(row, 5.0, channel=2, creative=3))
        probs.append(float(truth.p_click[0]))
    assert all(a > b for a, b in zip(probs, probs[1:], strict=False))
    _, fresh = e.resolve(one._replace(t=one.t + 10 * 60_000), actions(one, 5.0, channel=2, creative=4))
    model = WorldModel(e.cal)
    seg = int(one.segment[0])
    assert fresh.p_click[0] / probs[-1] > np.exp(model.appeal[seg, 4] - model.appeal[seg, 3])


def test_conversion_delays_match_the_calibrated_distribution() -> None:
    cal = calibration(channels={"social": {"cvr_click_by_stage": (0.9, 0.9, 0.9), "cvr_view_by_stage": (0.3, 0.3, 0.3),
                                           "competitor_cpm": 0.05}})
    e = Engine(cal, EngineConfig(persons=20_000, opportunities_per_day=20_000, seed=2))
    o, out, _ = _run(e, days=1.0, slots=4, bid=10.0, channel=2)
    delays = (out.conv_time[out.conv] - o.t[out.conv]) / DAY_MS
    assert delays.size > 2_000
    ks = stats.kstest(delays, e.delays.cdf)
    assert ks.pvalue > 1e-3, ks
    late = ~out.in_window[out.conv]
    assert np.array_equal(late, delays > cal.conversion.window_days)  # the lost tail is flagged, not hidden
    assert abs(late.mean() - (1 - e.delays.share_within(14.0))) < 0.03


def test_no_conversion_without_a_touch_and_one_pending_per_person() -> None:
    cal = calibration(channels={"social": {"cvr_click_by_stage": (0.5, 0.5, 0.5), "cvr_view_by_stage": (0.05, 0.05, 0.05)}})
    e = Engine(cal, _CFG)
    o, out, _ = _run(e, days=2.0, bid=4.0, channel=2)
    assert out.conv.sum() > 30
    assert (out.won[out.conv]).all() and (out.conv_time[out.conv] > o.t[out.conv]).all()
    # a person's next conversion is decided only after the previous one landed
    conv_people, conv_t, touch_t = o.person[out.conv], out.conv_time[out.conv], o.t[out.conv]
    for p in np.unique(conv_people):
        mine = np.argsort(touch_t[conv_people == p])
        ct, tt = conv_t[conv_people == p][mine], touch_t[conv_people == p][mine]
        assert (tt[1:] >= ct[:-1]).all()
    assert (out.conv_device[out.conv] >= e.pop.dev_start[o.person[out.conv]]).all()


def test_targeting_filters_by_audience_and_everyone_means_no_filter() -> None:
    e = Engine(load_calibration(), _CFG)
    t0 = e.cfg.start_ms
    o = e.sample(0, t0, t0 + DAY_MS // 2)
    out, _ = e.resolve(o, actions(o, 3.0, channel=2, target=1))
    assert (e.pop.audience[o.person[out.eligible]] == 1).all() and out.eligible.any()
    assert (out.eligible == ((e.pop.audience[o.person] == 1) & o.offered[:, 2])).all()
    out2, _ = e.resolve(o, actions(o, 3.0, channel=2, target=e.model.k))
    assert (out2.eligible == o.offered[:, 2]).all()


def test_organic_is_free_and_capped_per_day() -> None:
    e = Engine(calibration(channels={"organic": {"offer_by_stage": (1.0, 1.0, 1.0)}}), _CFG)
    o, out, _ = _run(e, days=2.0, channel=0)
    assert e.organic_cap > 0 and (out.price == 0).all()
    day = (o.t - e.cfg.start_ms) // DAY_MS
    assert np.bincount(day[out.won]).tolist() == [e.organic_cap, e.organic_cap]


def test_adaptive_competitors_raise_bids_when_they_lose() -> None:
    cal = calibration(competitors={"adaptive": True, "adapt_rate": 2.0})
    e = Engine(cal, _CFG)
    _run(e, days=1.0, bid=10.0, channel=2)
    assert (e.comp_log_mult[0, 2, :5] > 0.05).all()  # GAELP won most auctions: they bid up
    e2 = Engine(load_calibration(), _CFG)
    _run(e2, days=1.0, bid=10.0, channel=2)
    assert (e2.comp_log_mult == 0).all()


def test_a_naive_fixed_bid_loses_to_a_value_aware_paced_bidder() -> None:
    """The calibration's reason to exist: value-aware bidding with pacing beats any fixed bid."""
    budget = 3_000_000  # $3 a day for 3,000 opportunities (the service default's ratio)

    def day(policy) -> float:  # type: ignore[no-untyped-def]
        e = Engine(load_calibration(), EngineConfig(persons=1_000, opportunities_per_day=4_000, seed=4))
        t0, spent, won_value, mu = e.cfg.start_ms, 0, 0.0, 0.0
        for s in range(48):
            o = e.sample(0, t0 + s * DAY_MS // 48, t0 + (s + 1) * DAY_MS // 48)
            acts = policy(e, o, mu)
            left = budget - spent
            acts = acts._replace(active=acts.active & (np.cumsum(acts.bid) <= left))  # never over budget
            out, truth = e.resolve(o, acts)
            spent += int(out.price.sum())
            won_value += float(truth.expected_value[out.won].sum())
            mu = max(0.0, mu + 2.0 * (spent / budget - (s + 1) / 48))
        return won_value

    def fixed(bid: float):  # type: ignore[no-untyped-def]
        return lambda e, o, mu: actions(o, bid)

    def paced(e: Engine, o, mu: float) -> Actions:  # type: ignore[no-untyped-def]
        m = e.model
        seg = o.segment.astype(np.int64)  # oracle values: this tests the world, not a learner
        stage = m.stage_of(e.interest(o.person, o.t)).astype(np.int64)
        ch = np.where(o.offered[:, 1], 1, 2)
        cr = m.best_creative[seg]
        pc = m.p_click(ch, seg, stage, cr, 0.0, np.where(ch == 1, 3, 1))
        conv, view = m.p_conv(ch, seg, stage, (o.t % DAY_MS) // 3_600_000, 0.0)
        bid = np.clip(m.expected_value(pc, conv, view, seg) * 1000 / (1 + mu), 0.0, 10.0)
        return Actions(bid >= 0.5, (bid * 1000).astype(np.int32), cr.astype(np.int16), ch.astype(np.int8),
                       np.full(o.t.size, m.k, dtype=np.int8))

    best_fixed = max(day(fixed(b)) for b in (1.0, 2.0, 3.0, 5.0, 10.0))
    assert day(paced) > 2.0 * best_fixed


def test_journey_state_is_what_resolve_uses() -> None:
    e = Engine(load_calibration(), _CFG)
    _run(e, days=0.5)
    t0 = e.cfg.start_ms + DAY_MS // 2
    o = e.sample(0, t0, t0 + DAY_MS // 24)
    js = e.journey_state(o.person, o.t)
    acts = actions(o, 4.0, channel=2, creative=5)
    _, truth = e.resolve(o, acts)
    assert np.array_equal(truth.stage, js.stage)
    first = np.unique(o.person, return_index=True)[1]  # rows not preceded by the same person in the batch
    want = e.model.p_click(np.full(first.size, 2), o.segment[first].astype(np.int64), js.stage[first].astype(np.int64),
                           np.full(first.size, 5), js.fatigue[first, 5], 1)
    np.testing.assert_allclose(truth.p_click[first], want, rtol=1e-5)
    assert (truth.p_conv[js.pending] == 0).all()


def test_first_price_option_and_paid_search_positions() -> None:
    e = Engine(calibration(channels={"social": {"auction": "first_price"}}), _CFG)
    o, out, _ = _run(e, days=0.5, bid=4.0, channel=2)
    assert out.won.any() and (out.price[out.won] == 4_000).all()  # first price: pay the bid
    e2 = Engine(load_calibration(), _CFG)
    o2, out2, truth2 = _run(e2, days=1.0, bid=4.0, channel=1)
    pos = out2.position[out2.won]
    assert pos.min() >= 1 and pos.max() <= 10 and len(np.unique(pos)) > 3
    assert (out2.price[out2.won] <= 4_000).all() and (out2.price[out2.won] >= o2.floor[out2.won]).all()
    curve = e2.model.pos_ctr[1]
    for p in (2, 5):  # the position effect is in the true click probability
        rows = out2.won & (out2.position == p)
        base = e2.model.p_click(np.full(rows.sum(), 1), o2.segment[rows].astype(np.int64),
                                truth2.stage[rows].astype(np.int64), np.zeros(rows.sum(), dtype=np.int64), 0.0, 1)
        assert (truth2.p_click[rows] <= base * curve[p] / curve[1] + 1e-12).all()
