"""GA4 rows straight from BigQuery: the export's ``events_YYYYMMDD`` tables through
google-cloud-bigquery (``tables.get`` + ``tabledata.list``: no query job, no query cost).

A target names one table (``PROJECT.DATASET.events_20210128``) or, ending in ``*``, every table
of the dataset with that prefix (``PROJECT.DATASET.events_*``), each read as an origin of its own
(``bq:PROJECT.DATASET.TABLE``), so re-ingesting a day replaces only that day; ``events_*`` skips the
``events_intraday_*`` tables (the same events, still being written) unless the pattern names them. The client comes
from ``[warehouse]`` (project, api_endpoint for a local endpoint, anonymous credentials for it
only); tests point it at a local recording endpoint. Library errors become :class:`SourceError`.
"""

from __future__ import annotations

import fnmatch

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from agent_service.config import WarehouseConfig
from agent_service.ingest.ga4 import Ga4Builder
from agent_service.ingest.sources import BQ_PREFIX as PREFIX
from agent_service.ingest.sources import Progress, SourceError, feed_mappings, is_table

__all__ = ["PREFIX", "client_for", "is_table", "open_table", "read_table", "resolve_tables"]

def client_for(cfg: WarehouseConfig) -> bigquery.Client:
    """A client built from ``[warehouse]`` (credentials from the environment unless anonymous)."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    options = ClientOptions(api_endpoint=cfg.bigquery_api_endpoint) if cfg.bigquery_api_endpoint else None
    credentials = AnonymousCredentials() if cfg.bigquery_anonymous else None  # type: ignore[no-untyped-call]
    return bigquery.Client(project=cfg.bigquery_project or None, credentials=credentials, client_options=options)


def resolve_tables(client: bigquery.Client, target: str) -> list[str]:
    """Full ids (``project.dataset.table``) the target names, a wildcard expanded (sorted).

    :param client: the BigQuery client (its project completes a ``DATASET.TABLE`` target).
    :param target: see :func:`is_table`.
    """
    name = target.removeprefix(PREFIX)
    parts = name.split(".")
    if len(parts) == 2:
        parts = [client.project, *parts]
    project, dataset, table = parts
    if "*" not in table:
        return [f"{project}.{dataset}.{table}"]
    try:
        found = [t.table_id for t in client.list_tables(f"{project}.{dataset}")]
    except (gexc.GoogleAPICallError, OSError) as exc:
        raise SourceError(f"{target}: cannot list the dataset's tables: {exc}") from exc
    if "intraday" not in table:  # events_* must not also read events_intraday_* (the same day, twice)
        found = [t for t in found if "intraday" not in t]
    ids = sorted(f"{project}.{dataset}.{t}" for t in found if fnmatch.fnmatchcase(t, table))
    if not ids:
        raise SourceError(f"{target}: no table matches {table!r} in {project}.{dataset}")
    return ids


def open_table(client: bigquery.Client, table_id: str) -> bigquery.Table:
    """The table's metadata (schema, ``num_rows`` for a progress bar).

    :param client: the BigQuery client.
    :param table_id: ``project.dataset.table``.
    """
    try:
        return client.get_table(table_id)
    except (gexc.GoogleAPICallError, OSError) as exc:
        raise SourceError(f"{table_id}: cannot read: {exc}") from exc


def read_table(client: bigquery.Client, table: bigquery.Table, builder: Ga4Builder, progress: Progress | None = None,
               page_size: int = 10_000) -> None:
    """Feed every row of one table to ``builder``.

    :param client: the BigQuery client.
    :param table: from :func:`open_table`.
    :param builder: receives the rows (nested records as dicts, repeated fields as lists).
    :param progress: optional callback (rows).
    :param page_size: rows per ``tabledata.list`` page.
    """
    try:
        rows = client.list_rows(table, page_size=page_size)
        feed_mappings(((n, dict(row.items())) for n, row in enumerate(rows, start=1)), builder, progress)
    except (gexc.GoogleAPICallError, OSError) as exc:
        raise SourceError(f"{table.project}.{table.dataset_id}.{table.table_id}: cannot read: {exc}") from exc
