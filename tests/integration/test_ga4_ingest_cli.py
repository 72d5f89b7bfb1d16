"""``gaelp ingest ga4`` end to end: the real GA4 rows of ../shared/reference/ga4, the synthetic
export's daily files (a session cut by midnight merged, malformed rows stored with row and field),
idempotent re-ingestion into DuckDB, and a BigQuery source served by a local recording endpoint
(``tables.get``, ``tabledata.list`` with pages, ``tables.list`` for a wildcard) read by the real
google-cloud-bigquery client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
from aiohttp import web

from agent_service.cli import main
from tests.ga4_fixtures import bq_schema_json, fv_row, synthetic_export

PROJECT, DATASET = "gaelp-test", "analytics_123"


def ingest(capsys, *args: str) -> tuple[int, dict]:
    rc = main(["ingest", "ga4", *args, "--no-progress"])
    out = capsys.readouterr().out.strip().splitlines()
    return rc, json.loads(out[-1])


def dump(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: sorted(con.execute(f"SELECT * EXCLUDE ({ex}) FROM {t}").fetchall(), key=repr) for t, ex in (
            ("ga4_sessions", "parts"), ("ga4_touches", "event_time"), ("ga4_conversions", "origin"),
            ("ga4_session_parts", "origin, part_id"), ("ga4_ingest_errors", "origin, error_id"))}
    finally:
        con.close()


def test_real_rows_ingest_and_reingest_is_idempotent(shared_dir: Path, tmp_path: Path, capsys) -> None:
    db = tmp_path / "w.duckdb"
    rc, first = ingest(capsys, str(shared_dir / "reference/ga4"), "--warehouse", str(db))
    assert rc == 0
    assert (first["origins"], first["events"], first["errors"], first["conversions"]) == (5, 8, 0, 1)
    assert first["channels"] == {"organic": 4, "paid_search": 2, "direct": 1}
    assert abs(first["conversion_value_usd"] - 33.573523) < 1e-9
    before = dump(db)
    rc, again = ingest(capsys, str(shared_dir / "reference/ga4"), "--warehouse", str(db))
    assert rc == 0 and dump(db) == before and again["warehouse"] == first["warehouse"]
    # one person's session appears in two reference files: one session of two parts, 6 in all
    assert first["warehouse"]["ga4_sessions"] == 6 and first["warehouse"]["ga4_touches"] == 6


def test_synthetic_export_into_duckdb(tmp_path: Path, capsys) -> None:
    export = synthetic_export(5)
    expected = export.write_ndjson(tmp_path / "export")
    db = tmp_path / "w.duckdb"
    rc, out = ingest(capsys, str(tmp_path / "export"), "--warehouse", str(db))
    assert rc == 0
    assert out["events"] == len(export.rows) and out["errors"] == len(export.malformed)
    assert sum(out["errors_by_field"].values()) == out["errors"] and out["errors_by_field"]["$.event_timestamp"] == 3
    con = duckdb.connect(str(db), read_only=True)
    stored = {(Path(o).name, r): f for o, r, f in con.execute(
        "SELECT origin, row_number, field FROM ga4_ingest_errors").fetchall()}
    assert stored == {(p.name, r): f for p, bad in expected.items() for r, f in bad.items()}
    sessions = {(u, s): (ch, pv, ev, cv, val, parts) for u, s, ch, pv, ev, cv, val, parts in con.execute(
        "SELECT user_pseudo_id, ga_session_id, channel, page_views, events, conversions, conversion_value_micros, "
        "parts FROM ga4_sessions").fetchall()}
    assert set(sessions) == set(export.sessions)
    for key, t in export.sessions.items():
        assert sessions[key][:5] == (t.channel, t.page_views, t.events, t.conversions, round(t.value * 1e6)), key
    assert sorted(p for *_, p in sessions.values())[-1] == 2  # the midnight session, merged from two files
    assert con.execute("SELECT count(*) FROM ga4_touches").fetchone()[0] == len(export.sessions)
    assert con.execute("SELECT sum(errors), sum(events) FROM ga4_ingests").fetchone() == (
        len(export.malformed), len(export.rows))
    con.close()

    before = dump(db)
    assert ingest(capsys, str(tmp_path / "export"), "--warehouse", str(db))[0] == 0
    assert dump(db) == before  # re-ingesting changes nothing

    # a day re-exported with fewer rows replaces that day's rows, it does not add to them
    day = sorted((tmp_path / "export").iterdir())[1]
    lines = day.read_text().splitlines()
    purchases = [ln for ln in lines if '"purchase"' in ln]
    day.write_text("\n".join(ln for ln in lines if ln not in purchases) + "\n")
    rc, out = ingest(capsys, str(day), "--warehouse", str(db))
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM ga4_conversions").fetchone()[0] == len(before["ga4_conversions"]) - len(
        purchases)
    con.close()


@contextlib.asynccontextmanager
async def fake_bigquery(tables: dict[str, list[dict]], page: int = 50) -> AsyncIterator[tuple[str, list[str]]]:
    """tables.get, tabledata.list (``page`` rows a page) and tables.list of one dataset; yields the URL
    and the request paths it saw."""
    seen: list[str] = []

    def ref(t: str) -> dict:
        return {"projectId": PROJECT, "datasetId": DATASET, "tableId": t}

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        parts = request.path.split("/")
        if request.method != "GET" or parts[3:7] != ["projects", PROJECT, "datasets", DATASET]:
            return web.json_response({"error": {"code": 404, "message": "no", "errors": []}}, status=404)
        if len(parts) == 8:  # .../tables
            return web.json_response({"kind": "bigquery#tableList", "totalItems": len(tables), "tables": [
                {"kind": "bigquery#table", "id": f"{PROJECT}:{DATASET}.{t}", "tableReference": ref(t), "type": "TABLE"}
                for t in tables]})
        rows = tables.get(parts[8])
        if rows is None:
            return web.json_response({"error": {"code": 404, "message": "no table", "errors": []}}, status=404)
        if len(parts) == 9:
            return web.json_response({"kind": "bigquery#table", "id": f"{PROJECT}:{DATASET}.{parts[8]}",
                                      "tableReference": ref(parts[8]), "schema": bq_schema_json(),
                                      "numRows": str(len(rows)), "type": "TABLE"})
        start = int(request.query.get("pageToken", "0"))
        body: dict = {"kind": "bigquery#tableDataList", "totalRows": str(len(rows)),
                      "rows": [fv_row(r) for r in rows[start:start + page]]}
        if start + page < len(rows):
            body["pageToken"] = str(start + page)
        return web.json_response(body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_bigquery_tables_ingest_like_the_files(tmp_path: Path, capsys) -> None:
    export = synthetic_export(6)
    tables = {f"events_{day}": rows for day, rows in export.days.items()}
    first = min(tables)
    tables[first] = [*tables[first], {**tables[first][0], "user_pseudo_id": None, "event_bundle_sequence_id": "7"}]
    tables["other_table"] = tables[first][:3]  # not matched by events_*
    tables["events_intraday_20240109"] = tables[first][:5]  # matched, but intraday tables are skipped
    export.write_ndjson(tmp_path / "files", malformed=False)
    files_db, bq_db = tmp_path / "files.duckdb", tmp_path / "bq.duckdb"
    assert (await asyncio.to_thread(ingest, capsys, str(tmp_path / "files"), "--warehouse", str(files_db)))[0] == 0

    async with fake_bigquery(tables) as (url, seen):
        cfg = tmp_path / "bq.toml"
        cfg.write_text(f'[warehouse]\nbigquery_project = "{PROJECT}"\nbigquery_api_endpoint = "{url}"\n'
                       "bigquery_anonymous = true\n")
        rc, out = await asyncio.to_thread(ingest, capsys, f"bq:{DATASET}.events_*", "--warehouse", str(bq_db),
                                          "--config", str(cfg))
    assert rc == 0
    assert out["origins"] == len(export.days) and out["events"] == len(export.rows)
    assert out["errors_by_field"] == {"$.user_pseudo_id": 1}
    assert sum("pageToken" in p for p in seen) >= len(export.rows) // 50 - len(export.days)  # paged reads
    a, b = dump(files_db), dump(bq_db)
    for table in ("ga4_sessions", "ga4_touches", "ga4_session_parts"):
        assert a[table] == b[table], table
    strip = [{r[1:] for r in d["ga4_conversions"]} for d in (a, b)]  # ids hash the row bytes as read
    assert strip[0] == strip[1] and len(strip[0]) == sum(t.conversions for t in export.sessions.values())
    con = duckdb.connect(str(bq_db), read_only=True)
    err = con.execute("SELECT origin, row_number, field FROM ga4_ingest_errors").fetchall()
    con.close()
    assert err == [(f"bq:{PROJECT}.{DATASET}.{first}", len(tables[first]), "$.user_pseudo_id")]


def test_unreadable_target_exits_1(tmp_path: Path, capsys) -> None:
    rc = main(["ingest", "ga4", str(tmp_path / "nope.json"), "--warehouse", str(tmp_path / "w.duckdb"),
               "--no-progress"])
    assert rc == 1 and "no such file" in capsys.readouterr().err
