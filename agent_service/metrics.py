"""Prometheus metrics: every name GAELP exports, in one place, under the ``gaelp_`` prefix.

Names follow Prometheus' naming conventions: base units, counters end in ``_total``, latencies are
``..._duration_seconds`` histograms, and no label carries a user or request id. Each
``Metrics`` owns its registry so tests and simulations never collide.
"""

from __future__ import annotations

import bisect
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agent_service.units import DAY_S

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from agent_service.evaluation.ope_log import OPEReport
    from agent_service.experiments.ab import ExperimentSummary, Exposure
    from agent_service.experiments.canary import CanaryEvent

__all__ = ["BatchHistogram", "Metrics", "NAMES"]

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
    "candidate_decisions": "gaelp_candidate_decisions_total",
    "ope_evaluations": "gaelp_ope_evaluations_total",
    "ope_value": "gaelp_ope_value",
    "ope_value_lower": "gaelp_ope_value_lower",
    "ope_value_upper": "gaelp_ope_value_upper",
    "ope_live_value": "gaelp_ope_live_value",
    "ope_ess": "gaelp_ope_effective_sample_size",
    "ope_used": "gaelp_ope_used_records",
    "ope_refused": "gaelp_ope_refused_records",
    "canary_events": "gaelp_canary_events_total",
    "canary_state": "gaelp_canary_state",
    "canary_share": "gaelp_canary_share",
    "canary_stage": "gaelp_canary_stage",
    "canary_lift": "gaelp_canary_lift",
    "canary_lift_lower": "gaelp_canary_lift_lower",
    "canary_lift_upper": "gaelp_canary_lift_upper",
    "canary_persons": "gaelp_canary_persons",
    "canary_converting": "gaelp_canary_converting_persons",
    "experiment_status": "gaelp_experiment_status",
    "experiment_exposures": "gaelp_experiment_exposures_total",
    "experiment_evaluated": "gaelp_experiment_last_evaluation_timestamp_seconds",
    "experiment_persons": "gaelp_experiment_persons",
    "experiment_value_per_dollar": "gaelp_experiment_value_per_dollar",
    "experiment_lift": "gaelp_experiment_lift",
    "experiment_lift_lower": "gaelp_experiment_lift_lower",
    "experiment_lift_upper": "gaelp_experiment_lift_upper",
    "experiment_decision": "gaelp_experiment_arm_decision",
}

# Label values of the one-hot state gauges: every state is exported (0 or 1) so that a query can tell
# "not in this state" from "no data". Kept in step with the domain enums by tests/unit/test_experiment_metrics.py.
CANARY_STATES = ("pending", "running", "promoted", "rolled_back", "held")
CANARY_EVENT_KINDS = ("started", "evaluated", "stage_advanced", "promoted", "rolled_back", "held")
EXPERIMENT_STATUSES = ("scheduled", "running", "stopped", "decided")
ARM_DECISIONS = ("control", "hold", "promote", "rollback")

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_DAY_BUCKETS = tuple(d * float(DAY_S) for d in (0.5, 1, 2, 3, 5, 7, 10, 14, 21))


class BatchHistogram(Histogram):
    """A histogram that can count one value ``n`` times in one step (the bid path observes the
    same per-item time for every item of a batch: one bucket lookup and two increments per
    batch instead of ``n`` observations, each with its lock)."""

    def observe_n(self, amount: float, n: int) -> None:
        """:param amount: the value. :param n: how many observations of it (>= 0)."""
        if n <= 0:
            return
        self._raise_if_not_observable()
        self._sum.inc(amount * n)
        self._buckets[bisect.bisect_left(self._upper_bounds, amount)].inc(n)  # first bound >= amount


