"""``gaelp ingest``: analytics exports into the warehouse (``gaelp ingest ga4``, ``gaelp ingest campaigns``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent_service.money import micros_to_usd

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "ingest a GA4 BigQuery export or an ad-platform performance report into warehouse tables"

DESCRIPTION = """\
Read analytics exports into the warehouse tables the discovery engine learns from
(ad-platform performance reports: gaelp ingest campaigns --help).

gaelp ingest ga4 PATH|TABLE ... --warehouse FILE
  PATH: a GA4 export file — newline-delimited JSON as `bq extract` writes it (.gz too), a JSON
  array or object of rows, or Parquet — or a directory of them (one origin per file).
  TABLE: bq:PROJECT.DATASET.events_20240101 (or bq:DATASET.TABLE with [warehouse]
  bigquery_project; a trailing * reads every matching daily table), through the [warehouse]
  BigQuery settings (bigquery_api_endpoint, bigquery_anonymous for a local endpoint).

Writes into the DuckDB FILE: ga4_session_parts / ga4_sessions (view), ga4_touches (view),
ga4_conversions, ga4_ingest_errors, ga4_ingests. Re-ingesting an origin replaces its rows.
Channels come from [data.ga4] (GA4's default channel grouping → organic, paid_search, social;
other groups keep their own name, e.g. direct, referral, email).

Malformed rows (invalid JSON, missing event_timestamp / event_name / user_pseudo_id, wrong
types) are not ingested; each is stored in ga4_ingest_errors with its row number and field and
counted in the summary; the rest is ingested. Last stdout line: one JSON object
  {"origins", "rows", "events", "duplicates", "errors", "sessions", "touches", "conversions",
   "conversion_value_usd", "errors_by_field", "channels", "seconds", "events_per_s", "warehouse"}
Exit status 0 when every origin was read (even with row errors; --strict: 1 if any), 1 when an
origin could not be read at all.
"""


CAMPAIGNS_DESCRIPTION = """\
Read ad-platform performance reports (Google Ads column names) into the warehouse, and derive
CTR/CVR priors from them.

gaelp ingest campaigns CSV ... --warehouse FILE [--priors-out FILE.json]
  CSV: a report with one row per campaign x ad group x ad x device x network x day and the
  columns Campaign, Ad group, Ad ID (or Ad), Device, Network (with search partners), Day,
  Impr. (or Impressions), Clicks, Cost, Conversions, Conv. value (API names such as
  metrics.cost_micros and common variants too; Campaign, Day, Impressions, Clicks and Cost are
  required). Comma or tab separated, UTF-8 or UTF-16; Google Ads' title lines and Total rows
  are skipped.

Writes into the DuckDB FILE: campaign_performance, campaign_ingest_errors, campaign_ingests.
Re-ingesting a file replaces its rows. The network maps to a GA4 channel group, then to a GAELP
channel by [data.ga4] group_channels (Google search / Search partners -> paid_search; Display
Network keeps "display" unless configured, e.g. Display = "social").

