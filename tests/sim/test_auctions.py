"""Auction kernels: second price, first price, GSP, hindsight position prices (property tests)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simulators.auctions import NO_WINNER, first_price, gsp, gsp_for, position_prices, second_price, to_ticks

_bids = st.integers(2, 7).flatmap(lambda k: st.integers(1, 40).flatmap(
    lambda n: arrays(np.int32, (k, n), elements=st.integers(0, 30))))  # small range: many ties


@given(_bids, st.integers(0, 30), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_second_price_winner_pays_max_of_second_bid_and_reserve(bids: np.ndarray, reserve: int, seed: int) -> None:
    alloc = second_price(bids, reserve, np.random.default_rng(seed))
    for j in range(bids.shape[1]):
        col = np.sort(bids[:, j])[::-1]
        if col[0] < reserve:
            assert alloc.winner[j] == NO_WINNER and alloc.price[j] == 0
            continue
        w = alloc.winner[j]
        assert bids[w, j] == col[0]  # the winner has the highest bid (any of the tied ones)
        assert alloc.price[j] == max(col[1], reserve)


@given(_bids, st.integers(0, 30), st.integers(0, 2**32 - 1))
@settings(max_examples=100, deadline=None)
def test_first_price_winner_pays_its_bid(bids: np.ndarray, reserve: int, seed: int) -> None:
    alloc = first_price(bids, reserve, np.random.default_rng(seed))
    won = alloc.winner >= 0
    assert (alloc.price[won] == bids.max(axis=0)[won]).all()
    assert (bids.max(axis=0)[~won] < reserve).all()


@given(st.integers(1, 6), st.integers(0, 60), st.integers(0, 40), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_truthful_bidding_is_never_beaten_in_single_slot_second_price(k: int, value: int, deviation: int,
                                                                      seed: int) -> None:
    rng = np.random.default_rng(seed)
    others = rng.integers(0, 60, size=(k, 400)).astype(np.int32)
    reserve = rng.integers(0, 20, size=400).astype(np.int32)

    def utility(bid: int) -> np.ndarray:
        bids = np.vstack([np.full((1, 400), bid, dtype=np.int32), others])
        a = second_price(bids, reserve, np.random.default_rng(seed + 1))
        return np.where(a.winner == 0, value - a.price, 0)

    truthful = utility(value)
    for alt in (value + deviation, max(0, value - deviation)):
        other = utility(alt)
        assert truthful.mean() >= other.mean()
        assert (truthful >= other - 1e-9).all()  # dominant: never worse auction by auction, ties included


def test_ties_are_broken_uniformly() -> None:
    bids = np.full((4, 40_000), 7, dtype=np.int32)
    alloc = second_price(bids, 0, np.random.default_rng(1))
    counts = np.bincount(alloc.winner, minlength=4)
    assert (np.abs(counts / 40_000 - 0.25) < 0.01).all()
    assert (alloc.price == 7).all()


@given(st.integers(1, 9), st.integers(1, 10), st.integers(0, 2**32 - 1))
@settings(max_examples=100, deadline=None)
def test_gsp_for_one_bidder_matches_the_reference_gsp(k: int, positions: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 50
    others = rng.integers(0, 100_000, size=(k, n)).astype(np.int32)  # wide range: ties are rare
    ours = rng.integers(0, 100_000, size=n).astype(np.int32)
    reserve = rng.integers(0, 30_000, size=n).astype(np.int32)
    tie = (others == ours).any(axis=0)
    pl = gsp_for(ours, others, reserve, positions, rng)
    pos, price = gsp(np.vstack([ours, others]), reserve, positions, rng)
    assert (pl.position[~tie] == pos[0, ~tie]).all()
    assert (pl.price[~tie] == price[0, ~tie]).all()
    placed = pl.position > 0
    assert (pl.price[placed] <= ours[placed]).all() and (pl.price[placed] >= reserve[placed]).all()


def test_gsp_ranks_prices_by_next_bid_and_reserve() -> None:
    bids = np.array([[50], [40], [30], [5]], dtype=np.int32)
    pos, price = gsp(bids, 10, 3, np.random.default_rng(0))
    assert pos[:, 0].tolist() == [1, 2, 3, 0]
    assert price[:, 0].tolist() == [40, 30, 10, 0]  # the third pays the reserve: the next bid is below it


def test_position_prices_are_what_gsp_charges() -> None:
    rng = np.random.default_rng(3)
    others = rng.integers(0, 10_000, size=(9, 200)).astype(np.int32)
    reserve = rng.integers(0, 3_000, size=200).astype(np.int64)
    pp = position_prices(others, reserve, 10)
    for j in range(10):
        ok = pp[:, j] < 2**31 - 1
        pl = gsp_for((pp[ok, j] + 1).astype(np.int32), others[:, ok], reserve[ok].astype(np.int32), 10, rng)
        tie = (others[:, ok] == pp[ok, j] + 1).any(axis=0)
        # one tick above the hindsight price buys position j or better (equal prices collapse), at that price
        assert (pl.position[~tie] >= 1).all() and (pl.position[~tie] <= j + 1).all()
        assert (pl.price[~tie] == pp[ok, j][~tie]).all()
        exact = ~tie & ((others[:, ok] > pp[ok, j]).sum(axis=0) == j)  # exactly j bids above the price
        assert (pl.position[exact] == j + 1).all()


def test_ticks_round_down_like_money() -> None:
    from agent_service.money import cpm_to_micros
    for usd in (0.5, 1.2345, 9.9999, 3.0, 0.0011):
        assert int(to_ticks(usd)) * 1000 == cpm_to_micros(usd)
