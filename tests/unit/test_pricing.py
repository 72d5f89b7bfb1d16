"""The bid rules in one place: organic, floor, clip, budget; exact micros; first-price shading."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_service.pricing import (
    BID,
    BUDGET,
    FLOOR,
    NO_BID_REASONS,
    ORGANIC,
    BidLimits,
    price,
    shade_first_price,
    to_micros,
)


def test_each_rule_and_its_reason() -> None:
    raw = np.array([3.0, 3.0, 0.2, 3.0, 50.0, 3.0, 3.0])
    floor = np.array([0.5, 0.5, 0.5, 4.0, 0.5, 12.0, 0.5])
    left = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.002])  # USD: 0.002 buys one impression at <= 2 CPM
    channel = np.array([0, 1, 1, 1, 2, 1, 1])
    p = price(raw, floor, left, channel)
    assert p.reason.tolist() == [ORGANIC, BID, FLOOR, FLOOR, BID, FLOOR, BUDGET]
    assert p.bid_cpm_usd.tolist() == [0.0, 3.0, 0.0, 0.0, 10.0, 0.0, 0.0]  # a value under the floor is not bid up to it
    assert [NO_BID_REASONS[c] for c in p.reason] == [
        "organic", None, "floor", "floor", None, "floor", "budget"]


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 20), st.floats(0, 5), st.integers(0, 2)), min_size=1,
                max_size=20))
def test_a_bid_is_within_its_limits_never_under_its_floor_never_over_the_budget(rows) -> None:
    raw, floor, left, ch = (np.array(c) for c in zip(*rows, strict=True))
    lim = BidLimits(0.5, 10.0)
    p = price(raw, floor, left, ch, lim)
    bid = p.bid_cpm_usd
    on = p.reason == BID
    assert np.all(bid[~on] == 0)
    assert np.all((bid[on] >= np.maximum(floor[on], 0.5)) & (bid[on] <= 10.0))
    assert np.all(bid[on] <= left[on] * 1000 + 1e-9) and np.all(ch[on] != 0) and np.all(raw[on] >= floor[on])


@pytest.mark.parametrize(("cpm", "floor", "want"), [(2.3456789, 0, 2_345_000), (0.1, 0, 500_000),
                                                    (2.0, 2_000_500, 2_000_500), (99.0, 0, 10_000_000)])
def test_micros_are_on_the_grid_within_the_limits_and_never_under_the_floor(cpm: float, floor: int, want: int) -> None:
    assert to_micros(cpm, floor, (500_000, 10_000_000)) == want


def test_first_price_shading_stays_on_the_grid_over_the_floor_and_under_the_truthful_bid() -> None:
    assert shade_first_price(4_000_000, 0, 500_000, 0.85) == 3_400_000
    assert shade_first_price(4_000_000, 3_800_500, 500_000, 0.85) == 3_801_000  # floor rounded up onto the grid
    assert shade_first_price(600_000, 0, 500_000, 0.5) == 500_000  # never under the minimum
    assert shade_first_price(1_000_000, 0, 500_000, 1.0) == 1_000_000