Malformed rows (bad number, date, clicks > impressions, missing campaign, short row) are not
ingested; each is stored in campaign_ingest_errors with its line number and field and counted.
--priors-out writes Beta pseudo-counts of CTR and CVR per creative and per channel|device
(agent_service/ingest/campaign_store.py documents the form) and the calibration's base_ctr.
Last stdout line: one JSON object {"origins", "rows", "errors", "totals_skipped",
"errors_by_field", "impressions", "clicks", "cost", "conversions", "channels", "warehouse"}.
Exit status 0 when every file was read (--strict: 1 if any row was malformed), 1 when a file
could not be read at all.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``gaelp ingest ga4`` and ``gaelp ingest campaigns``' options."""
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    p = sub.add_parser("ga4", help="GA4 BigQuery export (events_YYYYMMDD)", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="PATH|TABLE", help="export files, directories or bq: tables")
    p.add_argument("--warehouse", required=True, type=Path, metavar="FILE", help="DuckDB file to write")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration ([data.ga4], [warehouse])")
    p.add_argument("--conversion-event", action="append", default=None, metavar="NAME",
                   help="event counted as a conversion (repeatable; default: data.ga4.conversion_events)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--show-errors", type=int, default=10, metavar="N", help="row errors to print (default 10)")
    p.add_argument("--strict", action="store_true", help="exit status 1 when any row was malformed")
    c = sub.add_parser("campaigns", help="ad-platform performance report (Google Ads CSV)",
                       description=CAMPAIGNS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("targets", nargs="+", metavar="CSV", help="report files")
    c.add_argument("--warehouse", required=True, type=Path, metavar="FILE", help="DuckDB file to write")
    c.add_argument("--config", type=Path, default=None, help="TOML configuration ([data.ga4] group_channels)")
    c.add_argument("--priors-out", type=Path, default=None, metavar="FILE", help="write CTR/CVR priors as JSON")
    c.add_argument("--prior-strength", type=float, default=100.0,
                   help="pseudo-trials shrinking each group to the overall rate (default 100)")
    c.add_argument("--prior-max-count", type=float, default=1000.0,
                   help="cap on a prior's alpha + beta (default 1000)")
    c.add_argument("--show-errors", type=int, default=10, metavar="N", help="row errors to print (default 10)")
    c.add_argument("--strict", action="store_true", help="exit status 1 when any row was malformed")


def run(args: argparse.Namespace) -> int:
    """Ingest, print the summary and the JSON line."""
    if args.kind == "campaigns":
        return _run_campaigns(args)
    import dataclasses
    import json
    import sys

    from agent_service.config import load_config
    from agent_service.ingest.runner import ingest_ga4
    from agent_service.ingest.sources import SourceError
    from agent_service.ingest.store import Ga4Store

    cfg = load_config(args.config)
    if args.conversion_event:
        ga4 = dataclasses.replace(cfg.data.ga4, conversion_events=tuple(args.conversion_event))
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, ga4=ga4))
    args.warehouse.parent.mkdir(parents=True, exist_ok=True)
    with Ga4Store(args.warehouse) as store:
        try:
            report = ingest_ga4(args.targets, store, cfg, progress=not args.no_progress and sys.stderr.isatty(),
                                keep_errors=args.show_errors)
        except SourceError as exc:
            print(f"gaelp ingest ga4: {exc}", file=sys.stderr)
            return 1
    width = max([len("origin")] + [len(_short(o.origin)) for o in report.origins])
    cols = ("rows", "events", "duplicates", "errors", "sessions", "conversions")
    print(f"{'origin':<{width}}  " + "  ".join(f"{c:>11}" for c in cols))
    for o in report.origins:
        print(f"{_short(o.origin):<{width}}  " + "  ".join(f"{getattr(o, c):>11}" for c in cols))
    obj = report.to_json_obj()
    print(f"{'total':<{width}}  " + "  ".join(f"{obj[c]:>11}" for c in cols))
    print(f"{obj['events']} events, {obj['sessions']} sessions, {obj['touches']} touches, "
          f"{obj['conversions']} conversions (USD {obj['conversion_value_usd']:.2f}), "
          f"{obj['errors']} malformed rows, {obj['duplicates']} duplicates, "
          f"{obj['without_session']} events without ga_session_id; {obj['seconds']:.2f} s")
    if obj["channels"]:
        print("sessions by channel: " + ", ".join(f"{k} {v}" for k, v in obj["channels"].items()))
    if report.errors_by_field:
        print("malformed rows by field: " + ", ".join(f"{k} {v}" for k, v in obj["errors_by_field"].items()))
        for e in report.first_errors:
            print(f"  {_short(e.origin)} row {e.row}: {e.field}: {e.reason}")
        shown = len(report.first_errors)
        if obj["errors"] > shown:
            print(f"  ... {obj['errors'] - shown} more in table ga4_ingest_errors")
    print(f"warehouse {args.warehouse}: " + ", ".join(f"{k} {v}" for k, v in obj["warehouse"].items()))
    print(json.dumps(obj))
    return 1 if args.strict and obj["errors"] else 0


