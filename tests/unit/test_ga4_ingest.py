"""GA4 export parsing: sessions, touches and conversions from the synthetic export match the truth it
was generated from; the channel grouping; malformed rows reported with row and field; the file
forms (NDJSON, gzip, JSON array, pretty-printed object, Parquet) give the same records."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import duckdb
import pytest

from agent_service.config import load_config
from agent_service.config.data import Ga4Config
from agent_service.errors import ConfigError
from agent_service.ingest.channels import ChannelMapper
from agent_service.ingest.ga4 import Ga4Batch, Ga4Builder, Session
from agent_service.ingest.sources import expand, is_table, read_file
from agent_service.ingest.tables import SESSION_COLUMNS
from tests.ga4_fixtures import GA4_SCHEMA, duckdb_type, synthetic_export


def build(rows: list[dict], config: Ga4Config | None = None) -> Ga4Batch:
    b = Ga4Builder("mem", config)
    for i, r in enumerate(rows, start=1):
        b.add_json(i, json.dumps(r).encode())
    return b.finish()


def read(path: Path, config: Ga4Config | None = None) -> Ga4Batch:
    b = Ga4Builder(str(path), config)
    read_file(path, b)
    return b.finish()


@pytest.mark.parametrize("seed", [0, 1])
def test_sessions_and_conversions_match_the_generated_truth(seed: int) -> None:
    export = synthetic_export(seed)
    batch = build(export.rows)
    got = {(s.user_pseudo_id, s.ga_session_id): s for s in batch.sessions}
    assert set(got) == set(export.sessions)
    for key, truth in export.sessions.items():
        s = got[key]
        assert (s.channel, s.page_views, s.events, s.conversions) == (
            truth.channel, truth.page_views, truth.events, truth.conversions), key
        assert s.conversion_value_micros == round(truth.value * 1e6)
    assert batch.stats.events == len(export.rows) and not batch.errors and batch.stats.without_session == 0
    assert len(batch.conversions) == sum(t.conversions for t in export.sessions.values())
    conv = batch.conversions[0]
    assert conv.currency == "EUR" and conv.items == 2 and conv.transaction_id.startswith("T")
    assert conv.value_usd_micros == round(conv.value_micros * 1.1)
    touches = batch.touches
    assert len(touches) == len(batch.sessions)
    assert {t.channel for t in touches} == {"paid_search", "organic", "social", "direct", "email"}


def test_where_a_session_source_comes_from() -> None:
    batch = build(synthetic_export(0).rows)
    kinds = {(s.channel, s.source_kind) for s in batch.sessions}
    # gclid beats the utm tags; social from collected_traffic_source; organic/email only in params;
    # direct sessions carry no traffic-source column at all.
    assert kinds == {("paid_search", "gclid"), ("social", "collected"), ("organic", "event_params"),
                     ("email", "event_params"), ("direct", "none")}
    direct = next(s for s in batch.sessions if s.channel == "direct")
    assert (direct.source, direct.medium, direct.channel_group) == ("(direct)", "(none)", "Direct")
    assert all(s.landing_page and "?" not in s.landing_page for s in batch.sessions)


def test_last_click_mode_reads_session_traffic_source_last_click() -> None:
    rows = synthetic_export(0).rows
    for r in rows:
        if r.get("session_traffic_source_last_click"):
            r["session_traffic_source_last_click"]["manual_campaign"]["medium"] = "cpc"  # attributed elsewhere
    observed = build(rows)
    last = build(rows, Ga4Config(session_source="last_click"))
    assert {s.channel_group for s in observed.sessions if s.source == "facebook"} == {"Paid Social"}
    lc = [s for s in last.sessions if s.source_kind == "last_click"]
    assert lc and {(s.source, s.medium, s.channel_group) for s in lc} == {("facebook", "cpc", "Paid Social")}


def test_first_touch_traffic_source_counts_for_the_first_session_only() -> None:
    base = {"event_name": "page_view", "user_pseudo_id": "u1", "traffic_source": {"source": "bing", "medium": "cpc"}}
    rows = [{**base, "event_timestamp": 1_704_067_200_000_000 + n * 10**10,
             "event_params": [{"key": "ga_session_id", "value": {"int_value": n}},
                              {"key": "ga_session_number", "value": {"int_value": n}}]} for n in (1, 2)]
    s1, s2 = sorted(build(rows).sessions, key=lambda s: s.ga_session_id)
    assert (s1.source_kind, s1.channel) == ("first_user", "paid_search")
    assert (s2.source_kind, s2.channel) == ("none", "direct")


@pytest.mark.parametrize(("source", "medium", "campaign", "group", "channel"), [
    ("google", "cpc", "brand", "Paid Search", "paid_search"),
    ("Google", "CPC", "", "Paid Search", "paid_search"),
    ("bing", "ppc", "", "Paid Search", "paid_search"),
    ("www.google.co.uk", "organic", "", "Organic Search", "organic"),
    ("google", "referral", "", "Organic Search", "organic"),
    ("duckduckgo", "(none)", "", "Organic Search", "organic"),
    ("facebook", "paid_social", "", "Paid Social", "social"),
    ("m.facebook.com", "referral", "", "Organic Social", "social"),
    ("newsletter", "social", "", "Organic Social", "social"),
    ("(direct)", "(none)", "(direct)", "Direct", "direct"),
    (None, None, None, "Direct", "direct"),
    ("amazon", "cpc", "", "Paid Shopping", "paid_search"),
    ("partner", "cpc", "summer_shopping", "Paid Shopping", "paid_search"),
    ("partner", "cpc", "", "Paid Other", "paid_other"),
    ("dv360", "cpm", "", "Display", "display"),
    ("youtube.com", "referral", "", "Organic Video", "organic_video"),
    ("newsletter", "email", "", "Email", "email"),
    ("example.com", "referral", "", "Referral", "referral"),
    ("pmax", "cpc", "x cross-network y", "Cross-network", "paid_search"),
    ("firebase", "notification", "", "Mobile Push Notifications", "mobile_push_notifications"),
    ("someone", "something", "", "Unassigned", "unassigned"),
])
def test_default_channel_grouping(source, medium, campaign, group, channel) -> None:
    got = ChannelMapper().map(source, medium, campaign)
    assert (got.group, got.channel) == (group, channel)


def test_mapping_overrides_from_toml(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[data.ga4.group_channels]\nDirect = "organic"\n')
    cfg = load_config(toml).data.ga4
    m = ChannelMapper(cfg)
    assert m.map("(direct)", "(none)").channel == "organic"
    assert m.map("google", "cpc").channel == "paid_search"  # the other defaults stay
    toml.write_text('[data.ga4]\nconversion_events = ["purchase", "generate_lead"]\n'
                    '[[data.ga4.channel_rules]]\ngroup = "Partners"\nsource = "partner.*"\n'
                    '[data.ga4.group_channels]\nPartners = "social"\n')
    cfg = load_config(toml).data.ga4
    assert cfg.conversion_events == ("purchase", "generate_lead")
    m = ChannelMapper(cfg)
    assert (m.map("partner-a", "cpc").group, m.map("partner-a", "cpc").channel) == ("Partners", "social")
    assert m.map("google", "cpc").group == "Unassigned"  # the list was replaced as a whole


@pytest.mark.parametrize(("text", "key"), [
    ('[[data.ga4.channel_rules]]\ngroup = "X"\nmedium = "(cpc"\n', "data.ga4.channel_rules[0].medium"),
    ('[[data.ga4.channel_rules]]\ngroup = "X"\nsource_category = "radio"\n',
     "data.ga4.channel_rules[0].source_category"),
    ('[[data.ga4.channel_rules]]\ngroup = "X"\n', "data.ga4.channel_rules[0].group"),
    ('[data.ga4]\nsession_source = "first"\n', "data.ga4.session_source"),
    ('[data.ga4]\nconversions = ["purchase"]\n', "data.ga4.conversions"),
])
def test_bad_mapping_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(toml)
    assert err.value.key == key


def test_malformed_rows_are_reported_with_row_and_field_and_the_rest_ingested(tmp_path: Path) -> None:
    export = synthetic_export(0)
    expected = export.write_ndjson(tmp_path)
    first = expand(tmp_path)[0]
    batch = read(first)
    assert {e.row: e.field for e in batch.errors} == expected[first]
    assert len(batch.errors) == len(export.malformed) == 10
    assert batch.stats.events == len(export.days[first.stem.removeprefix("events_")])
    assert batch.stats.rows == batch.stats.events + len(batch.errors)
    assert all(e.reason and e.excerpt and e.origin == str(first) for e in batch.errors)
    missing = next(e for e in batch.errors if e.field == "$.event_name")
    assert missing.reason == "missing (required)"


def test_events_without_a_session_id_are_counted_and_their_conversions_kept() -> None:
    row = {"event_timestamp": "1704067200000001", "event_name": "purchase", "user_pseudo_id": "u9",
           "event_params": [{"key": "value", "value": {"double_value": "12.5"}},
                            {"key": "currency", "value": {"string_value": "USD"}}]}
    batch = build([row])
    assert batch.stats.without_session == 1 and batch.sessions == []
    (c,) = batch.conversions
    assert (c.ga_session_id, c.value_micros, c.currency, c.transaction_id) == (None, 12_500_000, "USD", None)


def test_exact_duplicates_are_counted_and_ingested_once() -> None:
    rows = synthetic_export(0).rows
    batch = build(rows + rows[:7])
    assert batch.stats.duplicates == 7 and batch.stats.events == len(rows)


def test_real_rows_keep_distinct_events_of_one_timestamp(shared_dir: Path) -> None:
    """The dataform event-id sample: two events of one user at the same microsecond that differ in
    their params are two events, not a duplicate."""
    batch = read(shared_dir / "reference/ga4/dataform_ga4_sessions__event_id_input.json")
    assert batch.stats.events == 2 and batch.stats.duplicates == 0
    assert batch.sessions[0].engagement_ms == 17415 + 291


def test_real_rows_purchase_and_gclid(shared_dir: Path) -> None:
    ref = shared_dir / "reference/ga4"
    conv = read(ref / "dataform_ga4_sessions__purchase_input.json").conversions
    assert [(c.value_micros, c.currency, c.value_usd_micros, c.transaction_id, c.items) for c in conv] == [
        (31_000_000, "EUR", 33_573_523, "257059", 2)]
    (s,) = read(ref / "dataform_ga4_sessions__url_gclid_input.json").sessions  # utm says organic, URL has gclid
    assert (s.source, s.medium, s.source_kind, s.channel) == ("google", "cpc", "gclid", "paid_search")
    (s,) = read(ref / "ga4_obfuscated_sample_ecommerce__events_20210128_row.json").sessions
    assert (s.device_category, s.country, s.channel, s.page_views, s.engaged) == (
        "desktop", "United States", "direct", 1, True)


def _records(batch: Ga4Batch) -> tuple[list, list]:
    return sorted(batch.sessions, key=lambda s: (s.user_pseudo_id, s.ga_session_id)), sorted(
        batch.conversions, key=lambda c: c.conversion_id)


def test_file_forms_give_the_same_records(tmp_path: Path) -> None:
    rows = synthetic_export(2).days["20240101"]
    (tmp_path / "a.ndjson").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    with gzip.open(tmp_path / "a.json.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "a_array.json").write_text(json.dumps(rows, indent=1))
    ref = read(tmp_path / "a.ndjson")
    sessions, _ = _records(ref)
    assert ref.stats.events == len(rows) and not ref.errors
    for name in ("a.json.gz", "a_array.json"):
        got = read(tmp_path / name)
        assert _records(got)[0] == sessions and got.stats.events == len(rows) and not got.errors
    (tmp_path / "one.json").write_text(json.dumps(rows[0], indent=2))
    assert read(tmp_path / "one.json").stats.events == 1
    (tmp_path / "broken.json").write_text(json.dumps(rows, indent=1)[:-40])
    broken = read(tmp_path / "broken.json")
    assert [(e.row, e.field) for e in broken.errors] == [(0, "$")] and broken.stats.events == 0


def test_parquet_round_trip(tmp_path: Path) -> None:
    """NDJSON → Parquet with the export's BigQuery types (as a Parquet export of events_* has) → the
    same sessions and conversions; conversion ids differ only by the row bytes hashed, so compare
    the rest."""
    export = synthetic_export(3)
    nd = tmp_path / "events.json"
    nd.write_text("\n".join(json.dumps(r) for r in export.rows) + "\n")
    columns = "{" + ", ".join(f"'{f['name']}': '{duckdb_type(f)}'" for f in GA4_SCHEMA) + "}"
    pq = tmp_path / "events.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_json('{nd}', format='newline_delimited', columns={columns})) "
                f"TO '{pq}' (FORMAT parquet)")
    con.close()
    a, b = read(nd), read(pq)
    assert b.stats.events == len(export.rows) and not b.errors
    assert _records(a)[0] == _records(b)[0]
    strip = [dataclasses.replace(c, conversion_id="") for c in a.conversions]
    assert sorted(strip, key=str) == sorted([dataclasses.replace(c, conversion_id="") for c in b.conversions],
                                            key=str)


@pytest.mark.parametrize(("target", "table"), [
    ("bq:ds.events_20240101", True), ("bq:proj.ds.events_*", True), ("proj.ds.events_20240101", True),
    ("events.2024.json", False), ("ds.events_20240101", False), ("exports/proj.ds.t", False), ("bq:nope", False),
])
def test_which_targets_name_a_bigquery_table(target: str, table: bool) -> None:
    assert is_table(target) is table


def test_session_record_matches_the_table_columns() -> None:
    assert [f.name for f in dataclasses.fields(Session)] == [c.name for c in SESSION_COLUMNS]
