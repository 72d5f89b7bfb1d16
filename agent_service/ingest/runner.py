"""``gaelp ingest ga4``'s loop: each origin (a file, a table) read into a builder, written to the
store in one transaction, with a progress bar, and the counts gathered into an :class:`IngestReport`."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agent_service.config import GaelpConfig
from agent_service.ingest.channels import ChannelMapper
from agent_service.ingest.ga4 import Ga4Batch, Ga4Builder, RowError
from agent_service.ingest.sources import expand, is_table, read_file, size_hint
from agent_service.ingest.store import Ga4Store
from agent_service.money import micros_to_usd

__all__ = ["IngestReport", "OriginReport", "ingest_ga4"]


@dataclass(frozen=True)
class OriginReport:
    """Counts of one origin."""

    origin: str
    rows: int
    events: int
    duplicates: int
    without_session: int
    errors: int
    sessions: int
    touches: int
    conversions: int
    conversion_value_usd: float


@dataclass
class IngestReport:
    """What one ``gaelp ingest ga4`` run did."""

    origins: list[OriginReport] = field(default_factory=list)
    errors_by_field: Counter[str] = field(default_factory=Counter)
    first_errors: list[RowError] = field(default_factory=list)
    channels: Counter[str] = field(default_factory=Counter)
    """Sessions per GAELP channel, over this run's origins."""
    seconds: float = 0.0
    warehouse: dict[str, int] = field(default_factory=dict)
    """Rows of each ga4_* table and view after the run (all origins ever ingested)."""

    def total(self, name: str) -> int | float:
        """Sum of one :class:`OriginReport` count over the origins."""
        return sum(getattr(o, name) for o in self.origins)

    def to_json_obj(self) -> dict[str, Any]:
        """The summary as one JSON-ready object."""
        events = self.total("events")
        keys = ("rows", "events", "duplicates", "without_session", "errors", "sessions", "touches", "conversions")
        out: dict[str, Any] = {"origins": len(self.origins)}
        out.update({k: self.total(k) for k in keys})
        out["conversion_value_usd"] = round(float(self.total("conversion_value_usd")), 6)
        out["errors_by_field"] = dict(self.errors_by_field.most_common())
        out["channels"] = dict(self.channels.most_common())
        out["seconds"] = round(self.seconds, 3)
        out["events_per_s"] = round(events / self.seconds, 1) if self.seconds > 0 else None
        out["warehouse"] = self.warehouse
        return out


def ingest_ga4(targets: Sequence[str], store: Ga4Store, config: GaelpConfig, *, progress: bool = False,
               keep_errors: int = 20) -> IngestReport:
    """Ingest every origin the targets name into ``store``.

    :param targets: files, directories (their export files) or BigQuery tables (``bq:...``).
    :param store: the DuckDB tables.
    :param config: ``data.ga4`` (mapping, conversion events) and ``warehouse`` (BigQuery client).
    :param progress: show a progress bar per origin on stderr.
    :param keep_errors: how many row errors to keep as examples in the report.
    """
    ga4 = config.data.ga4
    mapper = ChannelMapper(ga4)
    report = IngestReport()
    t0 = time.perf_counter()
    client = None
    try:
        for target in targets:
            if is_table(target):
                from agent_service.ingest import bigquery_source as bq  # google-cloud only when needed

                if client is None:
                    client = bq.client_for(config.warehouse)
                for table_id in bq.resolve_tables(client, target):
                    table = bq.open_table(client, table_id)
                    builder = Ga4Builder(f"{bq.PREFIX}{table_id}", ga4, mapper)
                    with _bar(progress, table_id, table.num_rows, "rows") as bar:
                        bq.read_table(client, table, builder, bar.update)
                    _write(builder.finish(), store, report, keep_errors)
                continue
            for path in expand(Path(target)):
                builder = Ga4Builder(str(path.resolve()), ga4, mapper)
                total, unit = size_hint(path)
                with _bar(progress, path.name, total, unit) as bar:
                    read_file(path, builder, bar.update)
                _write(builder.finish(), store, report, keep_errors)
    finally:
        if client is not None:
            client.close()
    report.seconds = time.perf_counter() - t0
    report.warehouse = {t: store.count(t) for t in ("ga4_sessions", "ga4_touches", "ga4_conversions",
                                                     "ga4_ingest_errors", "ga4_ingests")}
    return report


def _bar(enabled: bool, desc: str, total: int | None, unit: str) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled, leave=False,
                mininterval=0.5)


def _write(batch: Ga4Batch, store: Ga4Store, report: IngestReport, keep_errors: int) -> None:
    store.replace(batch)
    st = batch.stats
    usd = micros_to_usd(sum(c.value_usd_micros or 0 for c in batch.conversions))
    report.origins.append(OriginReport(batch.origin, st.rows, st.events, st.duplicates, st.without_session,
                                       len(batch.errors), len(batch.sessions), len(batch.touches),
                                       len(batch.conversions), usd))
    report.errors_by_field.update(e.field for e in batch.errors)
    report.first_errors.extend(batch.errors[:max(0, keep_errors - len(report.first_errors))])
    report.channels.update(s.channel for s in batch.sessions)
