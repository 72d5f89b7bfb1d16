"""The ingested GA4 tables as arrays: what every discovery step reads.

``load_observations`` reads ``ga4_sessions`` and ``ga4_conversions`` (written by ``gaelp ingest
ga4``) from a DuckDB file into one :class:`Observations`: sessions of the ad channels (organic,
paid search, social) with their person key, time, page context, device and whether they were
engaged (GA4's engaged session: the export's clicks), and the conversion events with value.

The person key of a row is its ``user_id`` when the person is logged in, else its
``user_pseudo_id`` (a device): GA4's own reporting identity. The data's end is the latest
event time ingested; everything after it is unknown (right-censoring), not absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from agent_service.errors import ConfigError
from agent_service.money import micros_to_usd

__all__ = ["AD_CHANNELS", "DEVICES", "Observations", "context_of", "load_observations"]

AD_CHANNELS: tuple[str, ...] = ("organic", "paid_search", "social")
"""GAELP channels, in the order of ``agent_service.config.CHANNELS`` (ids 0, 1, 2)."""
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet", "smart tv")
"""GA4 device categories discovery distinguishes (others count as the last)."""
_IAB = re.compile(r"^iab\d+(-\d+)?$", re.IGNORECASE)


def context_of(landing_page: str | None) -> str:
    """A session's page context: the landing page's host label and first path segment.

    An IAB code in the host (``https://iab5.example/``, the simulator's export) reads back as
    ``IAB5``; other pages keep ``host/first-segment``.

    :param landing_page: the session's landing page URL (query string removed by ingestion).
    """
    if not landing_page:
        return "(none)"
    rest = landing_page.split("://", 1)[-1]
    host, _, path = rest.partition("/")
    label = host.split(".", 1)[0]
    if _IAB.match(label):
        return label.upper()
    first = path.split("/", 1)[0]
    return f"{host}/{first}" if first else host


@dataclass(frozen=True)
class Observations:
    """Sessions and conversions as flat arrays (one row each)."""

    unit_names: list[str]
    """Person key per unit id (user_id if logged in, else user_pseudo_id)."""
    contexts: list[str]
    """Context names; session ``context`` indexes this list."""
    s_unit: np.ndarray
    """int64 unit of each ad session."""
    s_pseudo: np.ndarray
    """int64 device (user_pseudo_id) id of each ad session."""
    s_logged: np.ndarray
    """bool: the session carried a user_id."""
    s_time: np.ndarray
    """int64 session start, ms."""
    s_channel: np.ndarray
    """int8 channel id (``AD_CHANNELS``)."""
    s_device: np.ndarray
    """int8 device category id (``DEVICES``)."""
    s_context: np.ndarray
    """int32 context id."""
    s_click: np.ndarray
    """bool: engaged session (the ad was clicked)."""
    c_unit: np.ndarray
    """int64 unit of each conversion."""
    c_time: np.ndarray
    """int64 conversion event time, ms."""
    c_value: np.ndarray
    """float64 conversion value, USD (NaN when the event had none)."""
    pseudo_user: dict[str, str]
    """user_pseudo_id → user_id for every logged-in device."""
    pseudo_device: dict[str, str]
    """user_pseudo_id → device category of its first session."""
    start_ms: int
    """Earliest session start."""
    end_ms: int
    """Latest event: the censoring time of everything still in flight."""

    @property
    def n_units(self) -> int:
        return len(self.unit_names)


def load_observations(path: str | Path) -> Observations:
    """Read the GA4 tables of a warehouse written by ``gaelp ingest ga4``.

    :param path: the DuckDB file.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError("warehouse", f"{p} does not exist (write it with `gaelp ingest ga4 ... --warehouse {p}`)")
    con = duckdb.connect(str(p), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for t in ("ga4_sessions", "ga4_conversions"):
            if t not in tables:
                raise ConfigError("warehouse", f"{p} has no {t} table: ingest a GA4 export into it first")
        sess = con.execute(
            "SELECT user_pseudo_id, user_id, start_ms, end_ms, channel, coalesce(device_category, ''), "
            "landing_page, engaged OR page_views >= 2 FROM ga4_sessions").fetchall()
        conv = con.execute(
            "SELECT user_pseudo_id, user_id, event_time, coalesce(value_usd_micros, value_micros) "
            "FROM ga4_conversions").fetchall()
    finally:
        con.close()
    if not sess:
        raise ConfigError("warehouse", f"{p}: ga4_sessions is empty")
    units: dict[str, int] = {}
    pseudos: dict[str, int] = {}
    contexts: dict[str, int] = {}
    pseudo_user: dict[str, str] = {}
    pseudo_device: dict[str, str] = {}
    chan_id = {c: i for i, c in enumerate(AD_CHANNELS)}
    dev_id = {d: i for i, d in enumerate(DEVICES)}
    rows = []
    end = 0
    for pseudo, user, t0, t1, channel, device, landing, click in sess:
        end = max(end, t1)
        if user:
            pseudo_user.setdefault(pseudo, user)
        pseudo_device.setdefault(pseudo, device)
        ch = chan_id.get(channel)
        if ch is None:
            continue  # direct and other groups: not an ad touch
        u = units.setdefault(user or pseudo, len(units))
        d = pseudos.setdefault(pseudo, len(pseudos))
        c = contexts.setdefault(context_of(landing), len(contexts))
        rows.append((u, d, bool(user), t0, ch, dev_id.get(device.lower(), len(DEVICES) - 1), c, bool(click)))
    if not rows:
        raise ConfigError("warehouse", f"{p}: no session of an ad channel ({', '.join(AD_CHANNELS)})")
    cols = list(zip(*rows, strict=True))
    c_rows = []
    for pseudo, user, t, value in conv:
        end = max(end, t)
        key = user or pseudo_user.get(pseudo) or pseudo
        u = units.setdefault(key, len(units))
        c_rows.append((u, t, micros_to_usd(value) if value is not None else np.nan))
    cc = list(zip(*c_rows, strict=True)) if c_rows else [(), (), ()]
    return Observations(
        unit_names=list(units), contexts=list(contexts),
        s_unit=np.array(cols[0], np.int64), s_pseudo=np.array(cols[1], np.int64), s_logged=np.array(cols[2], bool),
        s_time=np.array(cols[3], np.int64), s_channel=np.array(cols[4], np.int8),
        s_device=np.array(cols[5], np.int8), s_context=np.array(cols[6], np.int32),
        s_click=np.array(cols[7], bool),
        c_unit=np.array(cc[0], np.int64), c_time=np.array(cc[1], np.int64), c_value=np.array(cc[2], np.float64),
        pseudo_user=pseudo_user, pseudo_device=pseudo_device,
        start_ms=int(min(cols[3])), end_ms=int(end))
