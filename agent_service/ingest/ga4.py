"""GA4 export rows → sessions, touches and conversions (pure: no DuckDB, no BigQuery).

One :class:`Ga4Builder` reads the rows of one source (a file or a table), given either as raw
JSON bytes (:meth:`~Ga4Builder.add_json`) or as an already-parsed mapping (Parquet, the
BigQuery API: :meth:`~Ga4Builder.add_mapping`), and :meth:`~Ga4Builder.finish` returns a
:class:`Ga4Batch`:

- **sessions**: one per (user_pseudo_id, ga_session_id) seen in the source: start/end, events,
  page views (depth), engagement, landing page, device and geo of the first event, and the
  session's source/medium/campaign with its GA4 channel group and GAELP channel
  (``Ga4Config.session_source`` says which export fields count). A session cut by a file
  boundary (midnight) yields one part per file; the warehouse view merges them.
- **touches**: one per session, at its start, with its channel (direct sessions included,
  channel ``direct`` by default): the journey's steps.
- **conversions**: each event named in ``Ga4Config.conversion_events``, with its value
  (``ecommerce.purchase_revenue``, else the ``value`` param), currency, value in USD and
  transaction id.

A row that cannot be an event (invalid JSON, a missing or null ``event_timestamp``,
``event_name`` or ``user_pseudo_id``, a wrong type anywhere in the fields read, a timestamp that
is not microseconds since 2000..2100) becomes a :class:`RowError` with its row number and field
path; the rest is ingested. Exact duplicate rows (GA4 exports carry some) are counted and
ingested once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from agent_service.config.data import Ga4Config
from agent_service.ingest.channels import ChannelMapper
from agent_service.ingest.ga4_schema import Event, Param, ParamValue
from agent_service.money import usd_to_micros

__all__ = ["Ga4Batch", "Ga4Builder", "Ga4Conversion", "IngestStats", "RowError", "Session", "SessionTouch"]

_MIN_US, _MAX_US = 946_684_800_000_000, 4_102_444_800_000_000  # 2000-01-01 .. 2100-01-01
_EXCERPT = 200
_KIND_RANK = {"last_click": 0, "gclid": 1, "collected": 1, "event_params": 1, "first_user": 2, "none": 3}
_MISSING = re.compile(r"Object missing required field `([^`]+)`(?: - at `([^`]+)`)?")
_AT = re.compile(r"(.*) - at `([^`]+)`$")
_DECODER = msgspec.json.Decoder(Event, strict=False)


@dataclass(frozen=True)
class RowError:
    """A row that was not ingested, and why."""

    origin: str
    """File or table it came from."""
    row: int
    """1-based row: line of an NDJSON file, element of a JSON array, row of Parquet or a table."""
    field: str
    """JSON path of the offending field (``$`` for the whole row)."""
    reason: str
    """What is wrong."""
    excerpt: str = ""
    """Start of the row as read."""


@dataclass(frozen=True)
class Session:
    """One session (or the part of it in one source)."""

    user_pseudo_id: str
    ga_session_id: int
    session_number: int | None
    user_id: str | None
    start_ms: int
    end_ms: int
    events: int
    page_views: int
    engaged: bool
    engagement_ms: int
    landing_page: str | None
    device_category: str | None
    operating_system: str | None
    browser: str | None
    country: str | None
    region: str | None
    source: str
    medium: str
    campaign: str
    source_kind: str
    """Where the source came from: last_click, gclid, collected, event_params, first_user or none."""
    channel_group: str
    channel: str
    conversions: int
    conversion_value_micros: int
    """Sum of the conversions' values in their own currency, micros."""


@dataclass(frozen=True)
class SessionTouch:
    """A session's arrival through a channel."""

    user_pseudo_id: str
    user_id: str | None
    ga_session_id: int
    event_time: int
    """Session start, ms since the epoch."""
    source: str
    medium: str
    campaign: str
    channel_group: str
    channel: str
    device_category: str | None
    country: str | None


@dataclass(frozen=True)
class Ga4Conversion:
    """A conversion event."""

    conversion_id: str
    """Stable id: hash of user, timestamp, name and the row's content."""
    user_pseudo_id: str
    user_id: str | None
    ga_session_id: int | None
    event_time: int
    """ms since the epoch."""
    event_name: str
    value_micros: int | None
    currency: str | None
    value_usd_micros: int | None
    transaction_id: str | None
    items: int


