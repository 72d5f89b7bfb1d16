"""The GA4 warehouse tables and views, described with the warehouse's own column types
(:class:`~agent_service.warehouse.schema.TableSchema`; times in ms since the epoch, money in
micros, as the other warehouse tables).

Every table carries ``origin`` (the file or BigQuery table the rows came from): re-ingesting an
origin replaces its rows, so ingestion is idempotent per origin. Sessions are stored in parts,
one per (origin, session), because a session crossing midnight spans two daily files; the
``ga4_sessions`` view merges the parts and ``ga4_touches`` derives one touch per session.

What the discovery engine reads:

- ``ga4_sessions`` (view): one row per (user_pseudo_id, ga_session_id) with channel, device,
  depth, engagement, conversions;
- ``ga4_touches`` (view): the journeys, one row per session start with its channel;
- ``ga4_conversions``: one row per conversion event with its value (join sessions on
  user_pseudo_id, ga_session_id for the channel);
- ``ga4_ingests``: what was ingested, when, with counts and the event-time span;
- ``ga4_ingest_errors``: every row not ingested, with row number, field and reason.
"""

from __future__ import annotations

from agent_service.warehouse.schema import Column as C
from agent_service.warehouse.schema import TableSchema

__all__ = ["GA4_TABLES", "GA4_VIEWS", "SESSION_COLUMNS"]

SESSION_COLUMNS: tuple[C, ...] = (
    C("user_pseudo_id", "STRING", True, "GA4 device/browser pseudonymous id."),
    C("ga_session_id", "INT64", True, "ga_session_id event param (session start, unix seconds)."),
    C("session_number", "INT64", False, "ga_session_number: the user's n-th session."),
    C("user_id", "STRING", False, "Logged-in user id, when set."),
    C("start_ms", "INT64", True, "First event of the session, ms since the epoch."),
    C("end_ms", "INT64", True, "Last event, ms since the epoch."),
    C("events", "INT64", True, "Events in the session."),
    C("page_views", "INT64", True, "page_view / screen_view events: the session's depth."),
    C("engaged", "BOOL", True, "GA4 session_engaged = 1 on some event."),
    C("engagement_ms", "INT64", True, "Sum of engagement_time_msec."),
    C("landing_page", "STRING", False, "page_location of the first page view, query string removed."),
    C("device_category", "STRING", False, "desktop, mobile, tablet, ... of the first event."),
    C("operating_system", "STRING", False, "Operating system of the first event."),
    C("browser", "STRING", False, "Browser of the first event."),
    C("country", "STRING", False, "geo.country of the first event."),
    C("region", "STRING", False, "geo.region of the first event."),
    C("source", "STRING", True, "Session source ((direct) when none was seen)."),
    C("medium", "STRING", True, "Session medium."),
    C("campaign", "STRING", True, "Session campaign name."),
    C("source_kind", "STRING", True, "Where the source came from: last_click, gclid, collected, event_params, "
      "first_user or none."),
    C("channel_group", "STRING", True, "GA4 default channel group (data.ga4.channel_rules)."),
    C("channel", "STRING", True, "GAELP channel (data.ga4.group_channels)."),
    C("conversions", "INT64", True, "Conversion events in the session."),
    C("conversion_value_micros", "INT64", True, "Their summed value, in their own currency, micros."),
)

_ORIGIN = C("origin", "STRING", True, "File or BigQuery table the row came from.")

