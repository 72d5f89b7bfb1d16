"""The simulated world's traffic as a GA4 BigQuery export (``events_YYYYMMDD.json``, NDJSON as
``bq extract`` writes it), for ``gaelp ingest ga4`` and the discovery round trip.

What is written is only what a GA4 property would record; no ground truth (segment, stage,
journey interest, the causing touch of a conversion) appears in any field:

- an **impression** is a session on its device: ``session_start`` and ``page_view`` of the page
  it was shown on (``https://<iab category>.example/``, the bid request's site), with the
  channel as ``collected_traffic_source`` (organic: google / organic, paid search: google /
  cpc, social: facebook / paid_social), as a site-side tag (a view-through pixel) records it;
- a **click** adds ``ad_click`` and the ``page_view`` of the advertiser's landing page in the
  same session (two page views, ``session_engaged`` = 1: GA4's engaged session);
- a **conversion** is a ``purchase`` in a new direct session on the device it happens on, at its
  event time, with ``ecommerce.purchase_revenue`` (USD) and a transaction id; conversions after
  the export's end are not in it (they have not happened yet: right-censoring).

Every event carries ``user_pseudo_id`` (a salted hash of the device, GA4's cookie id),
``user_id`` (a salted hash of the person) when the person is logged in on that device,
``device.category`` (AdCOM type 4 → mobile, 2 → desktop, 5 → tablet, 1 → mobile, else smart
tv), ``event_timestamp`` in microseconds, ``ga_session_id`` (session start, unix seconds, unique
per device) and ``ga_session_number``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from agent_service.money import micros_to_usd
from agent_service.units import DAY_MS, DAY_S
from simulators.batches import Actions, WorldOpportunities, WorldOutcomes
from simulators.calibration.schema import Calibration
from simulators.population import Population
from simulators.traffic_log import LoggedSlot, logged_traffic

__all__ = ["CHANNEL_SOURCES", "DEVICE_CATEGORIES", "ExportSummary", "Ga4Exporter", "export_slots", "export_world"]

CHANNEL_SOURCES: tuple[tuple[str, str], ...] = (("google", "organic"), ("google", "cpc"), ("facebook", "paid_social"))
"""(source, medium) per channel id (organic, paid search, social): GA4's default grouping maps them back."""
DEVICE_CATEGORIES: dict[int, str] = {1: "mobile", 2: "desktop", 3: "smart tv", 4: "mobile", 5: "tablet",
                                     6: "smart tv", 7: "smart tv"}
"""AdCOM device type → GA4 ``device.category``."""
_LANDING = "https://shop.example/landing"


@dataclass
class ExportSummary:
    """What was written."""

    files: list[str] = field(default_factory=list)
    events: int = 0
    sessions: int = 0
    clicks: int = 0
    conversions: int = 0
    censored_conversions: int = 0
    """Conversions decided during the export whose event time falls after its end (not written)."""
    seconds: float = 0.0

    def to_json_obj(self) -> dict[str, Any]:
        return {"files": len(self.files), "events": self.events, "sessions": self.sessions, "clicks": self.clicks,
                "conversions": self.conversions, "censored_conversions": self.censored_conversions,
                "seconds": round(self.seconds, 3)}


def _hash(salt: bytes, text: str, digits: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), key=salt, digest_size=8).digest(), "big") % 10**digits


