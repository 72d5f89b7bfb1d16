"""The enriched journey state of the hybrid agent, feature by feature, and its touch sequence.

Two inputs reach the networks for every opportunity:

* ``state`` — a fixed-length vector of the seed's groups (``StateSpec.features`` names and
  explains every column; every value is scaled to [0, 1] or [-1, 1]);
* ``touches``/``touch_creatives`` — the person's last ``max_touches`` touchpoints, oldest
  first and left-padded, which the LSTM journey encoder reads (``TOUCH_FEATURES``).

Everything is computed from what the service knows at decision time — the request, the
person's journey and identity from the store, the budget ledger and the campaign statistics
the learner publishes with the weights (:class:`CampaignStats`) — never from ground truth, so
the decision path and the training harness build it through the same function,
:func:`build_states`, vectorised over a batch. The last columns of the vector (``LOG_COLUMNS``
and the ``exp_slots_`` bit sets) are not features: they carry what the learner needs to split
the logged propensity and to mask the creative policy as the decision did.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from agent_service.agent.model.opportunity import CONTEXT_BUCKETS
from agent_service.agent.model.stats import (
    DEVICE_CLASSES,
    LANDSCAPE_BIDS_CPM,
    LANDSCAPE_CHANNELS,
    LANDSCAPE_HOURS,
    CampaignStats,
)
from agent_service.config import CHANNELS
from agent_service.contracts.events import Touch
from agent_service.errors import ConfigError
from agent_service.units import DAY_MS, HOUR_MS, WINDOW_DAYS

__all__ = [
    "ARM_BITS",
    "LOG_COLUMNS",
    "N_PACING",
    "STAGES",
    "TOUCH_FEATURES",
    "ArmInputs",
    "CampaignStats",
    "JourneyArrays",
    "OpportunityArrays",
    "PacingInputs",
    "StateBatch",
    "StateSpec",
    "ab_variant",
    "arm_bits",
    "arm_mask",
    "build_states",
    "journey_arrays",
    "person_key",
]

_HALF_LIFE_H = 168.0  # time-decay attribution half-life (Google Ads: 7 days)
STAGES = ("awareness", "consideration", "decision")
LOG_COLUMNS = ("slot_action_prob", "person_key", *(f"context_count_{i}" for i in range(CONTEXT_BUCKETS)))
PERSON_KEY_MOD = 2**24
"""Person keys are logged modulo this (exact in float32)."""
ARM_BITS = 24
"""Creative slots per ``exp_slots_`` log column (a bit set below 2^24 is exact in float32)."""
N_PACING = 9
"""Length of ``agent_service.pacing.PACING_FEATURES`` (logged beside the state)."""
"""Trailing columns that are logged but not fed to the networks."""

TOUCH_FEATURES: tuple[tuple[str, str], ...] = (
    ("present", "1 for a real touch, 0 for left padding"),
    ("ch_organic", "touch was on the organic channel"),
    ("ch_paid_search", "touch was on paid search"),
    ("ch_social", "touch was on social"),
    ("clicked", "the touch was clicked"),
    ("age", "log1p(hours since the touch) / log1p(window hours: 336 for 14 days)"),
    ("gap", "log1p(hours since the previous touch) / log1p(window hours); 1 for the first"),
    ("cost", "price paid, CPM USD / 10, capped at 1"),
    ("other_device", "the touch was on another device of the person than this request's"),
)
"""Per-touch features read by the LSTM (the creative id goes through an embedding)."""


@dataclass(frozen=True)
class StateSpec:
    """Layout of the enriched state vector.

    :param creatives: creative variants the policy chooses from (C).
    :param segments: discovered segments (K); also the targeting choices.
    :param max_touches: touchpoints the LSTM reads (L).
    :param ab_variants: A/B test arms a person is hashed into (V).
    :param window_days: the attribution window (the journey's horizon: recency and age features are
        scaled by it).
    :param landscape: the market-context group carries the competitor landscape's columns.
    """

    creatives: int
    segments: int = 8
    max_touches: int = 16
    ab_variants: int = 4
    window_days: float = WINDOW_DAYS
    landscape: bool = True

    def __post_init__(self) -> None:
        for name in ("creatives", "segments", "max_touches", "ab_variants"):
            if getattr(self, name) < 1:
                raise ConfigError(f"state.{name}", "must be >= 1")

    @cached_property
    def features(self) -> tuple[tuple[str, str], ...]:
        """(name, meaning) of every column, in order (the log columns last)."""
        k, c, v = self.segments, self.creatives, self.ab_variants
        groups: list[tuple[str, str]] = [
            # -- journey stage
            ("stage_awareness", "journey stage: no touch in the attribution window"),
            ("stage_consideration", "journey stage: touched but never clicked"),
            ("stage_decision", "journey stage: at least one click in the window"),
            ("touches", "log1p(touches in the window) / log1p(L), capped at 1"),
            ("clicks", "log1p(clicks in the window) / log1p(8), capped at 1"),
            ("recency", "hours since the last touch / window hours (336 for 14 days); 1 when none"),
            ("journey_age", "hours since the first touch in the window / window hours; 0 when none"),
            # -- discovered segment
            *((f"segment_{i}", f"posterior probability of discovered segment {i}, accumulated over the contexts of all the person's requests (agent.segment_profile)") for i in range(k)),
            # -- the person's recent requests (activity; paid search is offered more deeper in a journey)
            ("person_requests", "log1p(the person's requests, this one included, 3-day half-life) / log1p(50), capped at 1"),
            ("person_search_share", "share of those requests that offered paid search, with one pseudo-request "
                                    "at 0.25"),
            # -- device / channel context
            ("device_mobile", "request device is a phone, tablet or 'mobile' (OpenRTB devicetype 1, 4, 5)"),
            ("device_desktop", "request device is a PC (devicetype 2)"),
            ("device_other", "any other or unknown device"),
            *((f"avail_{ch}", f"the opportunity offers the {ch} channel") for ch in CHANNELS),
            *((f"last_{ch}", f"the person's last touch was on {ch}") for ch in CHANNELS),
            # -- creative performance history
            ("last_creative_ctr", "campaign CTR of the last creative shown to the person / (2 x campaign CTR), "
                                  "capped at 1 (0.5 = average; 0.5 when none)"),
            ("last_creative_cvr", "campaign conversions per click of that creative / (2 x campaign rate), "
                                  "capped at 1 (0.5 = average)"),
            ("fatigue", "1 - 0.85^(exposures of the last creative to the person in the window)"),
            ("distinct_creatives", "distinct creatives the person saw / L, capped at 1"),
            *((f"exposures_{i}", f"log1p(exposures of creative {i} to the person) / log1p(L)") for i in range(c)),
            # -- attribution signals
            ("td_credit_share", "credit a touch now would get under 7-day half-life time decay: "
                                "1 / (1 + sum 2^(-age/7d)) over the window's touches"),
            ("credited_value", "log1p(conversion value credited to the person's touches, USD) / log1p(100)"),
            ("p_conv_journey", "1 - (1 - campaign conversions per click)^clicks, x5 capped at 1"),
            # -- temporal
            ("hour_sin", "sin(2 pi hour / 24), event time UTC"),
            ("hour_cos", "cos(2 pi hour / 24)"),
            ("dow_sin", "sin(2 pi weekday / 7)"),
            ("dow_cos", "cos(2 pi weekday / 7)"),
            ("season_sin", "sin(2 pi day-of-year / 365.25)"),
            ("season_cos", "cos(2 pi day-of-year / 365.25)"),
            # -- competition
            ("auction_density", "opportunities in the last slot / expected per slot, / 2 capped at 1 (0.5 = normal)"),
            ("win_rate", "campaign win rate of its recent bids (smoothed)"),
            ("clearing_price", "mean price paid, CPM USD / 10, capped at 1"),
            ("floor", "this impression's floor, CPM USD / 10, capped at 1"),
            # -- market context: campaign statistics of this request's device (and hour band) per channel
            *self._market_context,
            # -- budget pacing status
            ("budget_left", "(budget - spent - reserved) / budget of the period"),
            ("time_left", "fraction of the budget period still to come"),
            ("pace", "spent / planned spend by now (the plan follows the traffic profile), / 2 capped at 1"),
            ("spend_rate", "spend in the last slot / planned spend per slot, / 2 capped at 1"),
            ("pacing_factor", "log bid multiplier in force, / 2 clipped to [-1, 1] (0 = truthful)"),
            # -- cross-device identity
            ("identity_confidence", "confidence of the device -> person link (1 for deterministic or unlinked)"),
            ("device_count", "devices known for the person / 3, capped at 1"),
            # -- A/B assignment
            *((f"ab_variant_{i}", f"the person is hashed into A/B arm {i}") for i in range(v)),
            ("ab_lift", "CTR of the person's arm / campaign CTR, / 2 capped at 1 (0.5 = no lift)"),
            # -- creative experiment (``[[experiments]]``, pipeline/experiments.py)
            ("exp_in", "the person is assigned to an arm of a running creative experiment (its creatives only)"),
            ("exp_control", "that arm is the experiment's control"),
            ("exp_arm_value", "the arm's credited conversion value per exposed person / the experiment's, / 2 "
                              "capped at 1 (0.5 = average, or no experiment)"),
            # -- log columns (not fed to the networks)
            ("slot_action_prob", "LOG: probability of the slot's bid-multiplier action (splits the propensity)"),
            ("person_key", "LOG: hash of the person, < 2^24 (the journey id GAE groups decisions by)"),
            *((f"context_count_{i}", f"LOG: the person's requests in context bucket {i}, this one included (the "
                                     "learner fits the segment model on them)") for i in range(CONTEXT_BUCKETS)),
            *((f"exp_slots_{j}", f"LOG: bit set of the experiment arm's creative slots {ARM_BITS * j}.."
                                 f"{ARM_BITS * (j + 1) - 1} (all 0: no arm; the learner masks the creative "
                                 "policy with it as the decision did)") for j in range(self.arm_columns)),
        ]
        return tuple(groups)

    @cached_property
    def _market_context(self) -> tuple[tuple[str, str], ...]:
        """The market-context group (``CampaignStats``: channel × device rates, the landscape)."""
        out = [*((f"chdev_ctr_{ch}", f"CTR of {ch} on this request's device class / (2 x campaign CTR), capped at 1 "
                                     "(a report's channel|device prior, then what the campaign saw)") for ch in CHANNELS),
               *((f"chdev_cvr_{ch}", f"conversions per click of {ch} on this device class / (2 x campaign rate), "
                                     "capped at 1") for ch in CHANNELS)]
        if self.landscape:
            for ch in LANDSCAPE_CHANNELS:
                out.append((f"ls_{ch}_p50", f"median price to beat on {ch} for this device and 4-hour band (Kaplan-"
                                            "Meier from won prices and lost bids), CPM USD / 10, capped at 1"))
                out += [(f"ls_{ch}_win{b:g}", f"estimated win rate of a {b:g} USD CPM bid on {ch} in this context")
                        for b in LANDSCAPE_BIDS_CPM]
                out.append((f"ls_{ch}_seen", f"log1p(auctions seen on {ch} in this context, decayed) / log1p(1000), "
                                             "capped at 1"))
        return tuple(out)

    @cached_property
    def layout_id(self) -> str:
        """Fingerprint of the layout (the feature names in order): a published model carries it,
        and a model of another layout is refused even when its widths happen to agree."""
        return f"{zlib.crc32(chr(10).join(name for name, _ in self.features).encode()):08x}"

    @cached_property
    def index(self) -> dict[str, int]:
        """Column of every feature name."""
        return {name: i for i, (name, _) in enumerate(self.features)}

    @property
    def dim(self) -> int:
        """Length of the logged vector (features + log columns)."""
        return len(self.features)

    @property
    def arm_columns(self) -> int:
        """``exp_slots_`` log columns: enough bits for every creative slot."""
        return -(-self.creatives // ARM_BITS)

    @property
    def net_dim(self) -> int:
        """Columns fed to the networks (the log columns are last)."""
        return self.dim - len(LOG_COLUMNS) - self.arm_columns

    @property
    def touch_dim(self) -> int:
        """Per-touch features of the LSTM input (without the creative embedding)."""
        return len(TOUCH_FEATURES)

    @property
    def logged_dim(self) -> int:
        """Length of the vector logged with a decision: state ⊕ pacing features ⊕ touches ⊕ touch creatives."""
        return self.dim + N_PACING + self.max_touches * (self.touch_dim + 1)

    @property
    def logged_shared(self) -> tuple[tuple[int, int], ...]:
        """Column spans of the logged vector that repeat across decisions (the slot's pacing
        features; the touch sequence, all padding without a journey): ``encoded_states``'s ``shared``."""
        a = self.dim + N_PACING
        return (self.dim, a), (a, self.logged_dim)

    def pack(self, batch: StateBatch, pacing: np.ndarray) -> np.ndarray:
        """The logged vectors [B, logged_dim] of a batch (``Decision.state``): everything the
        learner needs to replay the decision — the state, the slot's pacing features [B, P] and
        the touch sequence."""
        B, D = batch.state.shape
        out = np.empty((B, self.logged_dim), np.float32)  # each part cast and copied once into its columns
        a, b = D + N_PACING, D + N_PACING + self.max_touches * self.touch_dim
        out[:, :D] = batch.state
        out[:, D:a] = pacing
        out[:, a:b] = batch.touches.reshape(B, -1)
        out[:, b:] = batch.touch_creatives
        return out

    def unpack(self, logged: np.ndarray) -> tuple[StateBatch, np.ndarray]:
        """Inverse of :meth:`pack`: (StateBatch, pacing features [B, P])."""
        x = np.asarray(logged, dtype=np.float32).reshape(-1, self.logged_dim)
        B, L, D = len(x), self.max_touches, self.dim
        a, b = D + N_PACING, D + N_PACING + L * self.touch_dim
        batch = StateBatch(x[:, :D].copy(), x[:, a:b].reshape(B, L, self.touch_dim).copy(),
                           np.rint(x[:, b:]).astype(np.int64))
        return batch, x[:, D:a].copy()

    @cached_property
    def _cols_cache(self) -> dict[str, slice]:
        return {}

    def cols(self, prefix: str) -> slice:
        """The contiguous columns whose names start with ``prefix`` (e.g. ``"segment_"``); cached,
        as the decision path asks several times per opportunity."""
        hit = self._cols_cache.get(prefix)
        if hit is None:
            idx = [i for name, i in self.index.items() if name.startswith(prefix)]
            hit = self._cols_cache[prefix] = slice(min(idx), max(idx) + 1)
        return hit


