"""The BigQuery adapter against a local HTTP recorder (the real google-cloud-bigquery client).

The recorder is an aiohttp server on 127.0.0.1 that speaks the two REST calls used
(``tables.insert`` and ``tabledata.insertAll``), records every request, can answer with
scripted HTTP errors (503, 429, 400) and per-row ``insertErrors``, and emulates BigQuery:
an invalid row fails the whole request (other rows ``stopped``), and a row whose
``insertId`` was already stored is dropped. It also counts any row sent again *after* it was
acknowledged — the writer must never do that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from google.auth.credentials import AnonymousCredentials

from agent_service.warehouse import TABLES, BatchConfig, BatchWriter, PermanentWarehouseError
from agent_service.warehouse.bigquery_warehouse import BigQueryWarehouse

PROJECT, DATASET = "gaelp-test", "gaelp"


class Recorder:
    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """The recorder on a free loopback port; yields its base URL (the client's api_endpoint)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.statuses: list[int] = []  # scripted HTTP statuses for the next insertAll calls
        self.invalid_ids: set[str] = set()
        self.flaky_ids: set[str] = set()  # fail once with backendError
        self.stored: dict[str, Counter] = {}
        self.acknowledged: set[str] = set()
        self.resent_after_ack: list[str] = []
        self.created: dict[str, dict] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        path = request.path
        self.requests.append((request.method, path, body))
        if request.method == "POST" and path.endswith(f"/datasets/{DATASET}/tables"):
            self.created[body["tableReference"]["tableId"]] = body
            return web.json_response({**body, "id": f"{PROJECT}:{DATASET}.{body['tableReference']['tableId']}"})
        if request.method == "POST" and path.endswith("/insertAll"):
            return self.insert_all(path.split("/")[-2], body)
        return web.json_response({"error": {"code": 404, "message": "not found", "errors": []}}, status=404)

    def insert_all(self, table: str, body: dict) -> web.Response:
        rows = body["rows"]
        ids = [r["insertId"] for r in rows]
        self.resent_after_ack += [i for i in ids if i in self.acknowledged]
        if self.statuses:
            status = self.statuses.pop(0)
            reason = {500: "internalError", 503: "backendError", 429: "rateLimitExceeded", 400: "invalid"}[status]
            if status == 500:  # unknown outcome: stored, but the client sees an error
                store = self.stored.setdefault(table, Counter())
                for rid in ids:
                    if rid not in store:
                        store[rid] += 1
            return web.json_response({"error": {"code": status, "message": reason,
                                                "errors": [{"reason": reason, "message": reason}]}}, status=status)
        errors = []
        invalid = [k for k, i in enumerate(ids) if i in self.invalid_ids]
        if invalid:  # BigQuery without skipInvalidRows: nothing written, the rest 'stopped'
            for k in range(len(rows)):
                reason = "invalid" if k in invalid else "stopped"
                errors.append({"index": k, "errors": [{"reason": reason, "message": reason}]})
            return web.json_response({"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors})
        store = self.stored.setdefault(table, Counter())
        for k, rid in enumerate(ids):
            if rid in self.flaky_ids:
                self.flaky_ids.discard(rid)
                errors.append({"index": k, "errors": [{"reason": "backendError", "message": "try again"}]})
                continue
            if rid not in store:  # insertId deduplication
                store[rid] += 1
            self.acknowledged.add(rid)
        resp = {"kind": "bigquery#tableDataInsertAllResponse"}
        if errors:
            resp["insertErrors"] = errors
        return web.json_response(resp)

    def inserts(self) -> list[dict]:
        return [b for m, p, b in self.requests if p.endswith("/insertAll")]


@pytest.fixture
async def recorder():
    rec = Recorder()
    async with rec.serving() as url:
        wh = BigQueryWarehouse.connect(PROJECT, DATASET, api_endpoint=url, credentials=AnonymousCredentials(),
                                       timeout_s=10)
        try:
            yield rec, wh
        finally:
            await wh.close()


class NoWait:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def __call__(self, s: float) -> None:
        self.sleeps.append(s)
        await asyncio.sleep(0)


def event(i: int) -> dict:
    return {"event_id": f"e{i:04d}", "event_time": 1_700_000_000_000 + i, "kind": "impression",
            "cost_micros": 2500, "payload": {"slot": i % 7}}


async def test_tables_are_created_with_the_documented_schema(recorder) -> None:
    rec, wh = recorder
    await wh.ensure_tables()
    assert set(rec.created) == set(TABLES)
    for name, schema in TABLES.items():
        fields = rec.created[name]["schema"]["fields"]
        assert [(f["name"], f["type"], f["mode"]) for f in fields] == [
            (c.name, c.type, "REQUIRED" if c.required else "NULLABLE") for c in schema.columns]
        assert all(f.get("description") for f in fields)
        assert rec.created[name]["tableReference"] == {"projectId": PROJECT, "datasetId": DATASET, "tableId": name}


async def test_batches_retries_on_5xx_and_429_and_never_duplicates(recorder) -> None:
    rec, wh = recorder
    rec.statuses = [503, 429, 500]  # the first three insertAll calls fail (the third after storing)
    rec.flaky_ids = {"e0007", "e0140"}  # per-row backendError once
    sleep = NoWait()
    writer = BatchWriter(wh, BatchConfig(max_rows=50, seed=3, backoff_initial_s=0.1), sleep=sleep)
    rows = [event(i) for i in range(230)]
    await writer.add_many("events", rows)
    await writer.add_many("events", rows[:20])  # redelivered: dropped
    await writer.close()

    inserts = rec.inserts()
    assert all(len(b["rows"]) <= 50 for b in inserts)
    assert inserts[0]["rows"] == inserts[1]["rows"] == inserts[2]["rows"] == inserts[3]["rows"]  # same insertIds
    for b in inserts:
        for r in b["rows"]:
            assert r["insertId"] == r["json"]["event_id"]
            assert set(r["json"]) <= set(TABLES["events"].column_names)
    assert rec.stored["events"] == Counter({r["event_id"]: 1 for r in rows})  # every row once (insertId dedupe)
    assert rec.resent_after_ack == []  # nothing acknowledged was sent again
    assert [r["insertId"] for b in inserts for r in b["rows"] if len(b["rows"]) <= 2] == ["e0007", "e0140"]
    assert writer.retries == len(sleep.sleeps) == 5 and writer.written == 230 and not writer.dead_letters


async def test_invalid_rows_are_dead_lettered_and_stopped_rows_resent(recorder) -> None:
    rec, wh = recorder
    rec.invalid_ids = {"e0003"}
    writer = BatchWriter(wh, BatchConfig(max_rows=10, seed=0), sleep=NoWait())
    await writer.add_many("events", [event(i) for i in range(10)])
    await writer.close()
    assert [d.row["event_id"] for d in writer.dead_letters] == ["e0003"]
    assert "invalid" in writer.dead_letters[0].reason
    assert set(rec.stored["events"]) == {f"e{i:04d}" for i in range(10) if i != 3}
    assert len(rec.inserts()) == 2 and rec.resent_after_ack == []


async def test_permanent_http_error_is_not_retried(recorder) -> None:
    rec, wh = recorder
    rec.statuses = [400]
    with pytest.raises(PermanentWarehouseError, match="400"):
        await wh.insert("events", [TABLES["events"].validate(event(1))])
    writer = BatchWriter(wh, BatchConfig(seed=0), sleep=NoWait())
    rec.statuses = [400]
    await writer.add("events", event(2))
    await writer.close()
    assert writer.retries == 0 and len(writer.dead_letters) == 1


async def test_a_users_snapshot_streams_to_bigquery_and_its_rows_read_back_as_the_profiles(recorder) -> None:
    from agent_service.adapters.memory_store import MemoryStore
    from agent_service.contracts.events import Touch
    from agent_service.ports.store import Activity, DeviceShare, PersonProfile
    from agent_service.runtime.userdb import snapshot_users
    from agent_service.warehouse.users import profile_of

    rec, wh = recorder
    touch = Touch(decision_id="r1:1", event_time=5, channel="social", creative=2, segment=1, device_id="a1")
    profiles = [PersonProfile(f"u:{i}", ((f"a{i}", 0.875),), ((3, 2),), Activity(1.5, 0.25, 9),
                              (DeviceShare(f"a{i}", ((3, 2),), Activity(1.5, 0.25, 9)),), (touch,) if i % 2 else (),
                              ("r1:1",) if i % 3 == 0 else ()) for i in range(7)]
    store = MemoryStore()
    await store.import_profiles(profiles, 3600)
    rec.statuses = [503]  # the first request fails transiently: retried
    report = await snapshot_users(store, wh, "s1", 1_700_000_000_000, batch=3)
    assert report.persons == 7 and set(rec.stored["users"]) == {f"s1:u:{i}" for i in range(7)}
    sent = {r["insertId"]: r["json"] for b in rec.inserts() for r in b["rows"]}
    assert [profile_of(sent[f"s1:u:{i}"]) for i in range(7)] == profiles


class QueryingRecorder(Recorder):
    """The recorder, also keeping the ``users`` rows and answering ``jobs.query`` the way the user DB
    reads them (snapshot, person after a key, person order, LIMIT): BigQuery's REST answer, every
    value a string as the API sends it."""

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, dict] = {}
        self.queries: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "POST" and request.path.endswith(f"/projects/{PROJECT}/queries"):
            return self.query(await request.json())
        return await super().handle(request)

    def insert_all(self, table: str, body: dict) -> web.Response:
        if table == "users":
            for r in body["rows"]:
                self.users.setdefault(r["insertId"], r["json"])
        return super().insert_all(table, body)

    def query(self, body: dict) -> web.Response:
        import re

        self.queries.append(body)
        params = {p["name"]: p["parameterValue"].get("value") for p in body["queryParameters"]}
        rows = sorted((r for r in self.users.values() if r["snapshot"] == params["snapshot"]
                       and (params["after"] is None or r["person_id"] > params["after"])), key=lambda r: r["person_id"])
        rows = rows[:int(re.search(r"LIMIT (\d+)", body["query"]).group(1))]
        cols = TABLES["users"].columns

        def v(x):
            return None if x is None else x if isinstance(x, str) else repr(x) if isinstance(x, float) else str(x)

        return web.json_response({"kind": "bigquery#queryResponse", "jobComplete": True, "totalRows": str(len(rows)),
                                  "schema": {"fields": [{"name": c.name, "type": c.type, "mode": "NULLABLE"}
                                                        for c in cols]},
                                  "rows": [{"f": [{"v": v(r.get(c.name))} for c in cols]} for r in rows]})


async def test_a_users_snapshot_restores_from_bigquery_in_pages_with_bad_rows_reported() -> None:
    from agent_service.adapters.memory_store import MemoryStore
    from agent_service.contracts.events import Touch
    from agent_service.ports.store import Activity, DeviceShare, PersonProfile
    from agent_service.runtime.userdb import bigquery_user_rows, restore_users, snapshot_users

    touch = Touch(decision_id="r1:1", event_time=5, channel="social", creative=2, segment=1, device_id="a1")
    profiles = [PersonProfile(f"u:{i}", ((f"a{i}", 0.875),), ((3, 2),), Activity(1.5, 0.1 * i, 9),
                              (DeviceShare(f"a{i}", ((3, 2),), Activity(1.5, 0.1 * i, 9)),), (touch,) if i % 2 else (),
                              ()) for i in range(7)]
    rec = QueryingRecorder()
    async with rec.serving() as url:
        wh = BigQueryWarehouse.connect(PROJECT, DATASET, api_endpoint=url, credentials=AnonymousCredentials(),
                                       timeout_s=10)
        try:
            source = MemoryStore()
            await source.import_profiles(profiles, 3600)
            await snapshot_users(source, wh, "s1", 1_700_000_000_000, batch=3)
            rec.users["s1:u:4"]["clicks"] = '[7]'  # a malformed row: reported, the rest restored
            target = MemoryStore()
            report = await restore_users(bigquery_user_rows(wh, "s1", batch=3), target, "s1", 3600, batch=2)
        finally:
            await wh.close()
    assert (report.rows, report.restored, report.errors) == (7, 6, 1)
    assert [(e.row, e.person_id, e.field) for e in report.first_errors] == [(5, "u:4", "users.clicks[0]")]
    assert len(rec.queries) == 3  # pages of 3, 3, 1 rows
    rows, _ = await target.export_profiles("", 100)
    assert rows == [p for p in profiles if p.person_id != "u:4"]
