"""How the click rate of a won impression depends on the price paid, learned from won auctions.

RLB (and the plain bidder) value an impression at its pCTR whatever it costs: click and market
price are assumed independent given the pCTR. On real logs they are not (cheap slots and
expensive ones click differently from what the pCTR says). A won auction reveals its price and
its click, and whether it was won depends only on the bid (a function of the pCTR and the
pacing state) and the price, so among won auctions the clicks at price ``d`` are an unbiased
sample of the clicks at price ``d`` for that pCTR: no censoring correction is needed where
prices were won, and where none were (above the bids sent) the factor stays at the prior, 1.

The model is a factor per price bucket (``r = (clicks + k) / (expected + k)``, the expectation
from the calibrated pCTR scaled so that all won auctions' clicks are matched), shrunk to 1
with ``k`` pseudo-clicks. The bid then wins the prefix of prices that maximises
``sum_d m(d) (u r(d) + V(n-1, b-d) - V(n-1, b))`` (with ``r = 1`` this is RLB's rule).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PriceClickModel", "best_prefix_bid"]


def _edges(max_price: int) -> np.ndarray:
    """Bucket starts: every price up to 8, then log-spaced (about 25 % wide); fixed a priori."""
    geo = np.unique(np.round(np.geomspace(8, max_price + 1, 16)).astype(np.int64))
    return np.unique(np.concatenate([np.arange(0, 8), geo[geo <= max_price]]))


class PriceClickModel:
    """CTR factor by price paid, from won auctions only.

    :param max_price: highest price (the bid cap).
    :param prior_clicks: ``k``, pseudo-clicks shrinking every bucket's factor to 1.
    """

    def __init__(self, max_price: int, prior_clicks: float) -> None:
        self.max_price = max_price
        self.prior_clicks = prior_clicks
        self.bucket = np.searchsorted(_edges(max_price), np.arange(max_price + 1), side="right") - 1
        self._price: list[int] = []
        self._pctr: list[float] = []
        self._click: list[int] = []
        self.factor = np.ones(max_price + 1)

    def observe(self, won: bool, price: int, pctr: float, click: int) -> None:
        """One past auction; only won ones (price and click revealed) count."""
        if won and click >= 0 and price >= 0:
            self._price.append(min(price, self.max_price))
            self._pctr.append(pctr)
            self._click.append(click)

    def fit(self, value: np.ndarray | None = None) -> np.ndarray:
        """Refit the factor per price (index = price); returns and keeps it.

        :param value: the won auctions' pCTRs as the bidder reads them (calibrated), in the order
            observed; None: the raw pCTRs.
        """
        if not self._price:
            return self.factor
        b = self.bucket[np.asarray(self._price)]
        v = np.asarray(self._pctr if value is None else value, dtype=np.float64)
        y = np.asarray(self._click, dtype=np.float64)
        expected = v * (y.sum() / max(v.sum(), 1e-12))  # the won auctions' level matched
        n = int(self.bucket.max()) + 1
        clicks = np.bincount(b, weights=y, minlength=n)
        exp_b = np.bincount(b, weights=expected, minlength=n)
        k = self.prior_clicks
        self.factor = ((clicks + k) / (exp_b + k))[self.bucket]
        return self.factor

    @property
    def won_pctrs(self) -> np.ndarray:
        """pCTRs of the won auctions recorded so far (to calibrate before :meth:`fit`)."""
        return np.asarray(self._pctr, dtype=np.float64)


def best_prefix_bid(u: float, factor: np.ndarray, pmf: np.ndarray, row: np.ndarray, budget_left: int,
                    max_bid: int) -> int:
    """The bid ``delta`` maximising ``sum_{d <= delta} m(d) (u r(d) + V[b-d] - V[b])``.

    :param u: the auction's value in the value function's units.
    :param factor: ``r`` by price (0 .. max_bid).
    :param pmf: market price distribution ``m`` by price.
    :param row: ``V[n-1, .]``, the value of budget with the auctions left after this one.
    :param budget_left: ``b``.
    :param max_bid: bid cap.
    """
    top = min(budget_left, max_bid)
    if top <= 0:
        return 0
    d = np.arange(1, top + 1)
    gain = pmf[d] * (u * factor[d] + row[budget_left - d] - row[budget_left])
    cum = np.cumsum(gain)
    best = int(np.argmax(cum))
    # price 0 is always won at any bid >= 0 and paid nothing: it does not change the choice
    return best + 1 if cum[best] > 0 else 0