class Ga4Exporter:
    """Writes sessions and purchases into one NDJSON file per UTC day.

    :param out_dir: directory of the ``events_YYYYMMDD.json`` files (created).
    :param pop: the world's people and devices (ids and device types only are read).
    :param categories: the calibration's page categories (the pages ads are shown on).
    :param end_ms: the export's end: later events are not written.
    :param seed: salt of the pseudonymous ids.
    """

    def __init__(self, out_dir: Path, pop: Population, categories: Iterable[str], end_ms: int, seed: int) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.end_ms = end_ms
        salt = f"gaelp-ga4-{seed}".encode()
        n_dev = pop.dev_person.size
        self._pseudo = [f"{_hash(salt, pop.device_id(d), 10)}.{1_700_000_000 + _hash(salt, str(d), 7)}"
                        for d in range(n_dev)]
        self._user = [f'"u{_hash(salt, pop.user_id(int(pop.dev_person[d])), 15):015d}"' if pop.dev_logged[d]
                      else "null" for d in range(n_dev)]
        self._device = [_device_json(int(t)) for t in pop.dev_type]
        self._last_sid = np.zeros(n_dev, dtype=np.int64)
        self._session_no = np.zeros(n_dev, dtype=np.int64)
        self._pages = [f"https://{c.lower()}.example/" for c in categories]
        self._files: dict[int, IO[str]] = {}
        self.summary = ExportSummary()
        self._conv_seq = 0

    # --- rows -----------------------------------------------------------------------------------
    def _file(self, t_ms: int) -> IO[str]:
        day = t_ms // DAY_MS
        f = self._files.get(day)
        if f is None:
            name = time.strftime("events_%Y%m%d.json", time.gmtime(day * DAY_S))
            path = self.out_dir / name
            f = self._files[day] = path.open("w")
            self.summary.files.append(str(path))
        return f

    def _session(self, dev: int, t_ms: int) -> tuple[int, int]:
        sid = max(t_ms // 1000, int(self._last_sid[dev]) + 1)
        self._last_sid[dev] = sid
        self._session_no[dev] += 1
        self.summary.sessions += 1
        return sid, int(self._session_no[dev])

    def _row(self, t_ms: int, dev: int, name: str, params: str, extra: str = "") -> str:
        date = time.strftime("%Y%m%d", time.gmtime(t_ms // 1000))
        self.summary.events += 1
        return (f'{{"event_date":"{date}","event_timestamp":"{t_ms * 1000}","event_name":"{name}",'
                f'"event_params":[{params}],"user_id":{self._user[dev]},"user_pseudo_id":"{self._pseudo[dev]}",'
                f'{self._device[dev]},"geo":{{"country":"United States"}}{extra}}}\n')

    # --- batches --------------------------------------------------------------------------------
    def add(self, opps: WorldOpportunities, acts: Actions, out: WorldOutcomes) -> None:
        """Write the slot's impressions, clicks and the conversions they cause (if before the end).

        :param opps: the slot's opportunities.
        :param acts: the actions taken on them.
        :param out: their outcomes.
        """
        for k in np.flatnonzero(out.won):
            t, dev, ch = int(opps.t[k]), int(opps.device[k]), int(acts.channel[k])
            if t >= self.end_ms:
                continue
            sid, num = self._session(dev, t)
            src, med = CHANNEL_SOURCES[ch]
            base = (f'{_p_int("ga_session_id", sid)},{_p_int("ga_session_number", num)}')
            traffic = (f',"collected_traffic_source":{{"manual_source":"{src}","manual_medium":"{med}",'
                       f'"manual_campaign_name":"gaelp"}}')
            page = self._pages[int(opps.category[k])]
            f = self._file(t)
            f.write(self._row(t, dev, "session_start", f'{base},{_p_str("page_location", page)}', traffic))
            f.write(self._row(t, dev, "page_view", f'{base},{_p_str("page_location", page)}', traffic))
            if out.click[k]:
                self.summary.clicks += 1
                engaged = f'{base},{_p_str("session_engaged", "1")},{_p_int("engagement_time_msec", 1000)}'
                f.write(self._row(t + 1_000, dev, "ad_click", engaged, traffic))
                f.write(self._row(t + 1_050, dev, "page_view", f'{engaged},{_p_str("page_location", _LANDING)}',
                                  traffic))
            if out.conv[k]:
                self._purchase(int(out.conv_device[k]), int(out.conv_time[k]), int(out.conv_value[k]))

    def _purchase(self, dev: int, t: int, value_micros: int) -> None:
        if t >= self.end_ms:
            self.summary.censored_conversions += 1
            return
        sid, num = self._session(dev, t)
        self._conv_seq += 1
        self.summary.conversions += 1
        usd = micros_to_usd(value_micros)
        tid = f"T{self._conv_seq:08d}-{self._pseudo[dev][:6]}"
        base = f'{_p_int("ga_session_id", sid)},{_p_int("ga_session_number", num)}'
        f = self._file(t)
        f.write(self._row(t, dev, "session_start", f'{base},{_p_str("page_location", _LANDING)}'))
        params = f'{base},{_p_dbl("value", usd)},{_p_str("currency", "USD")},{_p_str("transaction_id", tid)}'
        f.write(self._row(t + 500, dev, "purchase", params,
                          f',"ecommerce":{{"purchase_revenue":{usd!r},"purchase_revenue_in_usd":{usd!r},'
                          f'"transaction_id":"{tid}","total_item_quantity":"1"}}'))

    def close(self) -> ExportSummary:
        """Close the files and return what was written."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        return self.summary


def export_slots(slots: Iterable[LoggedSlot], exporter: Ga4Exporter) -> ExportSummary:
    """Write every slot of a logged run, then close the exporter.

    :param slots: from :func:`simulators.traffic_log.logged_traffic`.
    :param exporter: where they go.
    """
    started = time.perf_counter()
    for s in slots:
        exporter.add(s.opps, s.actions, s.out)
    summary = exporter.close()
    summary.seconds = time.perf_counter() - started
    return summary


def export_world(cal: Calibration, out_dir: Path, persons: int, opportunities_per_day: float, days: float,
                 seed: int, observe: Callable[[LoggedSlot], None] | None = None) -> ExportSummary:
    """Run the world under the logging policy (``simulators.traffic_log``) and export ``days`` of it.

    :param cal: the generating calibration.
    :param out_dir: directory of the export files.
    :param persons: people in the world.
    :param opportunities_per_day: expected opportunities per day.
    :param days: days of traffic; the export ends with them (later conversions are censored).
    :param seed: seed of the world and of the ids' salt.
    :param observe: called with every slot before it is written (evaluation code reads the truth here).
    """
    engine, slots = logged_traffic(cal, persons, opportunities_per_day, days, seed)
    exporter = Ga4Exporter(out_dir, engine.pop, cal.traffic.categories, engine.cfg.start_ms + int(days * DAY_MS), seed)

    def watched() -> Iterable[LoggedSlot]:
        for s in slots:
            if observe is not None:
                observe(s)
            yield s

    return export_slots(watched(), exporter)


def _device_json(devtype: int) -> str:
    return f'"device":{{"category":"{DEVICE_CATEGORIES.get(devtype, "smart tv")}"}}'


def _p_int(key: str, v: int) -> str:
    return f'{{"key":"{key}","value":{{"int_value":"{v}"}}}}'


def _p_str(key: str, v: str) -> str:
    return f'{{"key":"{key}","value":{{"string_value":"{v}"}}}}'


def _p_dbl(key: str, v: float) -> str:
    return f'{{"key":"{key}","value":{{"double_value":{v!r}}}}}'