class JourneyArrays(NamedTuple):
    """The last L touches of B people, oldest first, left-padded (shapes in brackets)."""

    time_ms: np.ndarray
    """int64 [B, L] event time of each touch (0 in padding)."""
    channel: np.ndarray
    """int64 [B, L] channel index in CHANNELS, -1 in padding."""
    creative: np.ndarray
    """int64 [B, L] creative index, -1 in padding."""
    clicked: np.ndarray
    """bool [B, L]."""
    cost_cpm_usd: np.ndarray
    """float32 [B, L] price paid per mille."""
    other_device: np.ndarray
    """bool [B, L] touch on another device of the person."""

    @staticmethod
    def empty(batch: int, length: int) -> JourneyArrays:
        return JourneyArrays(np.zeros((batch, length), np.int64), np.full((batch, length), -1, np.int64),
                             np.full((batch, length), -1, np.int64), np.zeros((batch, length), bool),
                             np.zeros((batch, length), np.float32), np.zeros((batch, length), bool))


class OpportunityArrays(NamedTuple):
    """What the request and the store say about B opportunities."""

    event_time: np.ndarray
    """int64 [B] ms."""
    device_class: np.ndarray
    """int64 [B] 0 mobile, 1 desktop, 2 other."""
    channel_mask: np.ndarray
    """bool [B, 3] channels offered."""
    floor_cpm_usd: np.ndarray
    """float [B]."""
    segment_probs: np.ndarray
    """float [B, K] discovered-segment posterior."""
    identity_confidence: np.ndarray
    """float [B]."""
    device_count: np.ndarray
    """int [B]."""
    ab_variant: np.ndarray
    """int64 [B] A/B arm."""
    credited_usd: np.ndarray
    """float [B] value already credited to the person's touches (0 when unknown)."""
    person_key: np.ndarray
    """int64 [B] the person's key (logged only; reduced modulo 2^24)."""
    recent_requests: np.ndarray | None = None
    """float [B] the person's requests, this one included, each weighted 2^(-age / 3 days)
    (None: this request alone)."""
    recent_search: np.ndarray | None = None
    """float [B] the same sum over the requests that offered paid search."""
    context_counts: np.ndarray | None = None
    """float [B, CONTEXT_BUCKETS] the person's requests per context bucket, this one included
    (logged only; None: not kept)."""
    arms: ArmInputs | None = None
    """Each person's creative experiment arm (None: nobody is in an experiment)."""


