"""Prometheus metrics: every name GAELP exports, in one place, under the ``gaelp_`` prefix.

Names follow ../shared/REFERENCE.md: base units, counters end in ``_total``, latencies are
``..._duration_seconds`` histograms, and no label carries a user or request id. Each
``Metrics`` owns its registry so tests and simulations never collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agent_service.units import DAY_S

__all__ = ["Metrics", "NAMES"]

NAMES = {
    "bid_requests": "gaelp_bidder_requests_total",
    "bids": "gaelp_bidder_bids_total",
    "no_bids": "gaelp_bidder_no_bids_total",
    "decide_latency": "gaelp_bidder_decision_duration_seconds",
    "request_latency": "gaelp_bidder_request_duration_seconds",
    "batch_size": "gaelp_bidder_batch_requests",
    "wins": "gaelp_bidder_wins_total",
    "spend": "gaelp_bidder_spend_usd_total",
    "budget": "gaelp_bidder_budget_usd",
    "planned_spend": "gaelp_bidder_planned_spend_usd",
    "period_spend": "gaelp_bidder_period_spend_usd",
    "model_version": "gaelp_bidder_model_version",
    "model_rejected": "gaelp_bidder_model_rejected_total",
    "model_swap": "gaelp_bidder_model_swap_duration_seconds",
    "events": "gaelp_stream_events_total",
    "dead_letters": "gaelp_stream_dead_letters_total",
    "conversions_joined": "gaelp_stream_conversions_joined_total",
    "conversions_unattributed": "gaelp_stream_conversions_unattributed_total",
    "conversions_late": "gaelp_stream_conversions_late_total",
    "conversions_parked": "gaelp_stream_conversions_parked",
    "join_lag": "gaelp_stream_join_lag_seconds",
    "windows_closed": "gaelp_stream_windows_closed_total",
    "consumer_lag": "gaelp_stream_consumer_lag_records",
    "identity_links": "gaelp_identity_links_total",
    "identity_reassigned": "gaelp_identity_devices_reassigned_total",
    "errors": "gaelp_errors_total",
    "loop_lag": "gaelp_event_loop_lag_seconds",
    "learner_updates": "gaelp_learner_updates_total",
    "learner_rejected": "gaelp_learner_rejected_updates_total",
    "learner_loss": "gaelp_learner_loss",
    "learner_experience": "gaelp_learner_experience_total",
    "learner_kl": "gaelp_learner_approx_kl",
    "learner_clip_fraction": "gaelp_learner_clip_fraction",
    "learner_explained_variance": "gaelp_learner_explained_variance",
    "learner_td_loss": "gaelp_learner_td_loss",
    "learner_mean_q": "gaelp_learner_mean_q",
    "learner_version": "gaelp_learner_version",
    "learner_duplicates": "gaelp_learner_duplicate_records_total",
    "learner_restarts": "gaelp_learner_restarts_total",
    "learner_checkpoints": "gaelp_learner_checkpoints_total",
    "learner_checkpoint_duration": "gaelp_learner_checkpoint_duration_seconds",
    "learner_train_duration": "gaelp_learner_batch_duration_seconds",
}

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_DAY_BUCKETS = tuple(d * float(DAY_S) for d in (0.5, 1, 2, 3, 5, 7, 10, 14, 21))


class Metrics:
    """The service's metrics, in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        n = NAMES
        self.bid_requests = Counter(n["bid_requests"][:-6], "OpenRTB impressions offered", registry=r)
        self.bids = Counter(n["bids"][:-6], "Bids sent", ["channel"], registry=r)
        self.no_bids = Counter(n["no_bids"][:-6], "Impressions not bid on, by reason", ["reason"], registry=r)
        self.decide_latency = Histogram(n["decide_latency"], "Decision time per batch item",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.request_latency = Histogram(n["request_latency"], "Bid endpoint time per HTTP request",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(n["batch_size"], "Bid requests decided together in one pass (batching under load)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.wins = Counter(n["wins"][:-6], "Auctions won", ["channel"], registry=r)
        self.spend = Counter(n["spend"][:-6], "Spend settled, USD", registry=r)
        self.budget = Gauge(n["budget"], "Budget of the current period, USD", registry=r)
        self.planned_spend = Gauge(n["planned_spend"], "Spend the pacing plan allows by now, USD", registry=r)
        self.period_spend = Gauge(n["period_spend"], "Spend settled plus reserved in the current period, USD",
                                  ["state"], registry=r)
        self.model_version = Gauge(n["model_version"], "Model version serving decisions", registry=r)
        self.model_rejected = Counter(n["model_rejected"][:-6], "Published model versions refused by this bidder "
                                      "(corrupt: checksum or blob; invalid: layout or weights)", ["reason"], registry=r)
        self.model_swap = Histogram(n["model_swap"], "Time from seeing a new model version to serving it "
                                    "(load, verify, build; off the event loop)", buckets=_LATENCY_BUCKETS, registry=r)
        self.events = Counter(n["events"][:-6], "Records processed", ["topic"], registry=r)
        self.dead_letters = Counter(n["dead_letters"][:-6], "Records dead-lettered", ["topic", "reason"], registry=r)
        self.conversions_joined = Counter(n["conversions_joined"][:-6], "Conversions credited to touches",
                                          registry=r)
        self.conversions_unattributed = Counter(n["conversions_unattributed"][:-6],
                                                "Conversions with no touch in the window", registry=r)
        self.conversions_late = Counter(n["conversions_late"][:-6],
                                        "Conversions whose touches' windows had already closed", registry=r)
        self.conversions_parked = Gauge(n["conversions_parked"], "Conversions waiting for touches", registry=r)
        self.join_lag = Histogram(n["join_lag"], "Conversion time minus credited touch time",
                                  buckets=_DAY_BUCKETS, registry=r)
        self.windows_closed = Counter(n["windows_closed"][:-6], "Attribution windows finalised", registry=r)
        self.consumer_lag = Gauge(n["consumer_lag"], "Records behind the head", ["topic"], registry=r)
        self.identity_links = Counter(n["identity_links"][:-6], "Identity link records by graph outcome "
                                      "(merged, linked, below_threshold, capped, ip_fanout, revoked)",
                                      ["status"], registry=r)
        self.identity_reassigned = Counter(n["identity_reassigned"][:-6],
                                           "Devices whose person changed after identity links", registry=r)
        self.errors = Counter(n["errors"][:-6], "Errors by reason", ["reason"], registry=r)
        self.loop_lag = Histogram(n["loop_lag"], "How late the event loop ran a 10 ms timer: time something "
                                  "held the loop (a stall delays every request in the process)",
                                  buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r)
        self.learner_updates = Counter(n["learner_updates"][:-6], "Learner updates applied", registry=r)
        self.learner_rejected = Counter(n["learner_rejected"][:-6], "Learner updates rejected (diverged)",
                                        registry=r)
        self.learner_loss = Gauge(n["learner_loss"], "Last learner loss", registry=r)
        self.learner_kl = Gauge(n["learner_kl"], "PPO approximate KL of the last update", registry=r)
        self.learner_clip_fraction = Gauge(n["learner_clip_fraction"], "PPO clip fraction of the last update",
                                           registry=r)
        self.learner_explained_variance = Gauge(n["learner_explained_variance"],
                                                "Critic explained variance of the last update", registry=r)
        self.learner_td_loss = Gauge(n["learner_td_loss"], "DQN TD loss of the last update", registry=r)
        self.learner_mean_q = Gauge(n["learner_mean_q"], "DQN mean Q of the last update", registry=r)
        self.learner_experience = Counter(n["learner_experience"][:-6], "Experience records learned from",
                                          registry=r)
        self.learner_version = Gauge(n["learner_version"], "Newest model version the learner published", registry=r)
        self.learner_duplicates = Counter(n["learner_duplicates"][:-6],
                                          "Experience records seen before (redeliveries), ignored", registry=r)
        self.learner_restarts = Counter(n["learner_restarts"][:-6],
                                        "Times the learner was lost and resumed from its checkpoint", registry=r)
        self.learner_checkpoints = Counter(n["learner_checkpoints"][:-6],
                                           "Learner checkpoints made (each followed by an offset commit)", registry=r)
        self.learner_checkpoint_duration = Histogram(n["learner_checkpoint_duration"], "Time to make a checkpoint",
                                                     buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.learner_train_duration = Histogram(n["learner_train_duration"],
                                                "Time to train one batch of experience records",
                                                buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10), registry=r)

    @staticmethod
    def value(metric: Counter | Gauge) -> float:
        """Current value of a metric, summed over its labels (for reports and tests)."""
        return float(sum(s.value for m in metric.collect() for s in m.samples
                         if not s.name.endswith("_created")))

    def exposition(self) -> bytes:
        """The text exposition format served at /metrics."""
        return generate_latest(self.registry)
