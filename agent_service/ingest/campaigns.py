"""Ad-platform performance reports (Google Ads column names) → ``campaign_performance`` rows and
CTR/CVR priors.

A report is a CSV (or tab-separated, UTF-8 or the UTF-16 Google Ads' "Excel CSV" writes) with
one header row; the title lines Google Ads puts above it ("Ad performance report", the date range)
are skipped, and so are its "Total: ..." rows below the data (counted as ``totals``). Header names
are matched case-insensitively with their common variants (:data:`COLUMNS`): Google Ads UI
("Impr.", "Conv. value", "Network (with search partners)"), older AdWords display names and the
Google Ads API field names (``metrics.cost_micros`` is divided by 10⁶).

Every data row either becomes a :class:`CampaignRow` or a :class:`~agent_service.ingest.ga4.RowError`
with its 1-based line number and field; nothing is dropped silently. Metrics may carry thousands
separators; "--" (Google Ads' empty metric) is 0. Money is stored in micros of the report's currency.

The network becomes a GA4 channel group (:data:`NETWORK_GROUPS`: search → "Paid Search", display
→ "Display", YouTube → "Paid Video", ...) and then a GAELP channel through the same
``[data.ga4.group_channels]`` map as GA4 sessions, so one setting (e.g. ``Display = "social"``)
governs both sources.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent_service.config.data import Ga4Config
from agent_service.errors import DecodeError
from agent_service.ingest.channels import snake
from agent_service.ingest.ga4 import RowError
from agent_service.money import usd_to_micros

__all__ = [
    "COLUMNS",
    "DEVICES",
    "NETWORK_GROUPS",
    "CampaignBatch",
    "CampaignRow",
    "parse_report",
]

COLUMNS: dict[str, tuple[str, ...]] = {
    "campaign": ("campaign", "campaign name", "campaign.name", "campaignname"),
    "ad_group": ("ad group", "ad group name", "adgroup", "ad_group.name", "adgroupname"),
    "ad": ("ad id", "ad", "ad name", "creative", "creative id", "ad_group_ad.ad.id", "adid", "id"),
    "device": ("device", "segments.device"),
    "network": ("network (with search partners)", "network", "ad network type", "segments.ad_network_type",
                "adnetworktype2", "adnetworktype1", "channel"),
    "day": ("day", "date", "segments.date"),
    "impressions": ("impr.", "impressions", "impr", "metrics.impressions"),
    "clicks": ("clicks", "metrics.clicks"),
    "cost": ("cost", "spend", "amount spent", "metrics.cost_micros"),
    "conversions": ("conversions", "conv.", "metrics.conversions"),
    "conversion_value": ("conv. value", "conversion value", "total conv. value", "conversions value",
                         "metrics.conversions_value", "conversionvalue"),
    "currency": ("currency code", "currency", "customer.currency_code"),
}
"""Canonical field → accepted header spellings (compared lower-cased, spaces collapsed)."""

REQUIRED: tuple[str, ...] = ("campaign", "day", "impressions", "clicks", "cost")
"""Columns a report must have; the others default (ad: the ad group or campaign, device and
network: "unknown", conversions and value: 0)."""

DEVICES: dict[str, str] = {
    "computers": "desktop", "computer": "desktop", "desktop": "desktop", "pc": "desktop",
    "mobile phones": "mobile", "mobile devices with full browsers": "mobile", "mobile": "mobile", "smartphone": "mobile",
    "tablets": "tablet", "tablets with full browsers": "tablet", "tablet": "tablet",
    "tv screens": "tv", "connected_tv": "tv", "connected tv": "tv", "smart tv": "tv",
    "other": "other", "unknown": "unknown", "unspecified": "unknown",
}
"""Report device → device category as GA4 writes it (desktop, mobile, tablet, tv, other)."""

NETWORK_GROUPS: dict[str, str] = {
    "google search": "Paid Search", "search network": "Paid Search", "search": "Paid Search",
    "search partners": "Paid Search", "search_partners": "Paid Search", "google search network": "Paid Search",
    "display network": "Display", "google display network": "Display", "display": "Display", "content": "Display",
    "youtube": "Paid Video", "youtube videos": "Paid Video", "youtube search": "Paid Video",
    "youtube_search": "Paid Video", "youtube_watch": "Paid Video", "video": "Paid Video",
    "cross-network": "Cross-network", "mixed": "Cross-network", "performance max": "Cross-network",
    "shopping": "Paid Shopping", "google shopping": "Paid Shopping",
    "facebook": "Paid Social", "instagram": "Paid Social", "audience network": "Paid Social",
    "messenger": "Paid Social", "social": "Paid Social",
}
"""Report network → GA4 channel group (unknown networks: "Paid Other")."""

_TOTAL = re.compile(r"\s*total\s*(:|$)", re.IGNORECASE)
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%b %d, %Y", "%d/%m/%Y", "%m/%d/%Y")


@dataclass(frozen=True)
class CampaignRow:
    """One report row (a campaign × ad group × ad × device × network × day)."""

    row: int
    """1-based line in the file."""
    day: dt.date
    campaign: str
    ad_group: str
    ad: str
    """The creative: ad id (or name); the ad group, then the campaign, when the report has no ad column."""
    device: str
    """Device category (:data:`DEVICES`), or the report's value lower-cased."""
    network: str
    """The report's network as written."""
    channel_group: str
    channel: str
    impressions: int
    clicks: int
    cost_micros: int
    conversions: float
    """Conversions may be fractional (data-driven attribution)."""
    conversion_value_micros: int
    currency: str