GA4_TABLES: dict[str, TableSchema] = {t.name: t for t in (
    TableSchema("ga4_session_parts", "part_id", (
        C("part_id", "STRING", True, "origin|user_pseudo_id|ga_session_id."), _ORIGIN, *SESSION_COLUMNS),
        "The part of one session found in one source (the ga4_sessions view merges them)."),
    TableSchema("ga4_conversions", "conversion_id", (
        C("conversion_id", "STRING", True, "Hash of user, timestamp, event name and row content."), _ORIGIN,
        C("user_pseudo_id", "STRING", True, "GA4 pseudonymous id."),
        C("user_id", "STRING", False, "Logged-in user id, when set."),
        C("ga_session_id", "INT64", False, "Session of the conversion (join ga4_sessions)."),
        C("event_time", "INT64", True, "Event time, ms since the epoch."),
        C("event_name", "STRING", True, "purchase or another of data.ga4.conversion_events."),
        C("value_micros", "INT64", False, "ecommerce.purchase_revenue, else the value param, micros."),
        C("currency", "STRING", False, "currency param (ISO 4217)."),
        C("value_usd_micros", "INT64", False, "purchase_revenue_in_usd, else event_value_in_usd, micros."),
        C("transaction_id", "STRING", False, "ecommerce.transaction_id, else the transaction_id param."),
        C("items", "INT64", True, "Items in the event.")),
        "One conversion event."),
    TableSchema("ga4_ingest_errors", "error_id", (
        C("error_id", "STRING", True, "origin#row."), _ORIGIN,
        C("row_number", "INT64", True, "1-based line / element / row; 0 = the whole file."),
        C("field", "STRING", True, "JSON path of the offending field ($ = the row)."),
        C("reason", "STRING", True, "What is wrong."),
        C("excerpt", "STRING", False, "Start of the row as read.")),
        "A row that was not ingested."),
    TableSchema("ga4_ingests", "origin", (
        _ORIGIN,
        C("ingested_at", "INT64", True, "Wall-clock time of the ingestion, ms since the epoch."),
        C("rows", "INT64", True, "Rows read."),
        C("events", "INT64", True, "Rows ingested as events."),
        C("duplicates", "INT64", True, "Exact duplicate rows (ingested once)."),
        C("errors", "INT64", True, "Rows not ingested (see ga4_ingest_errors)."),
        C("without_session", "INT64", True, "Events without a ga_session_id."),
        C("sessions", "INT64", True, "Session parts written."),
        C("conversions", "INT64", True, "Conversions written."),
        C("first_event_ms", "INT64", False, "Earliest session start."),
        C("last_event_ms", "INT64", False, "Latest session end.")),
        "One ingested file or table (its latest ingestion)."),
)}
"""The stored tables by name."""

_SRC_FIELDS = "source, medium, campaign, source_kind, channel_group, channel"
_RANK = ("CASE source_kind WHEN 'last_click' THEN 0 WHEN 'first_user' THEN 2 WHEN 'none' THEN 3 ELSE 1 END")

GA4_VIEWS: dict[str, str] = {
    "ga4_sessions": f"""
SELECT user_pseudo_id, ga_session_id, session_number, user_id, start_ms, end_ms, events, page_views, engaged,
       engagement_ms, landing_page, first.device_category, first.operating_system, first.browser,
       first.country, first.region, src.source, src.medium, src.campaign, src.source_kind,
       src.channel_group, src.channel, conversions, conversion_value_micros, parts
FROM (
  SELECT user_pseudo_id, ga_session_id,
         max(session_number) AS session_number, max(user_id) AS user_id,
         min(start_ms) AS start_ms, max(end_ms) AS end_ms,
         sum(events)::BIGINT AS events, sum(page_views)::BIGINT AS page_views, bool_or(engaged) AS engaged,
         sum(engagement_ms)::BIGINT AS engagement_ms,
         arg_min(landing_page, start_ms) FILTER (WHERE landing_page IS NOT NULL) AS landing_page,
         arg_min(struct_pack(device_category, operating_system, browser, country, region), start_ms) AS first,
         arg_min(struct_pack({_SRC_FIELDS}), ({_RANK}, start_ms, source_kind <> 'gclid', origin)) AS src,
         sum(conversions)::BIGINT AS conversions,
         sum(conversion_value_micros)::BIGINT AS conversion_value_micros,
         count(*) AS parts
  FROM ga4_session_parts GROUP BY user_pseudo_id, ga_session_id)""",
    "ga4_touches": """
SELECT user_pseudo_id, user_id, ga_session_id, start_ms AS event_time, source, medium, campaign, source_kind,
       channel_group, channel, device_category, country
FROM ga4_sessions""",
}
"""Views over the tables: sessions merged across sources, and one touch per session."""
