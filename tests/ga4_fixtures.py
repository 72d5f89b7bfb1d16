"""A synthetic GA4 BigQuery export, generated from a seed (not a file dump), with the truth it
was made from: which sessions exist, their channel, depth and conversions, and which rows are
malformed and in which field.

Rows look like ``bq extract`` NDJSON: INT64 as strings, nested records, ``event_params`` as
repeated key/value. The generator covers nested params (string, int and double values), sessions
whose source is carried by ``collected_traffic_source`` (with and without a gclid), by event
params only (older exports), by nothing at all (no traffic source columns: direct), purchases
with value in ``ecommerce`` and params, a session cut by midnight (two daily files), and
malformed rows of every kind ingestion must report.

``GA4_SCHEMA`` is the export's schema (the subset generated) in BigQuery's terms; it gives the
DuckDB type used to write Parquet and the ``tabledata.list`` encoding of the fake BigQuery.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GA4_SCHEMA", "Export", "SessionTruth", "bq_schema_json", "duckdb_type", "fv_row", "synthetic_export"]


def _f(name: str, type_: str = "STRING", mode: str = "NULLABLE", *fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": type_, "mode": mode}
    if fields:
        out["fields"] = list(fields)
    return out


_VALUE = _f("value", "RECORD", "NULLABLE", _f("string_value"), _f("int_value", "INTEGER"),
            _f("float_value", "FLOAT"), _f("double_value", "FLOAT"))
GA4_SCHEMA: list[dict[str, Any]] = [
    _f("event_date"), _f("event_timestamp", "INTEGER"), _f("event_name"),
    _f("event_params", "RECORD", "REPEATED", _f("key"), _VALUE),
    _f("event_value_in_usd", "FLOAT"), _f("event_bundle_sequence_id", "INTEGER"),
    _f("user_id"), _f("user_pseudo_id"), _f("user_first_touch_timestamp", "INTEGER"),
    _f("device", "RECORD", "NULLABLE", _f("category"), _f("mobile_brand_name"), _f("operating_system"),
       _f("language"), _f("web_info", "RECORD", "NULLABLE", _f("browser"), _f("browser_version"))),
    _f("geo", "RECORD", "NULLABLE", _f("continent"), _f("country"), _f("region"), _f("city")),
    _f("traffic_source", "RECORD", "NULLABLE", _f("name"), _f("medium"), _f("source")),
    _f("collected_traffic_source", "RECORD", "NULLABLE", _f("manual_campaign_id"), _f("manual_campaign_name"),
       _f("manual_source"), _f("manual_medium"), _f("manual_term"), _f("gclid"), _f("dclid")),
    _f("session_traffic_source_last_click", "RECORD", "NULLABLE",
       _f("manual_campaign", "RECORD", "NULLABLE", _f("campaign_name"), _f("source"), _f("medium")),
       _f("cross_channel_campaign", "RECORD", "NULLABLE", _f("campaign_name"), _f("source"), _f("medium"),
          _f("default_channel_group"))),
    _f("ecommerce", "RECORD", "NULLABLE", _f("total_item_quantity", "INTEGER"), _f("purchase_revenue_in_usd", "FLOAT"),
       _f("purchase_revenue", "FLOAT"), _f("transaction_id")),
    _f("items", "RECORD", "REPEATED", _f("item_id"), _f("item_name"), _f("price", "FLOAT"),
       _f("quantity", "INTEGER")),
    _f("stream_id"), _f("platform"),
]
"""The generated columns of ``events_YYYYMMDD`` (BigQuery schema JSON)."""

_DUCK = {"STRING": "VARCHAR", "INTEGER": "BIGINT", "FLOAT": "DOUBLE"}


def duckdb_type(f: dict[str, Any]) -> str:
    """DuckDB type of a schema field (STRUCT for records, ``[]`` for repeated)."""
    if f["type"] == "RECORD":
        t = "STRUCT(" + ", ".join(f'"{c["name"]}" {duckdb_type(c)}' for c in f["fields"]) + ")"
    else:
        t = _DUCK[f["type"]]
    return t + "[]" if f["mode"] == "REPEATED" else t


def bq_schema_json() -> dict[str, Any]:
    """``{"fields": [...]}`` as ``tables.get`` returns it."""
    return {"fields": GA4_SCHEMA}


def fv_row(row: dict[str, Any], fields: list[dict[str, Any]] = GA4_SCHEMA) -> dict[str, Any]:
    """One row in ``tabledata.list``'s ``{"f": [{"v": ...}]}`` encoding (scalars as strings)."""

    def cell(f: dict[str, Any], v: Any) -> Any:
        if v is None:
            return [] if f["mode"] == "REPEATED" else None
        if f["mode"] == "REPEATED":
            return [{"v": cell({**f, "mode": "NULLABLE"}, x)} for x in v]
        if f["type"] == "RECORD":
            return fv_row(v, f["fields"])
        return str(v)

    return {"f": [{"v": cell(f, row.get(f["name"]))} for f in fields]}


