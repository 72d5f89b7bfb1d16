"""Loading the iPinYou replay log and the training-split statistics.

``test.theta.txt`` has one auction per line, in time order: ``click market_price pCTR``
(click 0/1, market price an integer in CNY fen per mille, pCTR a probability). ``info.json``
has the training-split figures ``imp_train``, ``cost_train``, ``clk_train`` and
``price_counter_train`` (a histogram of market prices 0..300).

Loading is one vectorised parse; only when it fails do we scan line by line, so that the
error names the first bad line and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from agent_service.errors import DecodeError

__all__ = ["FIELDS", "AuctionLog", "CampaignInfo", "load_info", "load_log", "parse_log", "strip_rlb_headers"]

FIELDS: tuple[str, ...] = ("click", "market_price", "pctr")
"""The three fields of a log line, in order."""


class AuctionLog(NamedTuple):
    """The replay log as three aligned arrays of length T (one entry per auction, time order)."""

    click: np.ndarray
    """int64[T]: 1 if the impression was clicked."""
    price: np.ndarray
    """int64[T]: market price (the highest competing bid), fen per mille."""
    pctr: np.ndarray
    """float64[T]: predicted click-through rate, known before the auction."""

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.price.shape[0])

    def slice(self, start: int, stop: int) -> AuctionLog:
        """Auctions ``start .. stop-1`` as a new log (views, no copy)."""
        return AuctionLog(self.click[start:stop], self.price[start:stop], self.pctr[start:stop])


@dataclass(frozen=True)
class CampaignInfo:
    """Training-split statistics of one campaign (what RLB built its model from)."""

    imp_train: int
    """Impressions in the training split."""
    cost_train: int
    """Total market price paid in the training split."""
    clk_train: int
    """Clicks in the training split."""
    price_counter_train: tuple[int, ...]
    """Histogram of training market prices, index = price 0..300."""

    def __post_init__(self) -> None:
        if self.imp_train <= 0:
            raise DecodeError("$.imp_train", "must be > 0")
        if self.cost_train < 0 or self.clk_train < 0:
            raise DecodeError("$.cost_train", "cost_train and clk_train must be >= 0")
        if len(self.price_counter_train) == 0 or min(self.price_counter_train) < 0:
            raise DecodeError("$.price_counter_train", "must be a non-empty list of counts >= 0")

    @property
    def cpm(self) -> float:
        """CPM_train = cost_train / imp_train (price units per impression)."""
        return self.cost_train / self.imp_train

    @property
    def ctr(self) -> float:
        """Average training CTR, clk_train / imp_train (RLB's theta_avg)."""
        return self.clk_train / self.imp_train

    def price_pmf(self, laplace: float = 1.0) -> np.ndarray:
        """Market price distribution from the histogram with add-``laplace`` smoothing.

        ``laplace=1`` is the published code's ``calc_m_pdf``.

        :param laplace: pseudo-count added to every price bin.
        """
        counts = np.asarray(self.price_counter_train, dtype=np.float64)
        return (counts + laplace) / (counts.sum() + len(counts) * laplace)


def load_info(path: str | Path) -> CampaignInfo:
    """Read ``info.json`` (or the folder holding it).

    :param path: the file or its folder.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "info.json"
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise DecodeError(str(p), "file not found") from exc
    except json.JSONDecodeError as exc:
        raise DecodeError(str(p), f"not valid JSON: {exc}") from exc
    for key in ("imp_train", "cost_train", "clk_train", "price_counter_train"):
        if key not in raw:
            raise DecodeError(f"$.{key}", f"missing from {p}")
    try:
        counts = tuple(int(c) for c in raw["price_counter_train"])
    except (TypeError, ValueError) as exc:
        raise DecodeError("$.price_counter_train", "expected a list of integers") from exc
    return CampaignInfo(
        imp_train=int(raw["imp_train"]),
        cost_train=int(raw["cost_train"]),
        clk_train=int(raw["clk_train"]),
        price_counter_train=counts,
    )


def _check_line(fields: list[str], where: str, max_price: int) -> None:
    """Raise a DecodeError naming the first bad field of one split line."""
    if len(fields) != 3:
        raise DecodeError(where, f"expected 3 fields (click market_price pCTR), got {len(fields)}")
    click, price, pctr = fields
    if click not in ("0", "1"):
        raise DecodeError(f"{where} field click", f"expected 0 or 1, got {click!r}")
    try:
        p = int(price)
    except ValueError as exc:
        raise DecodeError(f"{where} field market_price", f"expected an integer, got {price!r}") from exc
    if not 0 <= p <= max_price:
        raise DecodeError(f"{where} field market_price", f"expected 0..{max_price}, got {p}")
    try:
        q = float(pctr)
    except ValueError as exc:
        raise DecodeError(f"{where} field pctr", f"expected a number, got {pctr!r}") from exc
    if not 0.0 <= q <= 1.0:
        raise DecodeError(f"{where} field pctr", f"expected a probability in [0, 1], got {pctr!r}")


def parse_log(text: str, source: str = "log", max_price: int = 300) -> AuctionLog:
    """Parse the text of a replay log.

    :param text: the whole file, one ``click market_price pCTR`` line per auction.
    :param source: name used in error messages (usually the file name).
    :param max_price: highest market price accepted.
    :raises DecodeError: naming ``source:LINE field NAME`` of the first malformed line.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    try:
        arr = np.array(" ".join(lines).split(), dtype=np.float64)
        ok = arr.size == 3 * len(lines)
    except ValueError:
        ok = False
    if ok:
        arr = arr.reshape(-1, 3)
        click, price, pctr = arr[:, 0], arr[:, 1], arr[:, 2]
        ok = bool(
            np.all((click == 0) | (click == 1))
            and np.all(price == np.round(price))
            and np.all((price >= 0) & (price <= max_price))
            and np.all((pctr >= 0) & (pctr <= 1))
        )
    if not ok:
        for i, line in enumerate(lines, start=1):
            _check_line(line.split(), f"{source}:{i}", max_price)
        raise DecodeError(source, "malformed log")  # unreachable unless a check above is too lax
    if not lines:
        raise DecodeError(source, "the log has no auctions")
    return AuctionLog(click.astype(np.int64), price.astype(np.int64), pctr.copy())


def strip_rlb_headers(text: str) -> str:
    """The auction lines of a log in the published RLB code's format, whose ``data/1000/*.txt``
    files (``han-cai/rlb-dp``) interleave tab-separated header lines (``dimension T``, then
    ``period`` or ``period cost``) with the auctions; a plain log comes back unchanged.

    Only a file whose first line is such a header is treated so (a 1- or 2-field line in a plain
    log stays, and is reported as malformed by :func:`parse_log`).

    :param text: the whole file.
    """
    lines = text.splitlines()
    if not lines or len(lines[0].split()) != 2:
        return text
    return "\n".join(line for line in lines if len(line.split()) not in (1, 2))


def load_log(path: str | Path, max_price: int = 300) -> AuctionLog:
    """Read ``test.theta.txt`` (or the folder holding it), or a log in the RLB code's format
    (:func:`strip_rlb_headers`: the validation split ``2997.validation.txt``).

    :param path: the file or its folder.
    :param max_price: highest market price accepted.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "test.theta.txt"
    try:
        text = p.read_text()
    except FileNotFoundError as exc:
        raise DecodeError(str(p), "file not found (pass --data DIR)") from exc
    return parse_log(strip_rlb_headers(text), source=p.name, max_price=max_price)
