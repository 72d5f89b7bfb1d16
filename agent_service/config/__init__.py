"""Every setting GAELP has, in one typed place.

Each section is a frozen dataclass whose fields carry a one-line docstring (the string
literal under the field), checked in ``__post_init__`` with an error that names the key.
``load_config`` reads a TOML file whose tables mirror the sections (``[budget]``,
``[hybrid]``, ...); unknown keys are rejected by name so that a typo never passes silently.
Environment variables (``GAELP_*``) override a few service settings; secrets come only from
the environment.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_service.attribution.config import AttributionConfig, canonical_model
from agent_service.config.agent import HybridConfig
from agent_service.config.batch import BatchConfig
from agent_service.config.data import DataConfig
from agent_service.config.experiments import CanaryConfig, ExperimentConfig
from agent_service.config.lab import EvalConfig, TrainConfig
from agent_service.errors import ConfigError
from agent_service.typed_mapping import from_mapping, read_toml
from agent_service.units import DAY_MS, WINDOW_DAYS

__all__ = [
    "AttributionConfig",
    "BudgetConfig",
    "CanaryConfig",
    "CreativesConfig",
    "DataConfig",
    "GaelpConfig",
    "IdentitySettings",
    "JoinConfig",
    "LearnerConfig",
    "RewardConfig",
    "ServeConfig",
    "SimulationConfig",
    "TopicsConfig",
    "WarehouseConfig",
    "load_config",
    "parse_canary_candidate",
]

CHANNELS: tuple[str, ...] = ("organic", "paid_search", "social")
"""The channels GAELP can act on, in the order used by every encoder."""


def _require(cond: bool, key: str, reason: str) -> None:
    if not cond:
        raise ConfigError(key, reason)


@dataclass(frozen=True)
class BudgetConfig:
    daily_usd: float = 15.0
    """Hard daily budget in USD; spend never exceeds it."""
    bid_min_usd: float = 0.50
    """Lowest bid (CPM, USD) the agent may send."""
    bid_max_usd: float = 10.00
    """Highest bid (CPM, USD) the agent may send."""
    reservation_ttl_s: int = 3600
    """Event-time seconds after which an unsettled reservation is released."""
    pacing_slack: float = 0.10
    """Safety rail of the bid path (the agent's multiplier is the pacing): no bid while spend runs more
    than this fraction of the budget ahead of the traffic-shaped plan (1 = the rail is off)."""

    def __post_init__(self) -> None:
        _require(self.daily_usd > 0, "budget.daily_usd", "must be > 0 (USD per day)")
        _require(0 <= self.pacing_slack <= 1, "budget.pacing_slack", "must be in [0, 1]")
        _require(0 < self.bid_min_usd < self.bid_max_usd, "budget.bid_min_usd",
                 "need 0 < bid_min_usd < bid_max_usd")
        _require(self.reservation_ttl_s > 0, "budget.reservation_ttl_s", "must be > 0 seconds")


@dataclass(frozen=True)
class JoinConfig:
    window_days: float = WINDOW_DAYS
    """Attribution window: a conversion credits touches at most this old (event time)."""
    allowed_lateness_s: int = 6 * 3600
    """How far behind the watermark an event may arrive and still be joined."""
    attribution: str = "last_touch"
    """Attribution model used in the stream (see agent_service.attribution): a heuristic (last,
    first, linear, time_decay, position) or data-driven (``markov``; ``data_driven`` = Shapley),
    refitted in the stream from the journeys it sees (``attribution/online.py``)."""
    attribution_refit_every: int = 500
    """Data-driven attribution: new conversions between refits."""
    attribution_min_conversions: int = 200
    """Data-driven attribution: conversions seen before the first fit (linear credit until then)."""
    identity_min_score: float = 0.9
    """Merge threshold of the identity graph: probabilistic links scored below it are kept in
    the edge log but do not merge persons (nor their journeys)."""

    def __post_init__(self) -> None:
        _require(self.window_days > 0, "join.window_days", "must be > 0")
        _require(self.allowed_lateness_s >= 0, "join.allowed_lateness_s", "must be >= 0")
        _require(0 <= self.identity_min_score <= 1, "join.identity_min_score", "must be in [0, 1]")
        _require(self.attribution_refit_every >= 1, "join.attribution_refit_every", "must be >= 1")
        _require(self.attribution_min_conversions >= 1, "join.attribution_min_conversions", "must be >= 1")

    @property
    def allowed_lateness_ms(self) -> int:
        return self.allowed_lateness_s * 1000

    @property
    def window_ms(self) -> int:
        """The window in milliseconds of event time."""
        return int(self.window_days * DAY_MS)


@dataclass(frozen=True)
class RewardConfig:
    """R = α1·R_immediate + α2·R_attribution + α3·R_delayed + α4·R_diversity (all in USD)."""

    alpha_immediate: float = 1.0
    """α1: weight of the immediate outcome (−cost, + click value)."""
    alpha_attribution: float = 1.0
    """α2: weight of attributed conversion value (multi-touch credit × value)."""
    alpha_delayed: float = 1.0
    """α3: weight of R_delayed, the delay model's expected conversion value still to come (replaced by credit later)."""
    alpha_diversity: float = 0.1
    """α4: weight of R_diversity, creative freshness × channel efficiency: a shaping term for creative
    rotation, small beside conversion value (0.1 × 0.01 USD per fresh impression against a few cents
    of value); ``bench/bench_reward_terms.py`` checks it does not lower conversion value (0 = off)."""
    click_value_usd: float = 0.0
    """Immediate value of a click, USD (0: a click is worth the conversions it brings, which R_delayed counts)."""
    shadow_price: bool = True
    """Charge R_immediate's cost at the budget's shadow price 1/m (m: the bid multiplier), not 1 — the
    Lagrangian of 'maximise value subject to the budget'; False: profit (value − cost)."""
    diversity_unit_usd: float = 0.01
    """USD of one unit of R_diversity (a fresh creative on an average-efficiency channel)."""
    top_slot_value_usd: float = 0.0
    """Value of being seen in the top slot of a positional auction (paid search), USD, beyond the
    clicks it brings: R_immediate adds ``top_slot_value_usd / position ** position_decay`` to
    each won positioned impression. 0: a campaign that buys conversions, whose value R_delayed
    and R_attribution already count; set it for a campaign that also buys visibility."""
    position_decay: float = 1.0
    """How fast the slot's value falls with its position (examination ∝ position^-decay)."""

    def __post_init__(self) -> None:
        for name in ("alpha_immediate", "alpha_attribution", "alpha_delayed", "alpha_diversity", "click_value_usd",
                     "diversity_unit_usd", "top_slot_value_usd", "position_decay"):
            _require(getattr(self, name) >= 0, f"reward.{name}", "must be >= 0")


@dataclass(frozen=True)
class SimulationConfig:
    days: float = 1.0
    """Simulated days of traffic (event time)."""
    seed: int = 0
    """Seed of every random draw in the run."""
    opportunities_per_day: int = 20_000
    """Bid opportunities per simulated day."""
    users: int = 5_000
    """People in the simulated population."""
    creatives: int = 12
    """Creative variants of the ``basic`` world (the ``gaelp`` world's come from its calibration:
    60 in default.toml)."""
    slots_per_day: int = 96
    """Time slots per day; the driver advances in lockstep by slot."""
    drain_days: float = 14.0
    """Extra event-time days run after the last opportunity so conversions land and windows close."""
    world: str = "gaelp"
    """Simulated world: ``gaelp`` (the calibrated world of simulators/) or ``basic`` (the walking skeleton's)."""
    calibration: str = ""
    """Calibration file of the ``gaelp`` world ("" = simulators/calibration/default.toml)."""
    model: str = ""
    """A trained agent to start from: a ``gaelp train --out`` directory or its agent.pt ("" = an
    untrained agent). Its weights, statistics, segment model and pacing state seed the run; it
    keeps learning online. Its creative slots must equal ``[creatives] capacity``."""
    canary_candidate: str = ""
    """A canary in the run: the candidate served live to [canary] share of persons, ``gaelp promote``'s
    controller stepping every slot in event time (runtime/sim_canary.py). ``seed:N`` — the initial
    policy of seed N; ``live`` — the live policy's first version, frozen (an A/A canary while the learner
    publishes nothing; else the start against what the live policy learned); ``overbid:X`` — that version
    bidding X times higher (a candidate to roll back); "" = none (``--canary SHARE`` alone: ``seed:<seed + 1>``)."""

    def __post_init__(self) -> None:
        _require(self.days > 0, "simulation.days", "must be > 0")
        parse_canary_candidate(self.canary_candidate)
        _require(self.world in ("gaelp", "basic"), "simulation.world", "must be 'gaelp' or 'basic'")
        _require(self.opportunities_per_day > 0, "simulation.opportunities_per_day", "must be > 0")
        _require(self.users > 0, "simulation.users", "must be > 0")
        _require(self.creatives > 0, "simulation.creatives", "must be > 0")
        _require(self.slots_per_day > 0, "simulation.slots_per_day", "must be > 0")
        _require(self.drain_days >= 0, "simulation.drain_days", "must be >= 0")


def parse_canary_candidate(spec: str) -> tuple[str, float] | None:
    """``[simulation] canary_candidate`` parsed: (``seed``, N), (``live``, 0) or (``overbid``, X); None for "".

    :raises ConfigError: any other text.
    """
    if not spec:
        return None
    kind, _, arg = spec.partition(":")
    if kind == "live" and not arg:
        return ("live", 0.0)
    try:
        value = float(arg) if kind in ("seed", "overbid") else math.nan
    except ValueError:
        value = math.nan
    if kind == "seed" and value.is_integer() and value >= 0:
        return ("seed", value)
    if kind == "overbid" and math.isfinite(value) and value > 0:
        return ("overbid", value)
    raise ConfigError("simulation.canary_candidate", f"expected seed:N, live or overbid:X (X > 0), got {spec!r}")


@dataclass(frozen=True)
class TopicsConfig:
    bid_requests: str = "gaelp.bid-requests"
    """OpenRTB bid requests in (decided and logged; shadow mode reads only this)."""
    decisions: str = "gaelp.decisions"
    """Every decision with state, action, propensity and model version."""
    auction_results: str = "gaelp.auction-results"
    """Win/loss, position and price paid per decision."""
    ad_events: str = "gaelp.ad-events"
    """Impressions and clicks."""
    conversions: str = "gaelp.conversions"
    """Conversions with user/device ids and value, in event time."""
    identity_links: str = "gaelp.identity-links"
    """Device to person links."""
    experience: str = "gaelp.experience"
    """Rewarded experience for the learner."""
    dead_letters: str = "gaelp.dead-letters"
    """Records that failed to decode, with the reason."""
    candidate_decisions: str = "gaelp.decisions.candidate"
    """The candidate policy's decisions on the live policy's requests (logged, never sent)."""
    outside_decisions: str = "gaelp.decisions.outside"
    """An outside bidder's decisions, with their propensities when it logs them (``contracts/outside.py``)."""
    partitions: int = 4
    """Partitions per topic when GAELP creates them."""

    def __post_init__(self) -> None:
        _require(self.partitions > 0, "topics.partitions", "must be > 0")


@dataclass(frozen=True)
class ServeConfig:
    kafka: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, HOST:PORT (env GAELP_KAFKA)."""
    redis: str = "redis://127.0.0.1:6379/0"
    """Redis URL (env GAELP_REDIS)."""
    http_port: int = 8080
    """Port of the OpenRTB bid endpoint and /metrics (env GAELP_HTTP_PORT)."""
    http_host: str = "127.0.0.1"
    """Interface the HTTP server binds (env GAELP_HTTP_HOST)."""
    group_id: str = "gaelp"
    """Kafka consumer group / Faust app id."""
    campaign: str = "default"
    """Campaign whose budget ledger this service spends."""
    candidate_version: int = 0
    """A registry version decided beside the live policy on the same requests, its decisions
    logged on ``topics.candidate_decisions`` and never sent (0: none). The ``candidate`` role
    decides them from the decision log (``pipeline/candidate.py``); the bidders never run it
    (env GAELP_CANDIDATE_VERSION)."""
    candidate_sample: float = 0.25
    """Share of the live requests the candidate also decides for the shadow log: whole partitions
    of the decision log (keyed by decision id, so independent of the outcome: off-policy estimates
    stay unbiased, on fewer records), hence a multiple of ``1 / [topics] partitions``. The cost is
    the candidate role's CPU and the broker's, not the bid path's (``bench/bench_shadow.py``)."""
    candidate_poll_s: float = 1.0
    """Seconds the candidate role lets the decision log gather between batches: shadow scoring is
    not latency-critical, and a second's worth per batch means a few large fetches, one produce
    request and one commit a second instead of tens (that CPU is on the bid paths' cores)."""
    canary_share: float = 0.0
    """Share of persons (hashed, identity-resolved) the candidate serves live instead (0: none)."""
    bid_rule: str = "agent"
    """How the bid is set from the agent's value estimate v̂: ``agent`` — v̂ × the multiplier of the
    dual level and the Q-network's per-slot offset; ``dual`` — v̂ / (1 + μ) with μ from dual-variable
    pacing alone (Balseiro & Gur 2019), the agent's creative, channel and target choices kept: the
    reference the agent's bidding is measured against on the service path; ``dual_scaled`` — the
    same with a value maximiser's dual (μ may fall below 0: bids up to v̂ · e^{z_max} while it
    underspends, the agent's own cap)."""
    shadow: bool = False
    """Shadow mode: decide and log, never bid, isolated from the live service (its own keys,
    consumer group and output topics; no budget, no weights: ``runtime/shadow.py``)."""
    shadow_learn: bool = False
    """A shadow instance also runs its learner, publishing to a lineage of its own (never the live one)."""
    key_prefix: str = "gaelp:"
    """Prefix of the state store's Redis keys (a shadow instance adds ``shadow:``)."""
    session_timeout_s: float = 10.0
    """Kafka consumer session timeout (tests use 2 s: tansu joins take half of it)."""
    model_dir: str = "runs/models"
    """Directory of the local-file model registry (and of the learner's saved state)."""
    registry: str = "file"
    """Model registry: ``file`` (versions in ``model_dir``: one host or a shared volume) or ``redis``
    (versions as checksummed blobs in Redis, announced by pub/sub: bidders on every host)."""
    registry_url: str = ""
    """Redis URL of the ``redis`` registry ("" = ``serve.redis``; env GAELP_REGISTRY_REDIS)."""
    registry_prefix: str = "gaelp:model:"
    """Key prefix of the ``redis`` registry (one model lineage per prefix)."""
    model_poll_s: float = 0.25
    """Seconds between a bidder's checks for a newer model version (besides Redis' publish notices)."""
    spill_dir: str = "runs/spill"
    """Where decision-log records wait on disk while Kafka is down and the in-memory backlog is full
    (published oldest first when it is back, also after a restart)."""
    first_price_shade: float = 0.85
    """First-price auctions (OpenRTB ``at`` = 1): the bid is shaded to this fraction of the
    truthful (second-price) bid, never below the floor."""
    usd_per_unit: dict[str, float] = field(default_factory=dict)
    """Exchange rates for floors in other currencies, USD per unit (``[serve.usd_per_unit]``,
    ``EUR = 1.08``): a floor in a listed currency is converted (rounded up, so a bid never falls
    under it); a floor in an unlisted one is a no-bid ``floor_currency``. Bids are always priced
    in USD, so a request whose ``cur`` excludes USD is a no-bid ``currency``."""
    tmax_default_ms: int = 100
    """Time budget of a bid request that carries no ``tmax``."""
    network_allowance_ms: int = 20
    """Part of ``tmax`` left for the network: past ``tmax`` minus this, the answer is a no-bid."""
    max_batch: int = 256
    """Most bid requests the HTTP endpoint decides together (concurrent requests are batched)."""
    batch_linger_ms: float = 0.0
    """How long the endpoint lets a batch fill before deciding it (0 = decide at once). Requests that
    arrive together already share a pass (they queue while the previous pass runs), so a wait only
    adds latency: measured at 2,000 requests/s, 1 ms moved p50 from ~3.5 to ~7.4 ms."""
    max_passes: int = 2
    """Batches the endpoint decides at once: while one waits for Redis, the next one's agent pass
    runs (more passes: smaller batches, so more fixed cost per request)."""
    decision_log_linger_ms: float = 10.0
    """How long a bidder gathers decisions before publishing them to the decision log (after the
    answers: no request waits for it). One produce request then carries many passes' decisions;
    a produce request per pass cost a bidder at a few requests per pass ~0.2 ms of CPU each."""
    event_loop: str = "uvloop"
    """Event loop of ``gaelp serve`` and ``gaelp warehouse``: "uvloop" (libuv; less overhead per
    socket event, the bid path's largest cost) or "asyncio" (the standard loop)."""
    stream_runtime: str = "batch"
    """What drives the stream topology (``stream_apps.topology``): "batch" (one aiokafka group
    member handing each fetched batch to the handlers, committed after its effects; no per-event
    Faust machinery, over twice the events per second) or "faust" (one Faust agent per input topic)."""

    def __post_init__(self) -> None:
        _require(0 < self.first_price_shade <= 1, "serve.first_price_shade", "must be in (0, 1]")
        for code, rate in self.usd_per_unit.items():
            _require(len(code) == 3 and code.isalpha() and code.isupper(), f"serve.usd_per_unit.{code}",
                     "must be an ISO 4217 code such as EUR")
            _require(math.isfinite(rate) and rate > 0, f"serve.usd_per_unit.{code}", "must be a rate > 0")
        _require(self.tmax_default_ms > 0, "serve.tmax_default_ms", "must be > 0 ms")
        _require(self.network_allowance_ms >= 0, "serve.network_allowance_ms", "must be >= 0 ms")
        _require(self.max_batch > 0, "serve.max_batch", "must be > 0")
        _require(1 <= self.max_passes <= 8, "serve.max_passes", "must be in [1, 8]")
        _require(0 <= self.batch_linger_ms <= 20, "serve.batch_linger_ms", "must be in [0, 20] ms")
        _require(0 <= self.decision_log_linger_ms <= 1000, "serve.decision_log_linger_ms", "must be in [0, 1000] ms")
        _require(self.event_loop in ("uvloop", "asyncio"), "serve.event_loop", "must be 'uvloop' or 'asyncio'")
        _require(self.stream_runtime in ("faust", "batch"), "serve.stream_runtime", "must be 'faust' or 'batch'")
        _require(self.bid_rule in ("agent", "dual", "dual_scaled"), "serve.bid_rule",
                 "must be 'agent', 'dual' or 'dual_scaled'")
        _require(self.candidate_version >= 0, "serve.candidate_version", "must be >= 0 (0: none)")
        _require(0.0 <= self.canary_share < 1.0, "serve.canary_share", "must be in [0, 1)")
        _require(0.0 < self.candidate_sample <= 1.0, "serve.candidate_sample", "must be in (0, 1]")
        _require(0.0 <= self.candidate_poll_s <= 10.0, "serve.candidate_poll_s", "must be in [0, 10] s")
        _require(self.canary_share == 0 or self.candidate_version > 0, "serve.canary_share",
                 "needs serve.candidate_version")
        _require(":" in self.kafka, "serve.kafka", "expected HOST:PORT")
        _require(self.redis.startswith(("redis://", "rediss://", "unix://")), "serve.redis",
                 "expected redis://HOST:PORT/DB")
        _require(0 <= self.http_port < 65536, "serve.http_port", "must be a TCP port (0 picks a free one)")
        _require(self.session_timeout_s > 0, "serve.session_timeout_s", "must be > 0")
        _require(self.registry in ("file", "redis"), "serve.registry", "must be 'file' or 'redis'")
        _require(not self.registry_url or self.registry_url.startswith(("redis://", "rediss://", "unix://")),
                 "serve.registry_url", "expected redis://HOST:PORT/DB (or empty: serve.redis)")
        _require(bool(self.registry_prefix), "serve.registry_prefix", "must not be empty")
        _require(bool(self.key_prefix), "serve.key_prefix", "must not be empty")
        _require(0 < self.model_poll_s <= 5, "serve.model_poll_s", "must be in (0, 5] s (a new version within a second)")


@dataclass(frozen=True)
class LearnerConfig:
    """Where ``gaelp serve``'s learner role and ``gaelp learner`` train (TOML table ``[learner]``)."""

    backend: str = "ray"
    """``ray``: a Ray actor (a process of its own; local Ray by default, a cluster with ``ray_address``);
    ``thread``: a worker thread of this process (no Ray; small setups and tests)."""
    ray_address: str = ""
    """Ray cluster to join, ``HOST:PORT`` or ``ray://HOST:PORT`` ("" = start a local Ray; env GAELP_RAY_ADDRESS)."""
    ray_num_cpus: int = 0
    """CPUs a local Ray instance may use (0 = all of this machine's)."""
    actor_cpus: float = 1.0
    """CPUs reserved for the learner actor (its torch threads)."""
    nice: int = 10
    """Niceness a process running the learner (or the shadow ``candidate``) role without the bidder
    role adds to itself before it starts Ray (Ray's processes inherit it): on a machine shared with bidders the kernel gives
    their bid paths the CPU first (0: equal footing)."""
    sched_idle: bool = True
    """Such a process also takes Linux's SCHED_IDLE policy (inherited like the niceness): it runs
    only on CPU time no normal process wants, so a bid path on the same cores preempts it at once
    (niceness alone still gives it a share of a busy core)."""
    checkpoint_every_s: float = 30.0
    """Seconds between learner checkpoints; experience offsets are committed right after each one."""
    checkpoint_every_records: int = 50_000
    """Experience records between checkpoints (whichever of the two comes first)."""

    def __post_init__(self) -> None:
        _require(self.backend in ("ray", "thread"), "learner.backend", "must be 'ray' or 'thread'")
        _require(self.ray_num_cpus >= 0, "learner.ray_num_cpus", "must be >= 0 (0: all CPUs)")
        _require(0 <= self.nice <= 19, "learner.nice", "must be in [0, 19]")
        _require(self.actor_cpus > 0, "learner.actor_cpus", "must be > 0")
        _require(self.checkpoint_every_s > 0, "learner.checkpoint_every_s", "must be > 0 s")
        _require(self.checkpoint_every_records > 0, "learner.checkpoint_every_records", "must be > 0")


@dataclass(frozen=True)
class IdentitySettings:
    """The stream's identity graph (its merge threshold is ``join.identity_min_score``)."""

    max_component_nodes: int = 32
    """Largest person in graph nodes (devices, user keys and one anchor per user key, see
    ``pipeline.identity_links``); a merge that would exceed it is refused."""
    max_ip_devices: int = 12
    """Devices one IP may be seen on before it counts as shared (carrier NAT, office): its
    probabilistic links are then refused and those already accepted are undone."""
    key_prefix: str = "gaelp:{id}:"
    """Redis key prefix of the graph in ``gaelp serve`` (beside the state store's keys)."""

    def __post_init__(self) -> None:
        _require(self.max_component_nodes >= 2, "identity.max_component_nodes", "must be >= 2")
        _require(self.max_ip_devices >= 2, "identity.max_ip_devices", "must be >= 2 devices per IP")
        _require(bool(self.key_prefix), "identity.key_prefix", "must not be empty")


@dataclass(frozen=True)
class WarehouseConfig:
    """Where decisions, events, attributions and experience are written (batched, idempotent).

    Credentials never live here: BigQuery reads them from the environment (Application Default
    Credentials, e.g. ``GOOGLE_APPLICATION_CREDENTIALS``)."""

    backend: str = "duckdb"
    """``duckdb`` (a local file), ``bigquery`` or ``off``. ``gaelp simulate`` always writes
    ``<out>/warehouse.duckdb`` unless run with ``--no-warehouse``."""
    duckdb_path: str = ""
    """DuckDB file of ``gaelp serve`` (env GAELP_WAREHOUSE_DUCKDB); "" = ``warehouse.duckdb``
    beside the model directory (``runs/warehouse.duckdb`` with the default ``serve.model_dir``)."""
    bigquery_project: str = ""
    """GCP project of the BigQuery dataset (env GAELP_BIGQUERY_PROJECT)."""
    bigquery_dataset: str = "gaelp"
    """BigQuery dataset holding the warehouse tables (created if missing)."""
    bigquery_api_endpoint: str = ""
    """API endpoint override, e.g. a local emulator ("" = Google's)."""
    bigquery_anonymous: bool = False
    """Send no credentials (only for a local emulator at ``bigquery_api_endpoint``)."""
    max_rows: int = BatchConfig.max_rows
    """Rows per insert request."""
    retry_attempts: int = BatchConfig.max_attempts
    """Attempts of one batch (backoff with jitter) before the sink retries it on its next poll."""
    max_delay_s: float = BatchConfig.max_delay_s
    """Longest a buffered row waits before its table is flushed."""
    max_buffered_rows: int = BatchConfig.max_buffered_rows
    """Backpressure: the sink waits while more rows than this are buffered in total."""
    backoff_initial_s: float = BatchConfig.backoff_initial_s
    """First retry delay cap, seconds."""
    backoff_max_s: float = BatchConfig.backoff_max_s
    """Largest retry delay cap, seconds."""
    backoff_multiplier: float = BatchConfig.backoff_multiplier
    """Growth of the retry delay cap per attempt."""
    recent_ids: int = BatchConfig.recent_ids
    """Ids remembered per table after a write, to drop rows added again."""

    def __post_init__(self) -> None:
        _require(self.backend in ("duckdb", "bigquery", "off"), "warehouse.backend",
                 "must be 'duckdb', 'bigquery' or 'off'")
        _require(bool(self.bigquery_dataset), "warehouse.bigquery_dataset", "must not be empty")
        _require(not self.bigquery_anonymous or bool(self.bigquery_api_endpoint), "warehouse.bigquery_anonymous",
                 "only with bigquery_api_endpoint (a local emulator)")
        _require(self.max_rows >= 2, "warehouse.max_rows", "must be >= 2")
        _require(self.retry_attempts > 0, "warehouse.retry_attempts", "must be > 0")
        self.batch()

    def batch(self, seed: int | None = None) -> BatchConfig:
        """The batch writer's settings (``seed``: of the retry jitter; None: random)."""
        return BatchConfig(max_rows=self.max_rows, max_delay_s=self.max_delay_s,
                           max_buffered_rows=self.max_buffered_rows, max_attempts=self.retry_attempts,
                           backoff_initial_s=self.backoff_initial_s, backoff_max_s=self.backoff_max_s,
                           backoff_multiplier=self.backoff_multiplier, recent_ids=self.recent_ids, seed=seed)


@dataclass(frozen=True)
class CreativesConfig:
    """The creative catalogue of ``gaelp serve`` (``agent_service/creatives.py``)."""

    capacity: int = 64
    """Creative slots of the policy (the catalogue may grow up to it while the service runs)."""
    count: int = 60
    """Creatives ``c00``… on every channel when there is no catalogue file (as in the benchmark world)."""
    catalogue: str = ""
    """TOML file of ``[[creative]]`` entries (ids, channels, text, start/stop, meta); "" = ``count`` generated."""
    reload_s: float = 5.0
    """Seconds between checks of the catalogue file for changes (no restart needed)."""
    priors: str = ""
    """JSON of CTR/CVR priors per creative id and per channel × device from an ad platform's report
    (``gaelp ingest campaigns --priors-out``); the catalogue's creatives with those ids, and the
    agent's channel × device rates, start from them ("" = none)."""

    def __post_init__(self) -> None:
        _require(self.capacity >= 1, "creatives.capacity", "must be >= 1")
        _require(1 <= self.count <= self.capacity, "creatives.count", "must be in [1, capacity]")
        _require(self.reload_s > 0, "creatives.reload_s", "must be > 0")


@dataclass(frozen=True)
class GaelpConfig:
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """Budget and bid limits."""
    join: JoinConfig = field(default_factory=JoinConfig)
    """Delayed-conversion join and attribution."""
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    """The stream's attribution model parameters (its ``model`` and ``window_days`` follow ``join``)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The multi-component reward."""
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    """The hybrid agent: LSTM journey encoder, PPO creative × channel × target policy, DQN bid multiplier."""
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    """The simulated campaign of `gaelp simulate`."""
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    """Kafka topic names."""
    serve: ServeConfig = field(default_factory=ServeConfig)
    """The production service."""
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """Where the service's learner trains (Ray actor or thread) and how often it checkpoints."""
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    """Caps and Redis keys of the identity graph."""
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    """The warehouse sink (DuckDB file or BigQuery)."""
    creatives: CreativesConfig = field(default_factory=CreativesConfig)
    """The creative catalogue of the service."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data sources: how a GA4 export maps to sessions, touches, conversions and channels."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """``gaelp train``: the training world and the Ray runners."""
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    """``gaelp evaluate``: the held-out worlds."""
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    """The canary of ``gaelp promote`` (``[canary]``, ``[canary.test]``, ``[canary.guardrails]``) and of
    ``gaelp simulate --canary``."""
    experiments: tuple[ExperimentConfig, ...] = ()
    """Creative A/B experiments (``[[experiments]]``): the decision path serves them (pipeline/experiments.py)."""

    def __post_init__(self) -> None:
        n, sample = self.topics.partitions, self.serve.candidate_sample
        if self.serve.candidate_version and abs(sample * n - round(sample * n)) > 1e-9:  # it reads whole partitions
            raise ConfigError("serve.candidate_sample",
                              f"must be a multiple of 1/{n} (1/[topics] partitions): the candidate scores whole partitions")
        ids = [e.id for e in self.experiments]
        if len(set(ids)) != len(ids):
            raise ConfigError("experiments", "experiment ids must be unique")
        # One value per setting: these copies follow the key that owns them (see _FOLLOWERS).
        j, b = self.join, self.budget
        object.__setattr__(self, "hybrid", dataclasses.replace(self.hybrid, window_days=j.window_days,
                                                               bid_min_usd=b.bid_min_usd, bid_max_usd=b.bid_max_usd))
        model = canonical_model(j.attribution, "join.attribution")
        object.__setattr__(self, "attribution",
                           dataclasses.replace(self.attribution, model=model, window_days=j.window_days))

    def replace(self, section: str, **changes: Any) -> GaelpConfig:
        """A copy with ``changes`` applied to one section (validated again)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})


