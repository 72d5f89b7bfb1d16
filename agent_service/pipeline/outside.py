"""An outside bidder's decisions, stored so that what follows them joins as it does to GAELP's own.

The outcome handlers (``pipeline/outcomes.py``) read the decision an auction result or ad
event names from the store. Storing each outside record as a :class:`Decision` under its own
id lets the exchange's results, the clicks and the conversions after them produce experience
records for it exactly as for a live GAELP decision, so ``gaelp ope`` reads one reward
definition for both. What keeps it apart from GAELP's own decisions:

- put if absent (``reserve_and_put`` reserving nothing): a GAELP decision already stored under
  the same id is never overwritten;
- its campaign is ``outside:<bidder>``: nothing of it reaches GAELP's budget ledger (a win
  settles no reservation of GAELP's), nor a canary's or an experiment's arms, nor the win and spend metrics (:func:`is_outside`);
- its state is the bidder's features (usually none): never the agent's layout, so the learner
  skips its experience (``agent/learning/online.py`` replays only its own layout);
- its propensity is the logged one when it lies in (0, 1], else 1.0 — a placeholder the
  contract needs; OPE reads the outside log itself, where a bad value is refused and counted.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent_service.contracts.events import Action, Decision
from agent_service.contracts.outside import OutsideDecision
from agent_service.identity.model import device_node
from agent_service.pipeline.decide import period_of
from agent_service.ports.store import DecideStore, DecisionDraft

__all__ = ["OUTSIDE_CAMPAIGN", "as_decision", "is_outside", "store_outside"]

OUTSIDE_CAMPAIGN = "outside:"
"""Prefix of the campaign an outside bidder's decisions are stored under."""


def as_decision(d: OutsideDecision) -> Decision:
    """The outside record as a stored decision (ids already pseudonymised)."""
    p = d.propensity
    return Decision(
        id=d.id, event_time=d.event_time, request_id=d.request_id, imp_id=d.imp_id,
        person_id=d.user_id or device_node(d.device_id), device_id=d.device_id,
        campaign=OUTSIDE_CAMPAIGN + d.bidder, state=list(d.features or ()),
        action=Action(bid_cpm_micros=d.bid_cpm_micros, creative=d.creative or 0, channel=d.channel or "display",
                      segment=0),
        propensity=p if p is not None and 0.0 < p <= 1.0 else 1.0, model_version=0, bid=d.bid_cpm_micros > 0,
        no_bid_reason=None if d.bid_cpm_micros > 0 else "outside")


def is_outside(d: Decision) -> bool:
    """Whether ``d`` is an outside bidder's (its spend and credit count in no canary or experiment arm)."""
    return d.campaign.startswith(OUTSIDE_CAMPAIGN)


async def store_outside(store: DecideStore, records: Sequence[OutsideDecision], ttl_s: int) -> int:
    """Store each record as a decision unless one is stored under its id; how many were given.

    One ``reserve_and_put`` per bidder (its campaign), reserving nothing and counting no context.
    """
    by_bidder: dict[str, list[DecisionDraft]] = {}
    for r in records:
        by_bidder.setdefault(r.bidder, []).append(DecisionDraft(as_decision(r), 0, period_of(r.event_time)))
    for bidder, drafts in by_bidder.items():
        await store.reserve_and_put(OUTSIDE_CAMPAIGN + bidder, drafts, ttl_s)
    return len(records)