@dataclass
class CampaignBatch:
    """Everything read from one report."""

    origin: str
    rows: list[CampaignRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    totals: int = 0
    """"Total: ..." summary rows skipped."""
    columns: dict[str, str] = field(default_factory=dict)
    """Canonical field → the header it was read from."""


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", name.replace("\ufeff", "").strip().lower())


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


def _header_at(lines: list[list[str]]) -> int:
    """Index of the header: the first row naming every required column (title lines come before)."""
    for i, cells in enumerate(lines[:20]):
        names = {_norm(c) for c in cells}
        if all(any(v in names for v in COLUMNS[k]) for k in REQUIRED):
            return i
    return -1


def parse_report(data: bytes, origin: str, config: Ga4Config | None = None) -> CampaignBatch:
    """Parse one report.

    :param data: the file's bytes.
    :param origin: the file name (stored with every row and error).
    :param config: the channel-group → GAELP channel map (``[data.ga4]``).
    :raises DecodeError: the file is not text, or no header row names the required columns
        (the field names the first missing column).
    """
    try:
        text = _decode(data)
    except UnicodeDecodeError as exc:
        raise DecodeError(origin, f"not UTF-8 or UTF-16 text: {exc}") from exc
    first = text.split("\n", 30)[:30]
    delimiter = "\t" if sum(s.count("\t") for s in first) > sum(s.count(",") for s in first) else ","
    lines = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    at = _header_at(lines)
    if at < 0:
        names = {_norm(c) for row in lines[:20] for c in row}
        missing = next(k for k in REQUIRED if not any(v in names for v in COLUMNS[k]))
        raise DecodeError(f"{origin}: column {missing}",
                          f"no header row names it (accepted: {', '.join(repr(v) for v in COLUMNS[missing])})")
    header = [_norm(c) for c in lines[at]]
    batch = CampaignBatch(origin)
    index: dict[str, int] = {}
    for key, variants in COLUMNS.items():
        for v in variants:
            if v in header:
                index[key] = header.index(v)
                batch.columns[key] = lines[at][index[key]].strip()
                break
    groups = (config or Ga4Config()).channel_of_group
    micros_cost = batch.columns.get("cost", "").strip().lower() == "metrics.cost_micros"
    for lineno, cells in enumerate(lines[at + 1:], start=at + 2):
        if not any(c.strip() for c in cells):
            continue
        if cells and _TOTAL.match(cells[0]):
            batch.totals += 1
            continue
        try:
            batch.rows.append(_row(lineno, cells, index, groups, micros_cost))
        except _Bad as bad:
            batch.errors.append(RowError(origin, lineno, bad.field, bad.reason, delimiter.join(cells)[:200]))
    return batch


class _Bad(Exception):
    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason


def _row(lineno: int, cells: list[str], index: Mapping[str, int], groups: Mapping[str, str],
         micros_cost: bool) -> CampaignRow:
    if len(cells) < max(index.values()) + 1:
        raise _Bad("$", f"{len(cells)} cells, the header has at least {max(index.values()) + 1}")

    def cell(key: str) -> str:
        return cells[index[key]].strip() if key in index else ""

    campaign = cell("campaign")
    if not campaign:
        raise _Bad("campaign", "empty")
    day = _date(cell("day"))
    impressions = int(_number("impressions", cell("impressions"), integer=True))
    clicks = int(_number("clicks", cell("clicks"), integer=True))
    if clicks > impressions:
        raise _Bad("clicks", f"{clicks} clicks > {impressions} impressions")
    cost = _number("cost", cell("cost"))
    conversions = _number("conversions", cell("conversions") or "0")
    value = _number("conversion_value", cell("conversion_value") or "0")
    network = cell("network") or "unknown"
    group = NETWORK_GROUPS.get(network.lower(), "Paid Other" if network != "unknown" else "Unassigned")
    device = cell("device").lower() or "unknown"
    return CampaignRow(
        row=lineno, day=day, campaign=campaign, ad_group=cell("ad_group"),
        ad=cell("ad") or cell("ad_group") or campaign, device=DEVICES.get(device, device), network=network,
        channel_group=group, channel=groups.get(group) or snake(group), impressions=impressions, clicks=clicks,
        cost_micros=round(cost) if micros_cost else usd_to_micros(cost), conversions=conversions,
        conversion_value_micros=usd_to_micros(value), currency=cell("currency"))


def _number(name: str, raw: str, integer: bool = False) -> float:
    text = raw.replace(",", "").replace("\u00a0", "").strip()
    text = re.sub(r"^[$€£¥]|\s*[A-Z]{3}$", "", text)
    if not text:
        raise _Bad(name, "empty")
    if text == "--":  # Google Ads' empty metric
        return 0.0
    try:
        v = float(text)
    except ValueError:
        raise _Bad(name, f"not a number: {raw!r}") from None
    if not math.isfinite(v) or v < 0:
        raise _Bad(name, f"must be a finite number >= 0, got {raw!r}")
    if integer and v != int(v):
        raise _Bad(name, f"must be a whole number, got {raw!r}")
    return v


def _date(raw: str) -> dt.date:
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(raw, fmt).date()
        except ValueError:
            continue
    raise _Bad("day", f"not a date (YYYY-MM-DD): {raw!r}")