class IntervalGauges:
    """An estimate and its interval as three gauges, ``<name>``, ``<name>_lower`` and ``<name>_upper``
    (Prometheus has no interval type; dashboards draw the band from the pair)."""

    def __init__(self, names: Mapping[str, str], key: str, help_text: str, interval: str,
                 labels: Sequence[str], registry: CollectorRegistry) -> None:
        self.value = Gauge(names[key], help_text, labels, registry=registry)
        self.lower = Gauge(names[f"{key}_lower"], f"Lower end of {interval}", labels, registry=registry)
        self.upper = Gauge(names[f"{key}_upper"], f"Upper end of {interval}", labels, registry=registry)

    def set(self, labels: Sequence[str], value: float, lower: float, upper: float) -> None:
        self.value.labels(*labels).set(value)
        self.lower.labels(*labels).set(lower)
        self.upper.labels(*labels).set(upper)


class Metrics:
    """The service's metrics, in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        n = NAMES
        self.bid_requests = Counter(n["bid_requests"][:-6], "OpenRTB impressions offered", registry=r)
        self.bids = Counter(n["bids"][:-6], "Bids sent", ["channel"], registry=r)
        self.no_bids = Counter(n["no_bids"][:-6], "Impressions not bid on, by reason", ["reason"], registry=r)
        self.decide_latency = BatchHistogram(n["decide_latency"], "Decision time per batch item",
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

        self.candidate_decisions = Counter(n["candidate_decisions"][:-6], "Decisions of the shadow candidate "
                                           "([serve] candidate_version), logged and never sent", registry=r)
        # Shadow vs live: the last off-policy evaluation of the candidate on the live log.
        self.ope_evaluations = Counter(n["ope_evaluations"][:-6], "Off-policy evaluations of a candidate", registry=r)
        self.ope_value = IntervalGauges(n, "ope_value", "Candidate's estimated value per logged decision, by "
                                        "estimator", "the estimate's confidence interval", ["estimator"], r)
        self.ope_live_value = Gauge(n["ope_live_value"], "Live policy's observed value per decision on the same "
                                    "records (what the candidate is compared with)", registry=r)
        self.ope_ess = Gauge(n["ope_ess"], "Kish effective sample size of the estimator's importance weights",
                             ["estimator"], registry=r)
        self.ope_used = Gauge(n["ope_used"], "Logged decisions the last evaluation used", registry=r)
        self.ope_refused = Gauge(n["ope_refused"], "Logged decisions the last evaluation refused, by reason",
                                 ["reason"], registry=r)
        # Canary: state machine and the sequential test on value per dollar.
        self.canary_events = Counter(n["canary_events"][:-6], "Canary steps (started, evaluated, stage_advanced, "
                                     "promoted, rolled_back, held)", ["experiment", "kind"], registry=r)
        self.canary_state = Gauge(n["canary_state"], "1 for the canary's current state, 0 for the others",
                                  ["experiment", "state"], registry=r)
        self.canary_share = Gauge(n["canary_share"], "Share of persons served by the candidate", ["experiment"],
                                  registry=r)
        self.canary_stage = Gauge(n["canary_stage"], "Ramp stage (0 = the first share)", ["experiment"], registry=r)
        self.canary_lift = IntervalGauges(n, "canary_lift", "Relative lift of value per dollar, candidate over "
                                          "control", "the lift's always-valid interval", ["experiment"], r)
        self.canary_persons = Gauge(n["canary_persons"], "Persons observed, by arm", ["experiment", "arm"],
                                    registry=r)
        self.canary_converting = Gauge(n["canary_converting"], "Persons with a conversion, by arm",
                                       ["experiment", "arm"], registry=r)
        # Creative A/B experiments: status, exposures and every arm's estimate against the control.
        self.experiment_status = Gauge(n["experiment_status"], "1 for the experiment's current status, 0 for the "
                                       "others", ["experiment", "status"], registry=r)
        self.experiment_exposures = Counter(n["experiment_exposures"][:-6], "First exposures of persons to an arm",
                                            ["experiment", "arm"], registry=r)
        self.experiment_evaluated = Gauge(n["experiment_evaluated"], "Wall-clock time of the experiment's last "
                                          "evaluation (decision step), seconds since the epoch", ["experiment"],
                                          registry=r)
        self.experiment_persons = Gauge(n["experiment_persons"], "Exposed persons whose outcome was observed",
                                        ["experiment", "arm"], registry=r)
        self.experiment_value_per_dollar = Gauge(n["experiment_value_per_dollar"], "Conversion value per dollar "
                                                 "spent", ["experiment", "arm"], registry=r)
        self.experiment_lift = IntervalGauges(n, "experiment_lift", "Relative lift of value per dollar over the "
                                              "control", "the lift's always-valid interval", ["experiment", "arm"], r)
        self.experiment_decision = Gauge(n["experiment_decision"], "1 for the arm's current decision, 0 for the "
                                         "others", ["experiment", "arm", "decision"], registry=r)

    # ---------------------------------------------------------------- recording domain results
    def record_ope(self, report: OPEReport, live_value: float) -> None:
        """One off-policy evaluation: each estimator's value, interval and ESS, and what was refused.

        :param report: the evaluation of the candidate.
        :param live_value: the live policy's mean reward over the same used records.
        """
        self.ope_evaluations.inc()
        for name, e in report.estimates.items():
            self.ope_value.set((name,), e.value, e.ci_low, e.ci_high)
            self.ope_ess.labels(name).set(e.ess)
        self.ope_live_value.set(live_value)
        self.ope_used.set(report.validation.n_used)
        self.ope_refused.clear()  # a reason absent from this evaluation had no refusals
        for reason, count in report.validation.refused.items():
            self.ope_refused.labels(reason).set(count)

    def record_canary(self, event: CanaryEvent) -> None:
        """One canary step (every event :class:`~agent_service.experiments.canary.Canary` returns)."""
        exp = event.experiment_id
        if event.kind == "started":  # counters from 0, so that increase() sees the first rollback
            for kind in CANARY_EVENT_KINDS:
                self.canary_events.labels(exp, kind)
        self.canary_events.labels(exp, event.kind).inc()
        for state in CANARY_STATES:
            self.canary_state.labels(exp, state).set(float(state == str(event.state)))
        self.canary_share.labels(exp).set(event.share)
        self.canary_stage.labels(exp).set(event.stage)
        self.canary_lift.set((exp,), event.lift, event.lower, event.upper)
        self.canary_persons.labels(exp, "control").set(event.control_persons)
        self.canary_persons.labels(exp, "candidate").set(event.candidate_persons)
        self.canary_converting.labels(exp, "control").set(event.control_conversions)
        self.canary_converting.labels(exp, "candidate").set(event.candidate_conversions)

    def record_exposure(self, exposure: Exposure) -> None:
        """An exposure; only a person's first in the experiment is counted."""
        if exposure.first:
            self.experiment_exposures.labels(exposure.experiment_id, exposure.arm).inc()

    def record_experiment(self, summary: ExperimentSummary) -> None:
        """One evaluation of an experiment (what :meth:`Experiment.evaluate` returns)."""
        exp = summary.id
        self.experiment_evaluated.labels(exp).set(time.time())
        for status in EXPERIMENT_STATUSES:
            self.experiment_status.labels(exp, status).set(float(status == str(summary.status)))
        for a in summary.arms:
            self.experiment_exposures.labels(exp, a.name)  # from 0, so a silent arm shows as 0 exposures
            self.experiment_persons.labels(exp, a.name).set(a.persons)
            self.experiment_value_per_dollar.labels(exp, a.name).set(a.value_per_dollar)
            for decision in ARM_DECISIONS:
                self.experiment_decision.labels(exp, a.name, decision).set(float(decision == a.decision))
            if a.decision != "control":  # the control has no lift against itself
                self.experiment_lift.set((exp, a.name), a.lift, a.lower, a.upper)

    @staticmethod
    def value(metric: Counter | Gauge) -> float:
        """Current value of a metric, summed over its labels (for reports and tests)."""
        return float(sum(s.value for m in metric.collect() for s in m.samples
                         if not s.name.endswith("_created")))

    def exposition(self) -> bytes:
        """The text exposition format served at /metrics."""
        return generate_latest(self.registry)