# ---------------------------------------------------------------------------------------
# Loading (plumbing)
# ---------------------------------------------------------------------------------------
_ENV_OVERRIDES = {
    "GAELP_KAFKA": ("serve", "kafka", str),
    "GAELP_REDIS": ("serve", "redis", str),
    "GAELP_HTTP_PORT": ("serve", "http_port", int),
    "GAELP_HTTP_HOST": ("serve", "http_host", str),
    "GAELP_CAMPAIGN": ("serve", "campaign", str),
    "GAELP_REGISTRY_REDIS": ("serve", "registry_url", str),
    "GAELP_CANDIDATE_VERSION": ("serve", "candidate_version", int),
    "GAELP_RAY_ADDRESS": ("learner", "ray_address", str),
    "GAELP_WAREHOUSE_DUCKDB": ("warehouse", "duckdb_path", str),
    "GAELP_BIGQUERY_PROJECT": ("warehouse", "bigquery_project", str),
}


_FOLLOWERS = {
    ("hybrid", "window_days"): "join.window_days",
    ("hybrid", "bid_min_usd"): "budget.bid_min_usd",
    ("hybrid", "bid_max_usd"): "budget.bid_max_usd",
    ("attribution", "window_days"): "join.window_days",
    ("attribution", "model"): "join.attribution",
}
"""Keys that copy another (``GaelpConfig.__post_init__``): refused in the file, set the owner."""


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> GaelpConfig:
    """Load the configuration: defaults, then the TOML file, then ``GAELP_*`` variables.

    :param path: a TOML file, or None for the defaults.
    :param env: environment to read overrides from (default ``os.environ``).
    """
    data = {} if path is None else read_toml(path, "--config")
    for (section, name), owner in _FOLLOWERS.items():
        if isinstance(data.get(section), dict) and name in data[section]:
            raise ConfigError(f"{section}.{name}", f"follows {owner}: set that instead")
    cfg = from_mapping(GaelpConfig, data)
    source: Mapping[str, str] = os.environ if env is None else env
    for var, (section, name, tp) in _ENV_OVERRIDES.items():
        if var in source:
            try:
                value = tp(source[var])
            except ValueError as exc:
                raise ConfigError(var, f"expected {tp.__name__}, got {source[var]!r}") from exc
            cfg = cfg.replace(section, **{name: value})
    return cfg
