"""The part of GA4's BigQuery export schema (``events_YYYYMMDD``) that ingestion reads, as msgspec
Structs: a row decodes in C, unknown columns (privacy_info, app_info, user_ltv, ...) are skipped,
and a wrong type fails with the JSON path of the field.

Decoding is lenient about one thing on purpose (``strict=False``): BigQuery's JSON export writes
INT64 and FLOAT columns as strings (``"event_timestamp": "1702643009060308"``), Parquet and the
BigQuery API as numbers; both decode to the same value. Every field but the three an event cannot
do without (``event_timestamp``, ``event_name``, ``user_pseudo_id``) may be missing or null: older
exports lack ``collected_traffic_source`` and ``session_traffic_source_last_click``.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "Collected",
    "CrossChannel",
    "Device",
    "Ecommerce",
    "Event",
    "Geo",
    "Item",
    "LastClick",
    "ManualCampaign",
    "Param",
    "ParamValue",
    "TrafficSource",
    "WebInfo",
]


class _S(msgspec.Struct, gc=False):
    """Base: no GC tracking (these hold no cycles; millions are made and dropped)."""


class ParamValue(_S):
    string_value: str | None = None
    int_value: int | None = None
    float_value: float | None = None
    double_value: float | None = None


class Param(_S):
    key: str
    value: ParamValue | None = None


class WebInfo(_S):
    browser: str | None = None


class Device(_S):
    category: str | None = None
    operating_system: str | None = None
    browser: str | None = None
    """Older exports; newer ones put it in ``web_info.browser``."""
    web_info: WebInfo | None = None
    language: str | None = None


class Geo(_S):
    country: str | None = None
    region: str | None = None
    city: str | None = None


class TrafficSource(_S):
    """The user's first-touch acquisition (user-scoped, not the session's)."""

    source: str | None = None
    medium: str | None = None
    name: str | None = None


class Collected(_S):
    """``collected_traffic_source``: the utm / click ids collected with this event (since 2023)."""

    manual_source: str | None = None
    manual_medium: str | None = None
    manual_campaign_name: str | None = None
    gclid: str | None = None
    dclid: str | None = None


class ManualCampaign(_S):
    source: str | None = None
    medium: str | None = None
    campaign_name: str | None = None


class CrossChannel(_S):
    source: str | None = None
    medium: str | None = None
    campaign_name: str | None = None
    default_channel_group: str | None = None


class LastClick(_S):
    """``session_traffic_source_last_click`` (exports since mid-2024)."""

    manual_campaign: ManualCampaign | None = None
    cross_channel_campaign: CrossChannel | None = None


class Ecommerce(_S):
    purchase_revenue: float | None = None
    purchase_revenue_in_usd: float | None = None
    transaction_id: str | None = None
    total_item_quantity: int | None = None


class Item(_S):
    item_id: str | None = None
    quantity: int | None = None


class Event(_S):
    """One row of ``events_YYYYMMDD``."""

    event_timestamp: int
    """Microseconds since the epoch (UTC)."""
    event_name: str
    user_pseudo_id: str
    event_params: list[Param] | None = None
    user_id: str | None = None
    user_first_touch_timestamp: int | None = None
    event_value_in_usd: float | None = None
    device: Device | None = None
    geo: Geo | None = None
    traffic_source: TrafficSource | None = None
    collected_traffic_source: Collected | None = None
    session_traffic_source_last_click: LastClick | None = None
    ecommerce: Ecommerce | None = None
    items: list[Item] | None = None
