"""A perfect learner of value over what a bid request shows: an evaluation-only reference.

How much of the hindsight optimum can *any* policy win that sees only the request and its own
journey records? Not computable exactly, but this reference bounds the answer from the side of
simple learners: it groups opportunities into cells of observable features — page category
(through the discovered-segment posterior), the channels offered, device class, the person's
GAELP touches so far (0/1/2/3+), whether one was clicked, whether one was in the last 2 days,
and the quarter of the day — and bids on the *true* mean value of each (cell, channel,
creative), averaged over every earlier opportunity of the cell from the market's ground truth:
no estimation noise, no exploration cost, no delayed feedback. It plays the best creative and
paid channel of its cell, organic when offered, under dual pacing.

What it cannot know is what the request does not carry: the person's true segment, journey
stage and interest, fatigue, and whether a conversion is already pending. Its gap to the
full-information reference (:class:`~agent_service.evaluation.policies.BaselinePolicy` with
``value_source="truth"``) is what that hidden state is worth.

With ``profile=True`` the page category is replaced by what the agent's state now carries: the
person's segment posterior accumulated over all their requests
(:class:`~agent_service.agent.model.segments.SegmentAccumulator`), as its most likely segment
and how sure it is (four bins) — a perfect learner of the agent's observable information.
"""

from __future__ import annotations

import numpy as np

from agent_service.agent.model.segments import SegmentAccumulator
from agent_service.agent.model.state import JourneyArrays
from agent_service.evaluation.harness import SlotContext
from agent_service.evaluation.market import Market, Opportunities, Plays
from agent_service.evaluation.policies import BaselinePolicy, BidRule
from agent_service.units import DAY_MS

__all__ = ["CellOracle", "observable_cells"]



def observable_cells(opps: Opportunities, journeys: JourneyArrays, segments: np.ndarray | None = None) -> np.ndarray:
    """int64 [B] cell of each opportunity (module docstring), from observable features only.

    :param segments: float [B, K] the persons' accumulated segment posteriors (None: the page
        category of the request)."""
    if segments is None:
        category = np.unique(np.round(opps.segment_probs, 9), axis=0, return_inverse=True)[1].reshape(-1)
    else:  # most likely segment (K <= 16) x confidence bin
        sure = np.searchsorted(np.array([0.5, 0.8, 0.95]), segments.max(axis=1))
        category = segments.argmax(axis=1) * 4 + sure
    offered = opps.channel_mask.astype(np.int64) @ np.array([1, 2, 4])
    touched = journeys.channel >= 0
    touches = np.minimum(touched.sum(1), 3)
    clicked = (journeys.clicked & touched).any(1)
    recent = (touched & (opps.event_time[:, None] - journeys.time_ms < 2 * DAY_MS)).any(1)
    quarter = (opps.event_time % DAY_MS) * 4 // DAY_MS
    key = np.zeros(len(category), np.int64)
    for part, size in ((category, 64), (offered, 8), (opps.device_class, 4), (touches, 4), (clicked, 2),
                       (recent, 2), (quarter, 4)):
        key = key * size + np.asarray(part, np.int64)
    return key


class CellOracle(BaselinePolicy):
    """Dual pacing (or any bidder) on the true mean value per observable cell (module docstring)."""

    def __init__(self, bidder: BidRule, creative_rule: str, market: Market, seed: int = 0,
                 name: str | None = None, profile: bool = False) -> None:
        super().__init__(bidder, creative_rule, market, seed, name)
        self.cell_sum: dict[int, np.ndarray] = {}
        self.cell_n: dict[int, int] = {}
        self.profile = SegmentAccumulator(market.segments) if profile else None

    def play(self, opps: Opportunities, journeys: JourneyArrays, ctx: SlotContext) -> Plays:
        truth = self.true_values(opps)  # [B, 3, C]
        seg = None if self.profile is None else self.profile.posterior(opps.person, opps.context, opps.segment_probs)
        cells, row_cell = np.unique(observable_cells(opps, journeys, seg), return_inverse=True)
        row_cell = row_cell.reshape(-1)
        sums = np.zeros((len(cells), *truth.shape[1:]))
        np.add.at(sums, row_cell, truth)
        counts = np.bincount(row_cell, minlength=len(cells))
        est = np.zeros_like(sums)
        for j, k in enumerate(cells.tolist()):  # bid on what the cell showed before this slot, then learn it
            if k in self.cell_n:
                est[j] = self.cell_sum[k] / self.cell_n[k]
                self.cell_sum[k] += sums[j]
                self.cell_n[k] += int(counts[j])
            else:
                self.cell_sum[k], self.cell_n[k] = sums[j], int(counts[j])
        return self.play_values(opps, est[row_cell])