@dataclass
class IngestStats:
    """Counts of one source."""

    rows: int = 0
    """Rows read (events, errors and duplicates)."""
    events: int = 0
    """Rows ingested as events."""
    duplicates: int = 0
    """Exact copies of an earlier row of the same source, ingested once."""
    without_session: int = 0
    """Events with no ga_session_id param (counted, in no session; conversions still kept)."""


@dataclass
class Ga4Batch:
    """Everything read from one source."""

    origin: str
    """File or table read."""
    sessions: list[Session]
    conversions: list[Ga4Conversion]
    errors: list[RowError]
    stats: IngestStats

    @property
    def touches(self) -> list[SessionTouch]:
        """One touch per session, at its start."""
        return [SessionTouch(s.user_pseudo_id, s.user_id, s.ga_session_id, s.start_ms, s.source, s.medium, s.campaign,
                             s.channel_group, s.channel, s.device_category, s.country) for s in self.sessions]


@dataclass(slots=True)
class _Part:
    start_us: int
    end_us: int = 0
    events: int = 0
    page_views: int = 0
    engaged: bool = False
    engagement_ms: int = 0
    session_number: int | None = None
    user_id: str | None = None
    first_touch_us: int | None = None
    landing: tuple[int, str] | None = None
    first: Event | None = None
    src: tuple[int, int, str, str, str, str] | None = None  # (rank, ts, kind, source, medium, campaign)
    user_src: tuple[str, str, str] | None = None
    conversions: int = 0
    value_micros: int = 0


@dataclass(slots=True)
class _Params:
    """The params few events carry (traffic source, conversion value); made only when one is there."""

    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    value: float | None = None
    currency: str | None = None
    transaction_id: str | None = None


