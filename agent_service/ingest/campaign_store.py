"""The ``campaign_performance`` table (and ``campaign_ingest_errors``) in a DuckDB file, and the
CTR/CVR priors it yields.

Writing one report replaces its origin's earlier rows in one transaction (re-ingesting a file is
idempotent; a failure leaves the tables as they were).

Priors (:func:`campaign_priors`): Beta pseudo-counts per creative and per channel × device,
``{"ctr": {"alpha", "beta"}, "cvr": {"alpha", "beta"}}`` with ``ctr`` = clicks / impressions and
``cvr`` = conversions / clicks. Each group's rate is its own counts shrunk to the overall rate
with ``strength`` pseudo-trials (so a creative with 3 impressions is near the average, one with
100k at its own rate); the pseudo-count total α + β is the group's trials capped at ``max_count``,
because a report is another period and audience: it should start the agent warm, not outweigh
what the agent sees itself. Conversions above clicks (view-through, several per click) are capped
at the clicks. A Beta prior is a rate ``alpha / (alpha + beta)`` with a weight ``alpha + beta``:
the agent's :class:`~agent_service.agent.model.stats.CampaignStats` starts each creative
(``creative_priors``) and each channel × device (``channel_priors``, ``agent_service/creatives.py``)
from them, through ``[creatives] priors``.
The calibration's ``channels.<name>.base_ctr`` is the channel's CTR (:func:`calibration_channels`).
"""

from __future__ import annotations

import time
from typing import Any

import duckdb

from agent_service.ingest.campaigns import CampaignBatch
from agent_service.ingest.store import DuckStore, StoreWriteError

__all__ = ["CampaignStore", "beta_prior", "calibration_channels", "campaign_priors"]

_TABLES = {
    "campaign_performance": """origin VARCHAR NOT NULL, row_number BIGINT NOT NULL, day DATE NOT NULL,
        campaign VARCHAR NOT NULL, ad_group VARCHAR, ad VARCHAR NOT NULL, device VARCHAR NOT NULL,
        network VARCHAR NOT NULL, channel_group VARCHAR NOT NULL, channel VARCHAR NOT NULL,
        impressions BIGINT NOT NULL, clicks BIGINT NOT NULL, cost_micros BIGINT NOT NULL,
        conversions DOUBLE NOT NULL, conversion_value_micros BIGINT NOT NULL, currency VARCHAR""",
    "campaign_ingest_errors": """origin VARCHAR NOT NULL, row_number BIGINT NOT NULL, field VARCHAR NOT NULL,
        reason VARCHAR NOT NULL, excerpt VARCHAR""",
    "campaign_ingests": """origin VARCHAR NOT NULL, ingested_ms BIGINT NOT NULL, rows BIGINT NOT NULL,
        errors BIGINT NOT NULL, totals_skipped BIGINT NOT NULL""",
}


class CampaignStore(DuckStore):
    """The campaign tables in one DuckDB database.

    :param path: database file (created if missing), or ``":memory:"``.
    """

    _countable = frozenset(_TABLES)

    def _ensure(self) -> None:
        try:
            for name, cols in _TABLES.items():
                self.con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")
        except duckdb.Error as exc:
            raise StoreWriteError(f"DuckDB {self.path}: {exc}") from exc

    def replace(self, batch: CampaignBatch) -> None:
        """Write ``batch`` as the only rows of its origin.

        :param batch: one parsed report.
        """
        o = batch.origin
        rows = [(o, r.row, r.day, r.campaign, r.ad_group, r.ad, r.device, r.network, r.channel_group, r.channel,
                 r.impressions, r.clicks, r.cost_micros, r.conversions, r.conversion_value_micros, r.currency)
                for r in batch.rows]
        errors = [(o, e.row, e.field, e.reason, e.excerpt) for e in batch.errors]
        try:
            self.con.begin()
            for name in _TABLES:
                self.con.execute(f"DELETE FROM {name} WHERE origin = ?", [o])
            if rows:
                self.con.executemany(f"INSERT INTO campaign_performance VALUES ({', '.join('?' * 16)})", rows)
            if errors:
                self.con.executemany("INSERT INTO campaign_ingest_errors VALUES (?, ?, ?, ?, ?)", errors)
            self.con.execute("INSERT INTO campaign_ingests VALUES (?, ?, ?, ?, ?)",
                             [o, int(time.time() * 1000), len(rows), len(errors), batch.totals])
            self.con.commit()
        except duckdb.Error as exc:
            self.con.rollback()
            raise StoreWriteError(f"DuckDB {self.path}: writing {o}: {exc}") from exc

    def totals(self, by: tuple[str, ...]) -> list[tuple[Any, ...]]:
        """(*by, impressions, clicks, conversions) summed per group over every origin.

        :param by: columns of ``campaign_performance`` to group by (e.g. ``("channel", "device")``).
        """
        bad = [c for c in by if c not in ("ad", "campaign", "ad_group", "channel", "channel_group", "device")]
        if bad:
            raise KeyError(bad[0])
        cols = ", ".join(by)
        return self.con.execute(
            f"SELECT {cols}, sum(impressions), sum(clicks), sum(least(conversions, clicks)) "
            f"FROM campaign_performance GROUP BY {cols} ORDER BY {cols}").fetchall()


