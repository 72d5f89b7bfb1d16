"""``gaelp ingest``: analytics exports into the warehouse (``gaelp ingest ga4``)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "ingest a GA4 BigQuery export (NDJSON, Parquet or a BigQuery table) into warehouse tables"

DESCRIPTION = """\
Read analytics exports into the warehouse tables the discovery engine learns from.

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``gaelp ingest ga4``'s options."""
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


def run(args: argparse.Namespace) -> int:
    """Ingest, print the summary and the JSON line."""
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


def _short(origin: str) -> str:
    return origin if origin.startswith("bq:") else Path(origin).name