@dataclass
class SessionTruth:
    """What a generated session is."""

    channel: str
    page_views: int
    events: int
    conversions: int = 0
    value: float = 0.0


@dataclass
class Export:
    """A generated export: rows per daily file, the malformed lines, and the truth."""

    days: dict[str, list[dict[str, Any]]]
    """event_date → rows of that day."""
    sessions: dict[tuple[str, int], SessionTruth]
    """(user_pseudo_id, ga_session_id) → truth."""
    malformed: list[tuple[str, str]] = field(default_factory=list)
    """(line text, field path expected in the error), appended after the rows of the first day."""

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every well-formed row, all days."""
        return [r for day in sorted(self.days) for r in self.days[day]]

    def write_ndjson(self, directory: Path, *, malformed: bool = True) -> dict[Path, dict[int, str]]:
        """One ``events_YYYYMMDD.json`` per day; returns file → {line number: field} of malformed lines."""
        directory.mkdir(parents=True, exist_ok=True)
        out: dict[Path, dict[int, str]] = {}
        for i, day in enumerate(sorted(self.days)):
            path = directory / f"events_{day}.json"
            lines = [json.dumps(r) for r in self.days[day]]
            bad: dict[int, str] = {}
            if malformed and i == 0:
                for k, (text, _) in enumerate(self.malformed):
                    lines.insert(3 + 5 * k, text)  # spread among good rows
                expected = dict(self.malformed)
                bad = {n: expected[line] for n, line in enumerate(lines, start=1) if line in expected}
            path.write_text("\n".join(lines) + "\n")
            out[path] = bad
        return out


_CHANNELS = ("paid_search", "organic", "social", "direct", "email")
_DEVICES = (("desktop", "Windows", "Chrome"), ("mobile", "iOS", "Safari"), ("mobile", "Android", "Chrome"),
            ("tablet", "iOS", "Safari"))


def _param(key: str, value: Any) -> dict[str, Any]:
    v: dict[str, Any] = {"string_value": None, "int_value": None, "float_value": None, "double_value": None}
    if isinstance(value, str):
        v["string_value"] = value
    elif isinstance(value, int):
        v["int_value"] = str(value)
    else:
        v["double_value"] = str(value)
    return {"key": key, "value": v}


def synthetic_export(seed: int = 0, users: int = 40, start_us: int = 1_704_067_200_000_000) -> Export:
    """Generate an export starting 2024-01-01 00:00 UTC (a day per 24 h of event time).

    :param seed: the only source of randomness.
    :param users: people; each has 1-3 sessions of 1-6 page views.
    :param start_us: event time of the first session, microseconds.
    """
    rng = random.Random(seed)
    days: dict[str, list[dict[str, Any]]] = {}
    truth: dict[tuple[str, int], SessionTruth] = {}
    order = 0
    for u in range(users):
        upid = f"{rng.randrange(10**8, 10**9)}.{1_700_000_000 + u}"
        user_id = f"user-{u}" if rng.random() < 0.3 else None
        first_channel = rng.choice(_CHANNELS)
        device = rng.choice(_DEVICES)
        t = start_us + rng.randrange(0, 20 * 3600) * 1_000_000
        if u == 0:  # one session cut by midnight: its events land in two daily files
            t = start_us + (86_400 - 200) * 1_000_000
        for n in range(1, rng.randint(1, 3) + 1):
            channel = first_channel if n == 1 else rng.choice(_CHANNELS)
            sid = t // 1_000_000
            depth = rng.randint(1, 6)
            convert = rng.random() < 0.3
            st = truth[(upid, sid)] = SessionTruth(channel, depth, 0)
            for k in range(depth + 1 + int(convert)):
                name = "session_start" if k == 0 else ("purchase" if k == depth + 1 else "page_view")
                ts = t + k * rng.randrange(5, 90) * 1_000_000
                row = _event(rng, name, ts, upid, user_id, sid, n, channel, device, k == 0 or k == 1, start_us)
                if name == "purchase":
                    value = round(rng.uniform(5, 200), 2)
                    row["ecommerce"] = {"total_item_quantity": "2", "purchase_revenue": str(value),
                                        "purchase_revenue_in_usd": str(round(value * 1.1, 6)),
                                        "transaction_id": f"T{order}"}
                    row["event_params"] += [_param("value", value), _param("currency", "EUR"),
                                            _param("transaction_id", f"T{order}")]
                    row["items"] = [{"item_id": "sku1", "item_name": "a", "price": str(value / 2), "quantity": "1"},
                                    {"item_id": "sku2", "item_name": "b", "price": str(value / 2), "quantity": "1"}]
                    st.conversions += 1
                    st.value += value
                    order += 1
                st.events += 1
                day = _date(ts)
                days.setdefault(day, []).append(row)
            t += rng.randrange(2, 72) * 3600 * 1_000_000
    rng.shuffle(days[min(days)])  # exports are not in time order
    return Export(days, truth, _malformed(rng, start_us))


def _date(ts_us: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC).strftime("%Y%m%d")


def _event(rng: random.Random, name: str, ts: int, upid: str, user_id: str | None, sid: int, n: int, channel: str,
           device: tuple[str, str, str], entry: bool, first_touch: int) -> dict[str, Any]:
    params = [_param("ga_session_id", sid), _param("ga_session_number", n),
              _param("page_location", f"https://shop.example/p/{rng.randrange(50)}?utm_x=1"),
              _param("engagement_time_msec", rng.randrange(0, 20_000)),
              _param("session_engaged", "1" if rng.random() < 0.6 else "0"),
              _param("ratio", rng.random())]  # a double param nobody reads
    row: dict[str, Any] = {
        "event_date": _date(ts), "event_timestamp": str(ts), "event_name": name, "event_params": params,
        "event_value_in_usd": None, "event_bundle_sequence_id": str(rng.randrange(10**9)),
        "user_id": user_id, "user_pseudo_id": upid, "user_first_touch_timestamp": str(first_touch),
        "device": {"category": device[0], "mobile_brand_name": None, "operating_system": device[1],
                   "language": "en-us", "web_info": {"browser": device[2], "browser_version": "120.0"}},
        "geo": {"continent": "Europe", "country": rng.choice(("Germany", "France", "Sweden")),
                "region": "(not set)", "city": "(not set)"},
        "stream_id": "1", "platform": "WEB", "items": [],
    }
    if channel != "direct":  # direct sessions: no traffic-source columns at all
        row["traffic_source"] = {"name": "(direct)", "medium": "(none)", "source": "(direct)"}
    if entry and channel == "paid_search":
        row["collected_traffic_source"] = {"manual_campaign_name": "brand", "manual_source": "google",
                                           "manual_medium": "cpc", "gclid": f"gc{rng.randrange(10**6)}"}
    elif entry and channel == "social":
        row["collected_traffic_source"] = {"manual_campaign_name": "spring", "manual_source": "facebook",
                                           "manual_medium": "paid_social", "gclid": None}
        row["session_traffic_source_last_click"] = {
            "manual_campaign": {"campaign_name": "spring", "source": "facebook", "medium": "paid_social"},
            "cross_channel_campaign": None}
    elif entry and channel == "organic":  # an older export: the source is only in the event params
        params += [_param("source", "google"), _param("medium", "organic"), _param("campaign", "(organic)")]
    elif entry and channel == "email":
        params += [_param("source", "newsletter"), _param("medium", "email"), _param("campaign", "jan")]
    return row


def _malformed(rng: random.Random, start_us: int) -> list[tuple[str, str]]:
    ok = {"event_date": "20240101", "event_timestamp": str(start_us + 1), "event_name": "page_view",
          "user_pseudo_id": "9.9", "event_params": [_param("ga_session_id", 1)]}
    cases: list[tuple[dict[str, Any] | str, str]] = [
        ('{"event_date": "20240101", "event_timestamp": "17040', "$"),  # truncated JSON
        ({k: v for k, v in ok.items() if k != "event_timestamp"}, "$.event_timestamp"),
        ({k: v for k, v in ok.items() if k != "event_name"}, "$.event_name"),
        ({**ok, "user_pseudo_id": None}, "$.user_pseudo_id"),
        ({**ok, "event_timestamp": "yesterday"}, "$.event_timestamp"),
        ({**ok, "event_timestamp": str(start_us // 1000)}, "$.event_timestamp"),  # milliseconds, not µs
        ({**ok, "event_params": "ga_session_id=1"}, "$.event_params"),
        ({**ok, "event_params": [{"key": "ga_session_id", "value": {"int_value": "one"}}]},
         "$.event_params[0].value.int_value"),
        ({**ok, "device": ["desktop"]}, "$.device"),
        ("[1, 2, 3]", "$"),
    ]
    return [(c if isinstance(c, str) else json.dumps(c), f) for c, f in cases]
