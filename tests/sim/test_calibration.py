"""The calibration file: the default loads, round-trips, errors name the key, and a changed
calibration changes the world."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from agent_service.errors import ConfigError
from agent_service.units import DAY_MS
from simulators.batches import EngineConfig
from simulators.calibration import (
    calibration_from_mapping,
    default_calibration_path,
    dump_calibration,
    load_calibration,
)
from simulators.delays import DelayModel
from simulators.engine import Engine
from tests.sim.helpers import actions, calibration

_SMALL = EngineConfig(persons=800, opportunities_per_day=4_000, seed=5)


def test_default_loads_and_is_documented() -> None:
    cal = load_calibration()
    assert cal.meta.name == "default" and "not fitted" in cal.meta.source
    assert cal.n_segments == 4 and cal.creatives.count >= 50
    assert cal.channels.social.auction == "second_price" and cal.channels.social.competitors == 5
    assert cal.channels.paid_search.auction == "gsp" and cal.channels.paid_search.positions == 10
    text = default_calibration_path().read_text()
    assert "WHAT THESE NUMBERS ARE BASED ON" in text


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    cal = calibration(channels={"social": {"competitor_cpm": 2.25}}, creatives={"ab_arms": 3})
    path = tmp_path / "c.toml"
    path.write_text(dump_calibration(cal))
    assert load_calibration(path) == cal


def test_delay_default_is_mostly_3_to_14_days_with_a_lost_tail() -> None:
    d = DelayModel(load_calibration().delay)
    early, within = d.cdf(3.0), d.share_within(14.0)
    assert early < 0.15 and within - early > 0.7 and 0.05 < 1 - within < 0.2


@pytest.mark.parametrize(("data", "key"), [
    ({"segments": [{"share": 0.5}, {"name": "b", "share": 1.5}]}, "segments[1].share"),
    ({"channels": {"social": {"competitor_cpn": 2.0}}}, "channels.social.competitor_cpn"),
    ({"channels": {"paid_search": {"auction": "vickrey"}}}, "channels.paid_search.auction"),
    ({"delay": {"components": [{"family": "weibull"}]}}, "delay.components[0].family"),
    ({"traffic": {"hourly": [1.0] * 23}}, "traffic.hourly"),
    ({"population": {"login_rate": "half"}}, "population.login_rate"),
    ({"segments": [{"category": "IAB99"}]}, "segments[0].category"),
    ({"meta": {"version": 2}}, "meta.version"),
    ({"creatives": {"count": 3, "appeal": [[0.1, 0.2]]}}, "creatives.appeal"),
])
def test_errors_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        calibration_from_mapping(data)
    assert exc.value.key == key


def test_missing_or_broken_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_calibration(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[meta\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_calibration(bad)


def test_file_format_is_the_documented_default() -> None:
    data = tomllib.loads(default_calibration_path().read_text())
    assert set(data) == {"meta", "population", "traffic", "segments", "journey", "channels", "conversion", "delay",
                         "creatives", "competitors", "targeting"}


# --- a changed calibration changes the world ------------------------------------------------------
def _day(cal, bid: float = 3.0):  # type: ignore[no-untyped-def]
    e = Engine(cal, _SMALL)
    t0 = e.cfg.start_ms
    opps = e.sample(0, t0, t0 + DAY_MS)
    out, truth = e.resolve(opps, actions(opps, bid, channel=2))
    return e, opps, out, truth


def test_competitor_prices_change_win_rate() -> None:
    _, _, cheap, _ = _day(calibration(channels={"social": {"competitor_cpm": 1.0}}))
    _, _, dear, _ = _day(calibration(channels={"social": {"competitor_cpm": 4.0}}))
    assert cheap.won.mean() > dear.won.mean() + 0.3


def test_segment_activity_profiles_change_traffic_mix() -> None:
    night = [3.0] * 6 + [0.1] * 18
    base = load_calibration()
    segs = list(base.segments)
    segs[1] = type(segs[1])(**{**segs[1].__dict__, "hourly": tuple(night)})
    _, o1, _, _ = _day(base)
    _, o2, _, _ = _day(calibration(segments=tuple(segs)))
    night1 = (o1.segment[((o1.t % DAY_MS) // 3_600_000) < 6] == 1).mean()
    night2 = (o2.segment[((o2.t % DAY_MS) // 3_600_000) < 6] == 1).mean()
    assert night2 > night1 + 0.1


def test_delay_and_value_sections_change_conversions() -> None:
    fast = calibration(delay={"components": (load_calibration().delay.components[0],)})
    assert DelayModel(fast.delay).mean() < DelayModel(load_calibration().delay).mean() / 3
    e1, _, _, t1 = _day(load_calibration())
    e2, _, _, t2 = _day(calibration(channels={"social": {"cvr_click_by_stage": (0.05, 0.1, 0.2)}}))
    assert t2.expected_value.sum() > 3 * t1.expected_value.sum()


def test_creative_appeal_generator_and_explicit_matrix() -> None:
    flat = calibration(creatives={"appeal_scale": 0.0, "quality_sigma": 0.0})
    e_flat, _, _, _ = _day(flat)
    assert np.allclose(e_flat.model.appeal, 0.0)
    e, _, _, _ = _day(load_calibration())
    spread = e.model.appeal.max(axis=1) - e.model.appeal.min(axis=1)
    assert (spread > 0.8).all()  # creatives matter per segment
    assert len(set(e.model.best_creative.tolist())) > 1  # and the best one differs by segment
    explicit = [[0.0] * 60 for _ in range(4)]
    explicit[2][7] = 1.0
    e3, _, _, _ = _day(calibration(creatives={"appeal": tuple(tuple(r) for r in explicit)}))
    assert e3.model.best_creative[2] == 7 and e3.model.appeal.sum() == 1.0