class Ga4Builder:
    """Accumulates the rows of one source.

    :param origin: name of the file or table (carried by every error and, in the warehouse, every row).
    :param config: GA4 settings (conversion events, channel rules).
    :param mapper: a shared :class:`ChannelMapper` (one is built from ``config`` when None).
    """

    def __init__(self, origin: str, config: Ga4Config | None = None, mapper: ChannelMapper | None = None) -> None:
        self.origin = origin
        self.config = config or Ga4Config()
        self.mapper = mapper or ChannelMapper(self.config)
        self.stats = IngestStats()
        self.errors: list[RowError] = []
        self._conv_names = frozenset(self.config.conversion_events)
        self._pv_names = frozenset(self.config.page_view_events)
        self._last_click = self.config.session_source == "last_click"
        self._seen: set[int] = set()
        self._parts: dict[tuple[str, int], _Part] = {}
        self._conversions: list[Ga4Conversion] = []

    # -- input ---------------------------------------------------------------------------
    def add_json(self, row: int, raw: bytes) -> None:
        """One row as JSON text (an NDJSON line, an element of a JSON array)."""
        self._take(row, raw, lambda: _DECODER.decode(raw))

    def add_mapping(self, row: int, data: Mapping[str, Any]) -> None:
        """One row already parsed (Parquet via DuckDB, the BigQuery API): nested records as
        mappings, repeated fields as lists."""
        raw = msgspec.json.encode(data, enc_hook=str)
        self._take(row, raw, lambda: msgspec.convert(data, Event, strict=False))

    def _take(self, row: int, raw: bytes, parse: Callable[[], Event]) -> None:
        """Count the row, skip an exact duplicate, else parse it (a bad row is an error) and add it."""
        self.stats.rows += 1
        digest = hash(raw)
        if digest in self._seen:
            self.stats.duplicates += 1
            return
        try:
            event = parse()
        except msgspec.DecodeError as exc:  # msgspec.ValidationError (convert) is a DecodeError
            self._error(row, *_field_of(str(exc)), raw)
            return
        self._seen.add(digest)
        self._add(row, event, raw)

    def add_error(self, row: int, field: str, reason: str, raw: bytes = b"") -> None:
        """A row the reader could not even split out (counted as read)."""
        self.stats.rows += 1
        self._error(row, field, reason, raw)

    def _error(self, row: int, field: str, reason: str, raw: bytes) -> None:
        excerpt = raw[:_EXCERPT].decode("utf-8", "replace")
        self.errors.append(RowError(self.origin, row, field, reason, excerpt))

    # -- one event -----------------------------------------------------------------------
    def _add(self, row: int, e: Event, raw: bytes) -> None:
        ts = e.event_timestamp
        if not _MIN_US <= ts < _MAX_US:
            self._error(row, "$.event_timestamp", f"{ts} is not microseconds since the epoch (2000..2100)", raw)
            return
        if not e.event_name or not e.user_pseudo_id:
            self._error(row, "$.event_name" if not e.event_name else "$.user_pseudo_id", "is empty", raw)
            return
        params = e.event_params
        sid, number, loc, eng_ms, engaged, rare = _scan(params) if params else _NOTHING
        p = _rare(params) if rare and params else _NO_PARAMS
        self.stats.events += 1
        is_conv = e.event_name in self._conv_names
        conv_value: int | None = None
        if is_conv:
            conv = _conversion(e, sid, p, raw)
            self._conversions.append(conv)
            conv_value = conv.value_micros
        if sid is None:
            self.stats.without_session += 1
            return
        key = (e.user_pseudo_id, sid)
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = _Part(start_us=ts, end_us=ts, first=e)
        elif ts < part.start_us:
            part.start_us, part.first = ts, e
        if ts > part.end_us:
            part.end_us = ts
        part.events += 1
        if engaged:
            part.engaged = True
        part.engagement_ms += eng_ms
        if number is not None:
            part.session_number = number
        if e.user_id:
            part.user_id = e.user_id
        if e.user_first_touch_timestamp is not None:
            part.first_touch_us = e.user_first_touch_timestamp
        if e.event_name in self._pv_names:
            part.page_views += 1
            if loc and (part.landing is None or ts < part.landing[0]):
                part.landing = (ts, loc.split("?", 1)[0].split("#", 1)[0])
        if is_conv:
            part.conversions += 1
            part.value_micros += conv_value or 0
        if (rare or e.collected_traffic_source is not None or e.session_traffic_source_last_click is not None
                or (loc is not None and "clid=" in loc)):
            cand = self._source_of(e, loc, p)
            if cand is not None and (part.src is None or (cand[0], ts) < part.src[:2]):
                part.src = (cand[0], ts, *cand[1:])
        if e.traffic_source is not None and part.user_src is None:
            t = e.traffic_source
            part.user_src = (t.source or "", t.medium or "", t.name or "")

    def _source_of(self, e: Event, loc: str | None, p: _Params) -> tuple[int, str, str, str, str] | None:
        """(rank, kind, source, medium, campaign) this event reveals about its session, if any."""
        if self._last_click and e.session_traffic_source_last_click is not None:
            lc = e.session_traffic_source_last_click
            mc = lc.cross_channel_campaign or lc.manual_campaign
            if mc is not None and (mc.source or mc.medium):
                return (_KIND_RANK["last_click"], "last_click", mc.source or "", mc.medium or "",
                        mc.campaign_name or "")
        c = e.collected_traffic_source
        campaign = (c.manual_campaign_name if c is not None else None) or p.campaign or ""
        if (c is not None and c.gclid) or (loc is not None and _has_click_id(loc)):
            return _KIND_RANK["gclid"], "gclid", "google", "cpc", campaign  # Google Ads auto-tagging
        if c is not None and (c.manual_source or c.manual_medium):
            return _KIND_RANK["collected"], "collected", c.manual_source or "", c.manual_medium or "", campaign
        if p.source or p.medium:
            return _KIND_RANK["event_params"], "event_params", p.source or "", p.medium or "", campaign
        return None

    # -- output --------------------------------------------------------------------------
    def finish(self) -> Ga4Batch:
        """The sessions, conversions and errors of the source."""
        sessions = [self._session(key, part) for key, part in self._parts.items()]
        return Ga4Batch(self.origin, sessions, self._conversions, self.errors, self.stats)

    def _session(self, key: tuple[str, int], part: _Part) -> Session:
        src = part.src
        if src is None and part.user_src is not None and _first_session(part):
            src = (2, part.start_us, "first_user", *part.user_src)
        if src is None:
            kind, source, medium, campaign = "none", "(direct)", "(none)", "(direct)"
        else:
            kind, source, medium, campaign = src[2:]
        mapped = self.mapper.map(source, medium, campaign)
        first = part.first
        dev = first.device if first is not None else None
        geo = first.geo if first is not None else None
        browser = (dev.browser or (dev.web_info.browser if dev.web_info else None)) if dev else None
        return Session(
            key[0], key[1], part.session_number, part.user_id, part.start_us // 1000, part.end_us // 1000,
            part.events, part.page_views, part.engaged, part.engagement_ms,
            part.landing[1] if part.landing else None,
            dev.category if dev else None, dev.operating_system if dev else None, browser,
            geo.country if geo else None, geo.region if geo else None,
            source or "(direct)", medium or "(none)", campaign or "(not set)", kind, mapped.group, mapped.channel,
            part.conversions, part.value_micros)


