"""Data ingestion: analytics exports into warehouse tables the discovery engine reads.

- :mod:`~agent_service.ingest.ga4_schema`: the GA4 BigQuery export schema (the fields read);
- :mod:`~agent_service.ingest.ga4`: rows → sessions, touches, conversions and row errors (pure);
- :mod:`~agent_service.ingest.channels`: source/medium/campaign → GA4 channel group → GAELP channel;
- :mod:`~agent_service.ingest.sources`: files (NDJSON, gzip, JSON arrays, Parquet);
  :mod:`~agent_service.ingest.bigquery_source`: a BigQuery table;
- :mod:`~agent_service.ingest.store`: the ``ga4_*`` tables in a DuckDB file, idempotent per source;
- :mod:`~agent_service.ingest.campaigns`: ad-platform performance reports (Google Ads columns) → rows
  and row errors (pure); :mod:`~agent_service.ingest.campaign_store`: the ``campaign_performance``
  table and the CTR/CVR priors derived from it.
"""