class ArmInputs(NamedTuple):
    """B persons' creative-experiment arms (``agent_service.pipeline.experiments``)."""

    slots: np.ndarray
    """bool [B, C] the arm's creative slots; all False for a person in no running experiment."""
    control: np.ndarray
    """bool [B] the arm is its experiment's control."""
    value: np.ndarray
    """float [B] the arm's credited value per exposed person / the experiment's (1 = average)."""


class PacingInputs(NamedTuple):
    """The budget ledger and pacing context of the campaign at decision time (scalars)."""

    budget_usd: float
    spent_usd: float
    reserved_usd: float
    elapsed: float
    """Fraction of the budget period elapsed."""
    plan_fraction: float
    """Fraction of the budget the spend plan allows by now."""
    last_slot_spend_usd: float = 0.0
    planned_slot_spend_usd: float = 0.0
    log_multiplier: float = 0.0
    slot_action_prob: float = 1.0
    auction_density: float = 1.0
    """Opportunities in the last slot / expected."""


class StateBatch(NamedTuple):
    """Network inputs for B opportunities."""

    state: np.ndarray
    """float32 [B, D] (D = spec.dim; the last LOG_COLUMNS are not fed to the networks)."""
    touches: np.ndarray
    """float32 [B, L, Ft]."""
    touch_creatives: np.ndarray
    """int64 [B, L], C (the padding index) where there is no touch."""


