"""OPE of a GAELP candidate against an outside bidder's log, over bid buckets.

The outside bidder is the logging policy: its action on an impression is the *bucket* of its
bid — 0 for no bid, then one bucket per interval of ``edges`` (CPM)::

    bucket(0) = 0;  bucket(b) = 1 + #{e in edges : e <= b}  for b > 0      (len(edges) + 2 buckets)

The candidate is a GAELP version that decided the same request and imp without sending the
bid (a candidate row of ``decisions``, paired on request and imp id): its action is the bucket
of the bid it would have sent, one draw standing in for its distribution as in ``gaelp ope``.
A candidate row that said no for a reason of its own (floor, budget, pacing, organic) is bucket
0; one that would have bid but logged no price (``no_bid_reason = 'shadow'`` with price 0) has
no known action (a log from before candidate rows carried the price) and is left out with a count.

The logging propensity is the bidder's own (``propensity``: the probability of the bid's
bucket) or, when it logs none, the estimate of :mod:`agent_service.evaluation.outside_propensity`
from the bidder's features (its ``features``, when every record has the same number of them,
else GAELP's view of the request: the candidate row's state vector). Records are refused as in
:func:`agent_service.evaluation.ope_log.build_feedback`: a missing propensity (logged mode), one
outside (0, 1] — kept in the log, counted here, never used — in either mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from agent_service.evaluation.ope_log import (
    JoinedOutcome,
    LoggedDecision,
    LoggedFeedback,
    RewardMode,
    build_feedback,
)
from agent_service.evaluation.outside_propensity import fit_propensities

__all__ = ["OutsideFeedback", "OutsideRow", "PropensitySource", "bid_bucket", "outside_feedback"]

PropensitySource = Literal["auto", "logged", "estimated"]
_OUTSIDE_VERSION = 0
"""The version every outside record is evaluated under (the bidder is chosen by name when read)."""


class OutsideRow(NamedTuple):
    """An outside decision paired with the candidate's on the same request and imp."""

    decision_id: str
    event_time: int
    propensity: float | None
    bid_micros: int
    features: list[float] | None
    candidate_bid_micros: int | None
    """The candidate's would-be bid (None: no candidate row for the request and imp)."""
    candidate_reason: str | None
    """The candidate row's no-bid reason (``shadow``: it would have bid)."""
    candidate_state: list[float]


@dataclass(frozen=True)
class OutsideFeedback:
    """Validated feedback, the candidate's buckets on it, and how the propensities were got."""

    feedback: LoggedFeedback
    candidate_action: NDArray[np.intp]
    n_actions: int
    propensities: Literal["logged", "estimated"]
    notes: tuple[str, ...]


def bid_bucket(bid_micros: ArrayLike, edges_micros: Sequence[int]) -> NDArray[np.intp]:
    """The bucket of each bid (see the module docstring); ``edges_micros`` strictly increasing, > 0."""
    e = np.asarray(edges_micros, dtype=np.int64)
    if e.size and (e[0] <= 0 or np.any(np.diff(e) <= 0)):
        raise ValueError(f"bid edges must be positive and strictly increasing, got {list(edges_micros)}")
    b = np.asarray(bid_micros, dtype=np.int64)
    out: NDArray[np.intp] = np.where(b > 0, 1 + np.searchsorted(e, b, side="right"), 0).astype(np.intp)
    return out


def _features(rows: Sequence[OutsideRow]) -> tuple[NDArray[np.float64], str]:
    """The propensity model's inputs: the bidder's features when every record has as many, else
    the candidate's state vectors (every paired row has one)."""
    sizes = {len(r.features) if r.features is not None else -1 for r in rows}
    if len(sizes) == 1 and next(iter(sizes)) > 0:
        return np.array([r.features for r in rows], dtype=np.float64), "the bidder's logged features"
    states = {len(r.candidate_state) for r in rows}
    if len(states) != 1:
        raise ValueError("candidate state vectors differ in length: fit on one layout (--candidate)")
    return np.array([r.candidate_state for r in rows], dtype=np.float64).reshape(len(rows), -1), \
        "GAELP's view of each request (the candidate's state vector)"


def outside_feedback(rows: Sequence[OutsideRow], outcomes: Mapping[str, JoinedOutcome], *,
                     edges_micros: Sequence[int], as_of_ms: int, mode: RewardMode, window_ms: int,
                     propensity: PropensitySource = "auto", clip: float = 0.01, l2: float = 1.0) -> OutsideFeedback:
    """The outside log as OPE feedback against the candidate (see the module docstring).

    :param rows: the bidder's decisions with the candidate's on the same request and imp.
    :param outcomes: joined outcomes by decision id (the outside decision's id).
    :param edges_micros: bid bucket edges, CPM micros. :param as_of_ms: evaluation time.
    :param mode: rewards of closed windows only, or delay-corrected. :param window_ms: attribution window.
    :param propensity: ``logged``, ``estimated``, or ``auto`` (logged if the bidder logged any, else estimated).
    :param clip: floor of estimated propensities. :param l2: the propensity model's ridge penalty.
    """
    n_actions = len(edges_micros) + 2
    notes: list[str] = []
    unpaired = sum(1 for r in rows if r.candidate_bid_micros is None)
    unknown = [r for r in rows if r.candidate_bid_micros == 0 and r.candidate_reason == "shadow"]
    if unpaired:
        notes.append(f"{unpaired} outside decisions without a candidate decision on their request were left out")
    if unknown:
        notes.append(f"{len(unknown)} candidate decisions would have bid but logged no price (shadow rows log "
                     "bid 0): their action is unknown, left out")
    paired = [r for r in rows if r.candidate_bid_micros is not None
              and not (r.candidate_bid_micros == 0 and r.candidate_reason == "shadow")]
    source: Literal["logged", "estimated"] = "logged"
    if propensity == "estimated" or (propensity == "auto" and not any(r.propensity is not None for r in paired)):
        source = "estimated"
    action = bid_bucket([r.bid_micros for r in paired], edges_micros)
    props: list[float | None] = [r.propensity for r in paired]
    if source == "estimated":
        bad = [p is not None and not 0.0 < p <= 1.0 for p in props]  # a corrupt logged value is refused still
        fit_rows = [k for k, b in enumerate(bad) if not b]
        if fit_rows:
            x, what = _features([paired[k] for k in fit_rows])
            fit = fit_propensities(x, action[fit_rows], n_actions, l2=l2, clip=clip)
            for k, p in zip(fit_rows, fit.logged.tolist(), strict=True):
                props[k] = p
            notes.append(f"propensities ESTIMATED (not logged): multinomial logistic regression of the bid bucket "
                         f"on {what}, {len(fit_rows)} records; {fit.n_clipped} raised to the floor {clip}"
                         + ("" if fit.converged else "; the fit did NOT converge")
                         + ". The interval does not include the propensity model's own error")
    decisions = [LoggedDecision(r.decision_id, r.event_time, int(a), p, _OUTSIDE_VERSION)
                 for r, a, p in zip(paired, action.tolist(), props, strict=True)]
    fb = build_feedback(decisions, outcomes, known_versions={_OUTSIDE_VERSION}, as_of_ms=as_of_ms,
                        n_actions=n_actions, mode=mode, window_ms=window_ms, no_outcome_reward=0.0)
    cand = dict(zip((r.decision_id for r in paired),
                    bid_bucket([r.candidate_bid_micros or 0 for r in paired], edges_micros).tolist(), strict=True))
    return OutsideFeedback(fb, np.array([cand[d] for d in fb.decision_ids], dtype=np.intp), n_actions, source,
                           tuple(notes))