def _first_session(part: _Part) -> bool:
    """The user's first session, whose source is the user's first-touch ``traffic_source``."""
    if part.session_number is not None:
        return part.session_number == 1
    return part.first_touch_us is not None and part.start_us - 1_000_000 <= part.first_touch_us <= part.end_us


def _has_click_id(url: str) -> bool:
    return "gclid=" in url or "gbraid=" in url or "wbraid=" in url


_NOTHING: tuple[None, None, None, int, bool, bool] = (None, None, None, 0, False, False)
_NO_PARAMS = _Params()  # shared, never written
_RARE = frozenset({"source", "medium", "campaign", "value", "currency", "transaction_id"})


def _value(v: ParamValue | None) -> Any:
    if v is None:
        return None
    if v.string_value is not None:
        return v.string_value
    if v.int_value is not None:
        return v.int_value
    return v.double_value if v.double_value is not None else v.float_value


def _scan(params: list[Param]) -> tuple[int | None, int | None, str | None, int, bool, bool]:
    """(ga_session_id, ga_session_number, page_location, engagement_time_msec, session_engaged, whether a
    rarer param is there). The hot loop: ~10 params an event, most skipped by a length-first compare."""
    sid = number = None
    loc = None
    eng = 0
    engaged = rare = False
    for prm in params:
        k = prm.key
        if k == "ga_session_id":
            v = prm.value
            x = v.int_value if v is not None else None
            sid = x if x is not None else _as_int(_value(v))
        elif k == "ga_session_number":
            v = prm.value
            x = v.int_value if v is not None else None
            number = x if x is not None else _as_int(_value(v))
        elif k == "page_location":
            x = _value(prm.value)
            loc = None if x is None else str(x)
        elif k == "engagement_time_msec":
            v = prm.value
            x = v.int_value if v is not None else None
            eng += x if x is not None else (_as_int(_value(v)) or 0)
        elif k == "session_engaged":
            x = _value(prm.value)
            engaged = engaged or x == "1" or x == 1
        elif k in _RARE:
            rare = True
    return sid, number, loc, eng, engaged, rare


def _rare(params: list[Param]) -> _Params:
    out = _Params()
    for prm in params:
        k = prm.key
        if k in _RARE:
            x = _value(prm.value)
            if x is None:
                continue
            if k == "value":
                out.value = _as_float(x)
            else:
                setattr(out, k, str(x))
    return out


def _as_int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _as_float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _micros(x: float | None) -> int | None:
    return None if x is None else usd_to_micros(x)


def _conversion(e: Event, session_id: int | None, p: _Params, raw: bytes) -> Ga4Conversion:
    ec = e.ecommerce
    value = ec.purchase_revenue if ec is not None and ec.purchase_revenue is not None else p.value
    usd = ec.purchase_revenue_in_usd if ec is not None and ec.purchase_revenue_in_usd is not None else None
    if usd is None:
        usd = e.event_value_in_usd
    tid = (ec.transaction_id if ec is not None else None) or p.transaction_id
    h = hashlib.blake2b(digest_size=12)
    for part in (e.user_pseudo_id.encode(), str(e.event_timestamp).encode(), e.event_name.encode(), raw):
        h.update(part)
        h.update(b"\x00")
    return Ga4Conversion(h.hexdigest(), e.user_pseudo_id, e.user_id or None, session_id, e.event_timestamp // 1000,
                      e.event_name, _micros(value), p.currency, _micros(usd), tid, len(e.items or ()))


def _field_of(message: str) -> tuple[str, str]:
    """(field path, reason) from a msgspec error message."""
    m = _MISSING.match(message)
    if m:
        where = m.group(2) or "$"
        return f"{where}.{m.group(1)}", "missing (required)"
    m = _AT.match(message)
    if m:
        return m.group(2), m.group(1)
    if message.startswith("Expected `object`"):
        return "$", f"a row must be a JSON object: {message}"
    return "$", f"invalid JSON: {message}"