def beta_prior(successes: float, trials: float, overall: float, strength: float, max_count: float) -> dict[str, float]:
    """Beta pseudo-counts of one group's rate (see the module docstring).

    :param successes: clicks (CTR) or conversions (CVR) of the group.
    :param trials: impressions (CTR) or clicks (CVR).
    :param overall: the rate over every group (the shrinkage target).
    :param strength: pseudo-trials of the shrinkage.
    :param max_count: cap on alpha + beta.
    """
    rate = (successes + strength * overall) / (trials + strength) if trials + strength > 0 else overall
    n = min(trials, max_count)
    return {"alpha": round(rate * n, 6), "beta": round((1 - rate) * n, 6), "rate": round(rate, 8),
            "trials": float(trials)}


def campaign_priors(store: CampaignStore, strength: float = 100.0, max_count: float = 1000.0) -> dict[str, Any]:
    """CTR and CVR priors per creative and per ``channel|device`` from ``campaign_performance``.

    :param store: the warehouse with ingested reports.
    :param strength: pseudo-impressions (CTR) / pseudo-clicks (CVR) of the shrinkage to the overall rate.
    :param max_count: cap on every prior's alpha + beta.
    :returns: ``{"overall": {"ctr", "cvr"}, "creative": {ad: {"ctr": {...}, "cvr": {...}}},
        "channel_device": {"paid_search|mobile": {...}}, "strength", "max_count"}``.
    """
    if strength < 0 or max_count <= 0:
        raise ValueError(f"strength: must be >= 0 and max_count > 0, got {strength}, {max_count}")
    rows = store.totals(("ad",))
    imps = sum(float(r[1]) for r in rows)
    clicks = sum(float(r[2]) for r in rows)
    convs = sum(float(r[3]) for r in rows)
    ctr0 = clicks / imps if imps else 0.0
    cvr0 = convs / clicks if clicks else 0.0

    def pair(i: float, c: float, v: float) -> dict[str, dict[str, float]]:
        return {"ctr": beta_prior(c, i, ctr0, strength, max_count), "cvr": beta_prior(v, c, cvr0, strength, max_count)}

    return {
        "overall": {"ctr": round(ctr0, 8), "cvr": round(cvr0, 8), "impressions": imps, "clicks": clicks,
                    "conversions": convs},
        "creative": {str(a): pair(float(i), float(c), float(v)) for a, i, c, v in rows},
        "channel_device": {f"{ch}|{dev}": pair(float(i), float(c), float(v))
                           for ch, dev, i, c, v in store.totals(("channel", "device"))},
        "strength": strength,
        "max_count": max_count,
    }


def calibration_channels(priors: dict[str, Any], channels: tuple[str, ...] = ("paid_search", "social")
                         ) -> dict[str, dict[str, dict[str, float]]]:
    """``{"channels": {name: {"base_ctr": rate}}}`` for the calibration's channels the report covers
    (devices pooled, weighted by impressions).

    :param priors: :func:`campaign_priors`' result.
    :param channels: calibration channels to fill.
    """
    out: dict[str, dict[str, float]] = {}
    for ch in channels:
        parts = [v["ctr"] for k, v in priors["channel_device"].items() if k.split("|", 1)[0] == ch]
        trials = sum(p["trials"] for p in parts)
        if trials > 0:
            rate = sum(p["rate"] * p["trials"] for p in parts) / trials
            out[ch] = {"base_ctr": round(min(max(rate, 1e-6), 0.999), 8)}
    return {"channels": out}
