"""``gaelp ingest campaigns``: a Google Ads report (title lines, UI column names, Total rows, bad
rows) into ``campaign_performance``; every malformed row reported with its line and field; the
network mapped to GAELP channels by the GA4 group map; Beta CTR/CVR priors from the table."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from agent_service.cli import main
from agent_service.config.data import Ga4Config
from agent_service.errors import DecodeError
from agent_service.ingest.campaign_store import (
    CampaignStore,
    beta_prior,
    calibration_channels,
    campaign_priors,
)
from agent_service.ingest.campaigns import parse_report

REPORT = """Ad performance report
"January 1, 2024 - January 2, 2024"
Campaign,Ad group,Ad ID,Device,"Network (with search partners)",Day,Impr.,Clicks,Cost,Conversions,Conv. value,Currency code
Brand,Core,111,Mobile phones,Google search,2024-01-01,"1,000",50,25.50,2.00,80.00,USD
Brand,Core,111,Computers,Search partners,2024-01-01,400,10,6.00,1.00,40.00,USD
Brand,Core,222,Mobile phones,Google search,2024-01-02,600,12,7.20,0.00,0.00,USD
Display,Retarget,333,Tablets,Display Network,2024-01-02,"20,000",40,12.00,--,--,USD
Display,Retarget,333,Tablets,Display Network,2024-01-03,100,200,1.00,0,0,USD
Display,Retarget,333,Tablets,Display Network,not-a-day,100,2,1.00,0,0,USD
Brand,Core,111,Mobile phones,Google search,2024-01-03,abc,2,1.00,0,0,USD
,Core,111,Mobile phones,Google search,2024-01-03,10,2,1.00,0,0,USD
Brand,Core,111,Mobile phones,Google search,2024-01-03,10,2,-1.00,0,0,USD
Brand,Core,111
Video,Pre,444,TV screens,YouTube,2024-01-03,500,5,3.00,0.5,10.00,USD
Total: Campaigns,,,,,,"22,700",117,55.70,3.50,130.00,
Total: Account,,,,,,"22,700",117,55.70,3.50,130.00,
"""
BAD = {8: "clicks", 9: "day", 10: "impressions", 11: "campaign", 12: "cost", 13: "$"}


def test_report_rows_errors_and_channels() -> None:
    b = parse_report(REPORT.encode(), "report.csv")
    assert {e.row: e.field for e in b.errors} == BAD  # every bad row, by line and field
    assert len(b.rows) == 5 and b.totals == 2
    assert b.columns["impressions"] == "Impr." and b.columns["network"] == "Network (with search partners)"
    first = b.rows[0]
    assert (first.row, first.day, first.ad, first.device, first.impressions, first.clicks) == (
        4, dt.date(2024, 1, 1), "111", "mobile", 1000, 50)
    assert (first.cost_micros, first.conversions, first.conversion_value_micros) == (25_500_000, 2.0, 80_000_000)
    assert [r.channel for r in b.rows] == ["paid_search", "paid_search", "paid_search", "display", "paid_video"]
    assert b.rows[3].conversions == 0 and b.rows[3].device == "tablet"  # "--" is Google Ads' zero
    remapped = parse_report(REPORT.encode(), "r.csv", Ga4Config(group_channels={"Display": "social"}))
    assert remapped.rows[3].channel == "social"


def test_utf16_tab_separated_and_api_names() -> None:
    text = ("campaign.name\tsegments.date\tmetrics.impressions\tmetrics.clicks\tmetrics.cost_micros\t"
            "segments.ad_network_type\tsegments.device\nA\t2024-02-01\t100\t3\t1500000\tSEARCH\tDESKTOP\n")
    b = parse_report(text.encode("utf-16"), "api.tsv")
    (r,) = b.rows
    assert (r.cost_micros, r.channel, r.device, r.ad) == (1_500_000, "paid_search", "desktop", "A")
    assert not b.errors


def test_missing_required_column_names_it() -> None:
    with pytest.raises(DecodeError) as exc:
        parse_report(b"Campaign,Day,Impressions,Cost\nA,2024-01-01,1,1\n", "x.csv")
    assert exc.value.field == "x.csv: column clicks"


def test_beta_prior_shrinks_thin_groups_and_caps_the_weight() -> None:
    thin = beta_prior(1, 3, overall=0.02, strength=100, max_count=1000)
    assert thin["rate"] == pytest.approx((1 + 2) / 103) and thin["alpha"] + thin["beta"] == pytest.approx(3)
    rich = beta_prior(5000, 100_000, overall=0.02, strength=100, max_count=1000)
    assert rich["rate"] == pytest.approx(0.05, abs=0.001) and rich["alpha"] + rich["beta"] == pytest.approx(1000)


def test_cli_ingests_reports_errors_and_writes_priors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path, wh, out = tmp_path / "report.csv", tmp_path / "w.duckdb", tmp_path / "priors.json"
    csv_path.write_text(REPORT)
    for _ in range(2):  # re-ingesting the same file replaces its rows
        rc = main(["ingest", "campaigns", str(csv_path), "--warehouse", str(wh), "--priors-out", str(out)])
        assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["rows"], summary["errors"], summary["totals_skipped"]) == (5, 6, 2)
    assert summary["errors_by_field"]["clicks"] == 1 and summary["warehouse"]["campaign_performance"] == 5
    con = duckdb.connect(str(wh))
    assert sorted(con.execute("SELECT row_number, field FROM campaign_ingest_errors").fetchall()) == sorted(BAD.items())
    assert con.execute("SELECT sum(impressions), sum(clicks) FROM campaign_performance").fetchone() == (22_500, 117)
    con.close()
    priors = json.loads(out.read_text())
    ctr0 = 117 / 22_500
    assert priors["overall"]["ctr"] == pytest.approx(ctr0, rel=1e-6)
    ad111 = priors["creative"]["111"]["ctr"]
    assert ad111["rate"] == pytest.approx((60 + 100 * ctr0) / (1400 + 100), rel=1e-6)
    assert ad111["alpha"] + ad111["beta"] == pytest.approx(1000)  # capped
    assert set(priors["channel_device"]) == {"paid_search|mobile", "paid_search|desktop", "display|tablet",
                                             "paid_video|tv"}
    assert priors["calibration"]["channels"]["paid_search"]["base_ctr"] > priors["overall"]["ctr"]
    assert main(["ingest", "campaigns", str(csv_path), "--warehouse", str(wh), "--strict"]) == 1
    assert main(["ingest", "campaigns", str(tmp_path / "nope.csv"), "--warehouse", str(wh)]) == 1


def test_calibration_channels_pool_devices_by_impressions(tmp_path: Path) -> None:
    with CampaignStore(tmp_path / "w.duckdb") as store:
        store.replace(parse_report(REPORT.encode(), "r.csv"))
        priors = campaign_priors(store, strength=0.0)
    cal = calibration_channels(priors)
    assert cal == {"channels": {"paid_search": {"base_ctr": pytest.approx(72 / 2000)}}}


def test_a_reports_priors_reach_the_agents_creative_statistics(tmp_path: Path) -> None:
    """Report → `--priors-out` → `[creatives] priors`: the catalogue's creatives with the report's
    ad ids start from its CTR; the others from the campaign prior; a bad file names the key."""
    from agent_service.adapters.registry import MemoryRegistry
    from agent_service.agent.learning.online import OnlineLearner
    from agent_service.config import RewardConfig
    from agent_service.config.agent import HybridConfig
    from agent_service.creatives import CatalogueFile, load_priors
    from agent_service.errors import ConfigError

    csv_path, wh, out = tmp_path / "report.csv", tmp_path / "w.duckdb", tmp_path / "priors.json"
    csv_path.write_text(REPORT)
    assert main(["ingest", "campaigns", str(csv_path), "--warehouse", str(wh), "--priors-out", str(out)]) == 0
    catalogue = tmp_path / "catalogue.toml"
    catalogue.write_text("".join(f'[[creative]]\nid = "{i}"\n' for i in ("111", "222", "999")))
    learner = OnlineLearner(HybridConfig(lstm_hidden=8, hidden=16), RewardConfig(), 4, 15.0, MemoryRegistry(), seed=0)
    learner.catalogue = CatalogueFile(str(catalogue), 3, 4)
    learner.creative_priors = load_priors(str(out))
    learner.train_records([])  # the catalogue is taken up (and the priors with it) before any record
    ctr = learner.learner.stats.ctr()
    want = json.loads(out.read_text())["creative"]
    assert ctr[0] == pytest.approx(want["111"]["ctr"]["rate"], rel=0.1)  # 1,000 report impressions outweigh 50
    assert ctr[1] == pytest.approx(want["222"]["ctr"]["rate"], rel=0.15)
    assert ctr[2] == pytest.approx(learner.learner.stats.prior_ctr)  # no report for "999": the campaign prior
    bad = tmp_path / "bad.json"
    bad.write_text('{"creative": {"1": {}}}')
    with pytest.raises(ConfigError, match="creatives.priors"):
        load_priors(str(bad))


def test_a_reports_channel_device_priors_reach_the_agents_state(tmp_path: Path) -> None:
    """Report → `--priors-out` → `[creatives] priors`: the learner's CTR per channel × device starts
    from the report's (mobile and tablet are the agent's mobile class; networks that are not a GAELP
    channel are left out), the version it publishes carries them and a bidder's state reads them."""
    import numpy as np

    from agent_service.adapters.registry import MemoryRegistry
    from agent_service.agent.learning.online import OnlineLearner
    from agent_service.agent.model.state import JourneyArrays, OpportunityArrays, PacingInputs, build_states
    from agent_service.agent.serving.hybrid import HybridAgent
    from agent_service.config import RewardConfig
    from agent_service.config.agent import HybridConfig
    from agent_service.creatives import channel_priors, load_priors

    csv_path, wh, out = tmp_path / "report.csv", tmp_path / "w.duckdb", tmp_path / "priors.json"
    csv_path.write_text(REPORT)
    assert main(["ingest", "campaigns", str(csv_path), "--warehouse", str(wh), "--priors-out", str(out)]) == 0
    cfg, registry = HybridConfig(lstm_hidden=8, hidden=16), MemoryRegistry()
    learner = OnlineLearner(cfg, RewardConfig(), 4, 15.0, registry, seed=0)
    learner.creative_priors = load_priors(str(out))
    learner.train_records([])
    stats = learner.learner.stats
    want = json.loads(out.read_text())["channel_device"]
    ctr = stats.channel_device_ctr()
    assert ctr[1, 0] == pytest.approx(want["paid_search|mobile"]["ctr"]["rate"], rel=0.05)  # 1,000 vs 50 pseudo
    assert ctr[1, 1] == pytest.approx(want["paid_search|desktop"]["ctr"]["rate"], rel=0.15)
    assert np.allclose(ctr[[0, 2]], stats.prior_ctr)  # no organic or social rows: the campaign prior
    imps, _, _ = channel_priors(learner.creative_priors)
    assert imps.sum() == pytest.approx(1000 + 400)  # display and video are not GAELP channels here
    learner.learner.publish()
    agent = HybridAgent(learner.spec, cfg, registry, seed=0)
    assert agent.sync() == 1
    n = 2
    opp = OpportunityArrays(np.full(n, 1_767_225_600_000), np.array([0, 1]), np.ones((n, 3), bool), np.full(n, 0.2),
                            np.full((n, cfg.segments), 1 / cfg.segments), np.ones(n), np.ones(n, np.int64),
                            np.zeros(n, np.int64), np.zeros(n), np.arange(n))
    row = build_states(learner.spec, opp, JourneyArrays.empty(n, cfg.max_touches), PacingInputs(15, 3, 0, 0.4, 0.4),
                       agent.stats).state
    col = learner.spec.index["chdev_ctr_paid_search"]
    assert row[0, col] == pytest.approx(min(1.0, ctr[1, 0] / (2 * stats.campaign_ctr())), rel=1e-5)  # mobile
    assert row[1, col] == pytest.approx(ctr[1, 1] / (2 * stats.campaign_ctr()), rel=1e-5)  # desktop
    assert row[0, learner.spec.index["chdev_ctr_social"]] == pytest.approx(0.5, rel=1e-5)  # the campaign average