def ab_variant(person_id: str, variants: int) -> int:
    """Stable A/B arm of a person."""
    return zlib.crc32(person_id.encode()) % variants


def arm_bits(slots: np.ndarray) -> np.ndarray:
    """float32 [B, ceil(C / ARM_BITS)]: the ``exp_slots_`` log columns of bool [B, C] arm slots."""
    B, C = slots.shape
    cols = -(-C // ARM_BITS)
    padded = np.zeros((B, cols * ARM_BITS), np.int64)
    padded[:, :C] = slots
    weights = np.int64(1) << np.arange(ARM_BITS, dtype=np.int64)
    return (padded.reshape(B, cols, ARM_BITS) @ weights).astype(np.float32)


def arm_mask(spec: StateSpec, state: np.ndarray) -> np.ndarray | None:
    """bool [N, C]: the arm slots logged in ``state`` [N, D] (all False where no arm); None when no row has one."""
    first = spec.index["exp_slots_0"]
    bits = np.rint(np.asarray(state)[:, first:first + spec.arm_columns]).astype(np.int64)
    if not bits.any():
        return None
    shifts = np.arange(ARM_BITS, dtype=np.int64)
    mask = ((bits[:, :, None] >> shifts) & 1).astype(bool).reshape(len(bits), -1)
    return mask[:, :spec.creatives]


def person_key(person_id: str) -> int:
    """Stable integer key of a person id (the journey id of the learner)."""
    return zlib.crc32(person_id.encode()) % PERSON_KEY_MOD


def journey_arrays(journeys: Sequence[Sequence[Touch]], device_ids: Sequence[str], length: int) -> JourneyArrays:
    """Pack touch lists (oldest first) into :class:`JourneyArrays`, keeping the last ``length``."""
    out = JourneyArrays.empty(len(journeys), length)
    for b, (journey, dev) in enumerate(zip(journeys, device_ids, strict=True)):
        tail = list(journey)[-length:]
        off = length - len(tail)
        for j, t in enumerate(tail):
            out.time_ms[b, off + j] = t.event_time
            out.channel[b, off + j] = CHANNELS.index(t.channel) if t.channel in CHANNELS else 0
            out.creative[b, off + j] = t.creative
            out.clicked[b, off + j] = t.clicked
            out.cost_cpm_usd[b, off + j] = t.cost_micros / 1e3
            out.other_device[b, off + j] = t.device_id != dev
    return out


_SCALAR_NAMES = ("auction_density", "win_rate", "clearing_price", "budget_left", "time_left", "pace", "spend_rate",
                 "pacing_factor", "slot_action_prob", "exp_arm_value")
_NO_JOURNEY = {"stage_awareness": 1.0, "recency": 1.0, "last_creative_ctr": 0.5, "last_creative_cvr": 0.5,
               "td_credit_share": 1.0}
"""The journey columns that are not 0 in a batch without a single touch (:func:`_no_journey_columns`)."""
_NO_JOURNEY_VALUES = tuple(_NO_JOURNEY.values())


class _ColumnsOf(dict):  # type: ignore[type-arg]
    """spec → column index array, computed on first use (build_states runs per decision)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names

    def __missing__(self, spec: StateSpec) -> np.ndarray:
        cols = self[spec] = np.array([spec.index[n] for n in self.names])
        return cols


_SCALAR_COLS = _ColumnsOf(_SCALAR_NAMES)
_NO_JOURNEY_COLS = _ColumnsOf(tuple(_NO_JOURNEY))
_TEMPORAL_SIN = _ColumnsOf(("hour_sin", "dow_sin", "season_sin"))
_TEMPORAL_COS = _ColumnsOf(("hour_cos", "dow_cos", "season_cos"))


def build_states(spec: StateSpec, opp: OpportunityArrays, journey: JourneyArrays, pacing: PacingInputs,
                 stats: CampaignStats) -> StateBatch:
    """The enriched state and the touch sequence of B opportunities (see ``spec.features``).

    Columns are written in place into one float32 array (a decision is latency-bound: a few
    dozen small numpy operations, no per-group concatenation). A batch in which nobody has a
    touch (most bid requests) takes the journey columns' constants instead of computing them
    (the same values: :func:`_journey_columns` on an empty journey)."""
    B, L = journey.channel.shape
    ix = spec.index
    out = np.zeros((B, spec.dim), np.float32)
    t = np.asarray(opp.event_time, np.int64)
    present = journey.channel >= 0
    rows = np.arange(B)
    d = stats.derived()
    if present.any():
        touches, tcreat = _journey_columns(spec, out, journey, present, t, rows, stats)
    else:
        touches, tcreat = _no_journey_columns(spec, out, B, L)
    # segment, device, channels
    out[:, spec.cols("segment_")] = opp.segment_probs
    n_req = np.ones(B) if opp.recent_requests is None else np.maximum(opp.recent_requests, 0.0)
    n_search = opp.channel_mask[:, 1].astype(np.float64) if opp.recent_search is None else opp.recent_search
    out[:, ix["person_requests"]] = np.minimum(1.0, np.log1p(n_req) / math.log1p(50))
    out[:, ix["person_search_share"]] = (np.minimum(n_search, n_req) + 0.25) / (n_req + 1.0)
    # np.minimum/np.maximum, not np.clip: on arrays of a few elements clip costs several times more
    out[rows, ix["device_mobile"] + np.minimum(np.maximum(opp.device_class, 0), 2)] = 1.0
    out[:, ix["avail_organic"]:ix["avail_social"] + 1] = opp.channel_mask
    # attribution
    out[:, ix["credited_value"]] = np.minimum(1.0, np.log1p(np.maximum(opp.credited_usd, 0.0)) / math.log1p(100))
    # temporal
    day = t // DAY_MS
    ang = np.empty((B, 3))  # hour of day, weekday, day of year: one sin and one cos for the three
    ang[:, 0] = (t % DAY_MS) / HOUR_MS * (2 * np.pi / 24.0)
    ang[:, 1] = (day + 3) % 7 * (2 * np.pi / 7.0)
    ang[:, 2] = day % 365.25 * (2 * np.pi / 365.25)
    out[:, _TEMPORAL_SIN[spec]] = np.sin(ang)
    out[:, _TEMPORAL_COS[spec]] = np.cos(ang)
    # competition, budget pacing (campaign-level scalars)
    budget = max(pacing.budget_usd, 1e-9)
    plan = pacing.plan_fraction * budget
    slot_plan = pacing.planned_slot_spend_usd
    scalars = (  # in _SCALAR_NAMES order, written in one assignment
        min(1.0, pacing.auction_density / 2), d.win_rate, min(1.0, d.clearing_cpm / 10),
        max(0.0, (budget - pacing.spent_usd - pacing.reserved_usd) / budget),
        1.0 - min(1.0, max(0.0, pacing.elapsed)),
        min(1.0, pacing.spent_usd / plan / 2) if plan > 0 else 0.5,
        min(1.0, pacing.last_slot_spend_usd / slot_plan / 2) if slot_plan > 0 else 0.5,
        min(1.0, max(-1.0, pacing.log_multiplier / 2)),
        pacing.slot_action_prob,
        0.5,  # exp_arm_value: average (no experiment), unless the arms below say otherwise
    )
    out[:, _SCALAR_COLS[spec]] = scalars
    out[:, ix["floor"]] = np.minimum(1.0, np.asarray(opp.floor_cpm_usd, np.float64) / 10)
    # market context: the rates of the request's device per channel, the landscape of its device and hour band
    dev = np.minimum(np.maximum(np.asarray(opp.device_class, np.int64), 0), DEVICE_CLASSES - 1)
    out[:, spec.cols("chdev_ctr_")] = np.minimum(1.0, d.chdev_ctr_rel[:, dev].T)
    out[:, spec.cols("chdev_cvr_")] = np.minimum(1.0, d.chdev_cvr_rel[:, dev].T)
    if spec.landscape:
        band = (t % DAY_MS) // (DAY_MS // LANDSCAPE_HOURS)
        out[:, spec.cols("ls_")] = d.landscape[:, dev, band].transpose(1, 0, 2).reshape(B, -1)
    # identity, A/B arm, person key
    out[:, ix["identity_confidence"]] = opp.identity_confidence
    out[:, ix["device_count"]] = np.minimum(1.0, np.asarray(opp.device_count, np.float64) / 3)
    arm = np.asarray(opp.ab_variant) % spec.ab_variants
    out[rows, ix["ab_variant_0"] + arm] = 1.0
    out[:, ix["ab_lift"]] = np.minimum(1.0, d.ab_lift[arm] / 2)
    if opp.arms is not None:
        inside = opp.arms.slots.any(1)
        out[:, ix["exp_in"]] = inside
        out[:, ix["exp_control"]] = inside & opp.arms.control
        out[:, ix["exp_arm_value"]] = np.where(inside, np.minimum(1.0, np.maximum(opp.arms.value, 0.0) / 2), 0.5)
        first = ix["exp_slots_0"]
        out[:, first:first + spec.arm_columns] = arm_bits(opp.arms.slots)
    out[:, ix["person_key"]] = np.asarray(opp.person_key, np.int64) % PERSON_KEY_MOD
    if opp.context_counts is not None:
        out[:, ix["context_count_0"]:ix["context_count_0"] + CONTEXT_BUCKETS] = opp.context_counts
    return StateBatch(out, touches, tcreat)


def _journey_columns(spec: StateSpec, out: np.ndarray, journey: JourneyArrays, present: np.ndarray, t: np.ndarray,
                     rows: np.ndarray, stats: CampaignStats) -> tuple[np.ndarray, np.ndarray]:
    """Write the journey's columns of ``out`` (stage, depth, last touch, creative history, time-decay
    credit) and return the touch sequence and its creatives."""
    d = stats.derived()
    window_h = spec.window_days * 24.0
    B, L = journey.channel.shape
    ix = spec.index
    n_touch = present.sum(1)
    has = n_touch > 0
    clicked = journey.clicked & present
    n_click = clicked.sum(1)
    age_h = np.maximum((t[:, None] - journey.time_ms) / HOUR_MS, 0.0)
    age_h[~present] = np.inf
    # journey stage
    stage = np.where(n_click > 0, 2, np.where(has, 1, 0))
    out[rows, ix["stage_awareness"] + stage] = 1.0
    out[:, ix["touches"]] = np.minimum(1.0, np.log1p(n_touch) / math.log1p(spec.max_touches))
    out[:, ix["clicks"]] = np.minimum(1.0, np.log1p(n_click) / math.log1p(8))
    out[:, ix["recency"]] = np.where(has, np.minimum(1.0, age_h[:, -1] / window_h), 1.0)
    first = age_h[rows, np.minimum(L - n_touch, L - 1)]
    out[:, ix["journey_age"]] = np.where(has, np.minimum(1.0, first / window_h), 0.0)
    last_ch = journey.channel[:, -1]
    out[rows[has], ix["last_organic"] + last_ch[has]] = 1.0
    # creative history
    last_cr = np.minimum(np.maximum(journey.creative[:, -1], 0), spec.creatives - 1)
    out[:, ix["last_creative_ctr"]] = np.where(has, np.minimum(1.0, d.ctr_rel[last_cr]), 0.5)
    out[:, ix["last_creative_cvr"]] = np.where(has, np.minimum(1.0, d.cvr_rel[last_cr]), 0.5)
    exposures = np.zeros((B, spec.creatives), np.int64)
    pr, pc = np.nonzero(present)
    np.add.at(exposures, (pr, journey.creative[pr, pc]), 1)
    out[:, ix["fatigue"]] = np.where(has, 1.0 - 0.85 ** exposures[rows, last_cr], 0.0)
    out[:, ix["distinct_creatives"]] = np.minimum(1.0, (exposures > 0).sum(1) / spec.max_touches)
    out[:, spec.cols("exposures_")] = np.minimum(1.0, np.log1p(exposures) / math.log1p(spec.max_touches))
    # attribution
    decay = (0.5 ** (np.minimum(age_h, 1e6) / _HALF_LIFE_H)).sum(1)
    out[:, ix["td_credit_share"]] = 1.0 / (1.0 + decay)
    out[:, ix["p_conv_journey"]] = np.minimum(1.0, 5 * (1.0 - (1.0 - d.campaign_cvr) ** n_click))
    # touch sequence (TOUCH_FEATURES)
    touches = np.zeros((B, L, len(TOUCH_FEATURES)), np.float32)
    norm = math.log1p(window_h)
    touches[:, :, 0] = present
    tr, tc_ = np.nonzero(present)
    touches[tr, tc_, 1 + journey.channel[tr, tc_]] = 1.0
    touches[:, :, 4] = clicked
    touches[:, :, 5] = np.where(present, np.log1p(np.minimum(age_h, window_h)) / norm, 0.0)
    gap = np.full((B, L), window_h)
    both = present[:, 1:] & present[:, :-1]
    gap[:, 1:][both] = np.maximum((journey.time_ms[:, 1:] - journey.time_ms[:, :-1])[both] / HOUR_MS, 0.0)
    touches[:, :, 6] = np.where(present, np.log1p(np.minimum(gap, window_h)) / norm, 0.0)
    touches[:, :, 7] = np.where(present, np.minimum(1.0, journey.cost_cpm_usd / 10), 0.0)
    touches[:, :, 8] = journey.other_device & present
    tcreat = np.where(present, np.minimum(np.maximum(journey.creative, 0), spec.creatives - 1),
                      spec.creatives).astype(np.int64)
    return touches, tcreat


def _no_journey_columns(spec: StateSpec, out: np.ndarray, B: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_journey_columns` of a batch without a single touch, as constants: awareness stage,
    recency 1 (none yet), no credit taken by earlier touches (share 1), neutral creative history
    (0.5); every other journey column 0, the touch sequence all padding."""
    out[:, _NO_JOURNEY_COLS[spec]] = _NO_JOURNEY_VALUES  # one assignment, not five
    return np.zeros((B, L, len(TOUCH_FEATURES)), np.float32), np.full((B, L), spec.creatives, np.int64)