def _run_campaigns(args: argparse.Namespace) -> int:
    import json
    import sys
    from collections import Counter

    from agent_service.config import load_config
    from agent_service.errors import DecodeError
    from agent_service.ingest.campaign_store import CampaignStore, calibration_channels, campaign_priors
    from agent_service.ingest.campaigns import parse_report

    cfg = load_config(args.config)
    batches = []
    for target in args.targets:
        path = Path(target)
        try:
            batches.append(parse_report(path.read_bytes(), str(path), cfg.data.ga4))
        except OSError as exc:
            print(f"gaelp ingest campaigns: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        except DecodeError as exc:
            print(f"gaelp ingest campaigns: {exc.field}: {exc.reason}", file=sys.stderr)
            return 1
    args.warehouse.parent.mkdir(parents=True, exist_ok=True)
    by_field: Counter[str] = Counter(e.field for b in batches for e in b.errors)
    channels: Counter[str] = Counter()
    with CampaignStore(args.warehouse) as store:
        for b in batches:
            store.replace(b)
            channels.update({r.channel: r.impressions for r in b.rows})
        warehouse = {t: store.count(t) for t in ("campaign_performance", "campaign_ingest_errors")}
        priors = campaign_priors(store, args.prior_strength, args.prior_max_count) if warehouse[
            "campaign_performance"] else None
    rows = [r for b in batches for r in b.rows]
    obj: dict[str, Any] = {"origins": len(batches), "rows": len(rows), "errors": sum(len(b.errors) for b in batches),
           "totals_skipped": sum(b.totals for b in batches), "errors_by_field": dict(by_field.most_common()),
           "impressions": sum(r.impressions for r in rows), "clicks": sum(r.clicks for r in rows),
           "cost": round(micros_to_usd(sum(r.cost_micros for r in rows)), 2),
           "conversions": round(sum(r.conversions for r in rows), 3), "channels": dict(channels.most_common()),
           "warehouse": warehouse}
    for b in batches:
        print(f"{_short(b.origin)}: {len(b.rows)} rows, {len(b.errors)} malformed, {b.totals} total rows skipped; "
              f"columns: {', '.join(f'{k}={v!r}' for k, v in b.columns.items())}")
    shown = [e for b in batches for e in b.errors][: max(args.show_errors, 0)]
    for e in shown:
        print(f"  {_short(e.origin)} row {e.row}: {e.field}: {e.reason}")
    if obj["errors"] > len(shown):
        print(f"  ... {obj['errors'] - len(shown)} more in table campaign_ingest_errors")
    if channels:
        print("impressions by channel: " + ", ".join(f"{k} {v}" for k, v in channels.most_common()))
    if args.priors_out is not None:
        if priors is None:
            print("gaelp ingest campaigns: no rows, no priors written", file=sys.stderr)
            return 1
        priors["calibration"] = calibration_channels(priors)
        args.priors_out.parent.mkdir(parents=True, exist_ok=True)
        args.priors_out.write_text(json.dumps(priors, indent=1, sort_keys=True) + "\n")
        print(f"priors: {len(priors['creative'])} creatives, {len(priors['channel_device'])} channel|device "
              f"groups -> {args.priors_out}")
        obj["priors"] = str(args.priors_out)
    print(f"warehouse {args.warehouse}: " + ", ".join(f"{k} {v}" for k, v in warehouse.items()))
    print(json.dumps(obj))
    return 1 if args.strict and obj["errors"] else 0


def _short(origin: str) -> str:
    return origin if origin.startswith("bq:") else Path(origin).name
