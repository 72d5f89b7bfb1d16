"""Port of the creative experiments' running results (``agent_service.pipeline.experiments``).

Effects are applied once by their key (a redelivered event changes nothing) and fold each
person's running totals into their arm's :class:`~agent_service.experiments.sequential.RatioStats`:
the person is the unit, counted in the arm of their first effect (intention to treat: a person
stays in the arm they were randomised to even after it is rolled back), and the arm's sums of
x², y² and xy move by the difference of the person's squares, so they stay exact per-person
sums whatever the order of the effects. The guardrails' ratios (spend, no-bids and failed requests
per bid request) are kept the same way from each person's request counts. :class:`~agent_service.adapters.memory_experiments.MemoryExperimentStore`
is the test fake, :class:`~agent_service.adapters.redis_experiments.RedisExperimentStore` production.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from agent_service.experiments.guardrails import GuardrailStats
from agent_service.experiments.sequential import RatioStats

__all__ = ["ArmEffect", "ArmRunning", "ExperimentStore"]


class ArmEffect(NamedTuple):
    """One event's contribution to a person's totals in an experiment."""

    key: str
    """Idempotency key: ``expose:<exp>:<person>``, ``won:<exp>:<decision>``, ``credit:<exp>:<conv>:<decision>``,
    ``req:<exp>:<flush>:<person>`` (a bidder's request counts since its last flush)."""
    experiment: str
    arm: str
    """The person's arm now (ignored once the person has one)."""
    person_id: str
    exposed: bool
    """The person was shown the arm (counted once per person)."""
    spend_usd: float = 0.0
    value_usd: float = 0.0
    """Conversion value credited to the person's touches."""
    requests: int = 0
    """Bid requests decided for the person under the experiment (the guardrails' denominator)."""
    no_bids: int = 0
    errors: int = 0
    """Of those requests: answered without a bid, failed (the bidder missed the deadline)."""


class ArmRunning(NamedTuple):
    """An arm's running totals."""

    exposed: int
    """Persons exposed (once each)."""
    stats: RatioStats
    """Per-person sums of credited value (x) over spend (y), every person with an effect counted."""
    guards: GuardrailStats
    """Per-person sums of spend, no-bids and errors over requests, the same persons."""


class ExperimentStore(Protocol):
    """Running per-arm results, exactly once per effect key."""

    async def record_arm_effects(self, effects: Sequence[ArmEffect], ttl_s: int) -> list[bool]:
        """Apply each effect unless its key was applied before (atomic per effect).

        :param ttl_s: how long keys and the persons' totals are kept (the experiment's remaining run
            plus the attribution window).
        :returns: per effect, whether it was applied now.
        """
        ...

    async def arm_totals(self, experiment: str) -> dict[str, ArmRunning]:
        """Every arm's running totals (arms without an effect are absent)."""
        ...

    async def flush_state(self, experiment: str) -> bytes | None:
        """The warehouse flush's checkpoint (None before the first)."""
        ...

    async def set_flush_state(self, experiment: str, state: bytes) -> None: ...
