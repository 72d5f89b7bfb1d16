"""The production warehouse: BigQuery streaming inserts (``tabledata.insertAll``) with insert ids.

How google-cloud-bigquery 3.47 behaves (read from its source, ``client.insert_rows_json``
and ``retry.py``), and what this adapter does about it:

- ``insert_rows_json(table, rows, row_ids=[...])`` sends ``{"rows": [{"json": row,
  "insertId": id}]}``; BigQuery drops a row whose ``insertId`` it saw recently (best effort,
  about a minute), so the id is the row's own id, identical on every resend;
- per-row failures do *not* raise: HTTP 200 with ``insertErrors`` comes back as
  ``[{"index": i, "errors": [{"reason": ...}]}]``. Reason ``invalid`` (and other
  non-retryable reasons) rejects the row for good; ``stopped`` means "not written because
  another row of the request was invalid"; ``backendError``, ``internalError``, ``timeout``,
  ``rateLimitExceeded`` are transient — both kinds are resent;
- HTTP errors raise ``google.api_core.exceptions`` (429 ``TooManyRequests``, 500/502/503
  ``InternalServerError``/``BadGateway``/``ServiceUnavailable``, 400 ``BadRequest``, 403,
  404 ``NotFound``). The client's ``DEFAULT_RETRY`` would retry 429/5xx and the reasons
  rateLimitExceeded/backendError/internalError/badGateway for up to 10 minutes inside one
  blocking call; this adapter passes ``retry=None`` so that :class:`BatchWriter` owns
  retries (bounded, with jitter, visible in its counters) and maps errors itself:
  429, 5xx, connection errors, timeouts and 403 ``rateLimitExceeded``/``quotaExceeded`` are
  transient; other 4xx are permanent.

The client is synchronous (requests), so calls run in a worker thread. Tests point it at a
local recorder with ``ClientOptions(api_endpoint="http://127.0.0.1:PORT")`` and
``AnonymousCredentials``. Load jobs (cheaper, no streaming buffer) would suit large
backfills; streaming inserts suit the service's small, frequent batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from agent_service.warehouse.port import (
    InsertOutcome,
    PermanentWarehouseError,
    TransientWarehouseError,
    table_schema,
)
from agent_service.warehouse.schema import TABLES, TableSchema

__all__ = ["BigQueryWarehouse"]

_RETRYABLE_ROW_REASONS = frozenset({"stopped", "backendError", "internalError", "timeout", "rateLimitExceeded"})
_RETRYABLE_REQUEST_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded", "backendError", "internalError",
                                        "badGateway"})
_TRANSIENT_TYPES = (gexc.TooManyRequests, gexc.ServerError, gexc.GatewayTimeout, gexc.RetryError,
                    requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError)


class BigQueryWarehouse:
    """Warehouse tables in one BigQuery dataset.

    :param client: a ``google.cloud.bigquery.Client``.
    :param dataset: dataset id (``project`` comes from the client).
    :param tables: schemas (default ``schema.TABLES``).
    :param timeout_s: HTTP timeout of one request.
    """

    def __init__(self, client: bigquery.Client, dataset: str, tables: Mapping[str, TableSchema] | None = None,
                 timeout_s: float = 30.0) -> None:
        self.client = client
        self.dataset = dataset
        self.schemas = dict(tables or TABLES)
        self.timeout_s = timeout_s

    @classmethod
    def connect(cls, project: str, dataset: str, *, api_endpoint: str | None = None, credentials: Any = None,
                **kwargs: Any) -> BigQueryWarehouse:
        """Build the client (``api_endpoint`` for a local endpoint; credentials from the
        environment when None).

        :param project: GCP project.
        :param dataset: dataset id.
        :param api_endpoint: e.g. ``http://127.0.0.1:9050`` in tests.
        :param credentials: google-auth credentials (``AnonymousCredentials()`` in tests).
        """
        from google.api_core.client_options import ClientOptions

        options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
        client = bigquery.Client(project=project, credentials=credentials, client_options=options)
        return cls(client, dataset, **kwargs)

    def table_id(self, table: str) -> str:
        """``project.dataset.table``."""
        return f"{self.client.project}.{self.dataset}.{table}"

    async def ensure_tables(self) -> None:
        """Create the tables with their schema and descriptions (``exists_ok``)."""
        for s in self.schemas.values():
            fields = [bigquery.SchemaField(c.name, c.type, mode="REQUIRED" if c.required else "NULLABLE",
                                           description=c.description) for c in s.columns]
            tbl = bigquery.Table(self.table_id(s.name), schema=fields)
            tbl.description = s.description or None
            await self._call(lambda t=tbl: self.client.create_table(
                t, exists_ok=True, retry=None, timeout=self.timeout_s))  # type: ignore[arg-type]  # None: no retry

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> InsertOutcome:
        """``insertAll`` the rows with their ids as insert ids; per-row errors in the outcome."""
        schema = table_schema(self.schemas, table)
        if not rows:
            return InsertOutcome()
        payload = [{k: v for k, v in r.items() if v is not None} for r in rows]
        ids = [str(r[schema.id_column]) for r in rows]
        errors = await self._call(lambda: self.client.insert_rows_json(
            self.table_id(table), payload, row_ids=ids, retry=None,  # type: ignore[arg-type]  # documented: no retry
            timeout=self.timeout_s))
        retry: list[int] = []
        rejected: dict[int, str] = {}
        for err in errors:
            i = int(err["index"])
            reasons = [e.get("reason", "") for e in err.get("errors", [])] or ["unknown"]
            if all(r in _RETRYABLE_ROW_REASONS for r in reasons):
                retry.append(i)
            else:
                rejected[i] = "; ".join(f"{e.get('reason', '')}: {e.get('message', '')}" for e in err.get("errors", []))
        return InsertOutcome(tuple(sorted(retry)), rejected)

    async def query(self, sql: str, params: Mapping[str, str | int | None] | None = None) -> list[dict[str, Any]]:
        """Run a read query (``jobs.query``; the client's own retries) and return its rows.

        :param sql: GoogleSQL naming tables as ``table_id`` gives them, parameters as ``@name``.
        :param params: STRING or INT64 query parameters (None: a NULL STRING).
        """
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter(k, "INT64" if isinstance(v, int) else "STRING", v)
            for k, v in (params or {}).items()])
        return await self._call(lambda: [dict(r.items()) for r in self.client.query_and_wait(
            sql, job_config=config, api_timeout=self.timeout_s)])

    async def close(self) -> None:
        """Close the client's HTTP session."""
        await asyncio.to_thread(self.client.close)

    async def _call(self, fn: Any) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except gexc.GoogleAPICallError as exc:
            if _transient(exc):
                raise TransientWarehouseError(f"BigQuery: {exc}") from exc
            raise PermanentWarehouseError(f"BigQuery: {exc}") from exc
        except _TRANSIENT_TYPES as exc:
            raise TransientWarehouseError(f"BigQuery: {exc}") from exc


def _transient(exc: gexc.GoogleAPICallError) -> bool:
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    try:
        reason = exc.errors[0]["reason"]
    except (AttributeError, IndexError, KeyError, TypeError):
        return False
    return reason in _RETRYABLE_REQUEST_REASONS
