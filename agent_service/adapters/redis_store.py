"""Redis state store: the production ``ports.store.StateStore``.

Key layout (``{p}`` is the configurable prefix, default ``gaelp:``; ids are opaque strings —
device, user and person ids are already pseudonyms (``pipeline.pseudonym``), never raw ids;
a person is ``d:<device pseudonym>`` until a device is linked):

=============================  ======  ==================================================  =================
key                            type    content                                             expiry
=============================  ======  ==================================================  =================
{p}id:dev:{device}             hash    person, score (the graph's confidence)              identity TTL
{p}id:person:{person}          set     devices linked to the person                        identity TTL
{p}id:ip:{ip}                  set     devices seen behind a (pseudonymised) IP, capped    identity TTL
{p}jidx:{person}               zset    decision id scored by touch event time              window + slack
{p}jdata:{person}              hash    decision id → Touch JSON                            window + slack
{p}jclick:{person}             hash    decision id → 1 for clicked touches                 window + slack
{p}dec:{decision}              string  Decision, JSON as logged (put-if-absent)            window + slack
{p}ctx:{person}                hash    context bucket → requests decided (+1 per newly     window + slack
                                       stored decision: the segment posterior's evidence);
                                       _n, _s, _t: the person's recent ``Activity``
{p}ctxdev:{device}:{person}    hash    the device's share of ``ctx:{person}`` (same        window + slack
                                       fields; moves with the device, ``ASSIGN_IDENTITIES``)
{p}budget:{campaign}:{period}  hash    budget, spent, reserved (integer micros)            none (audit)
{p}resv:{campaign}:{period}    hash    decision id → reserved micros (open reservations)   3 days
{p}settled:{campaign}:{period} hash    decision id → cost micros (settled: dedupe)         3 days
{p}windows                     zset    decision id scored by window close time (ms)        none (drained)
{p}credit:{decision}           hash    conversion id → credited micros                     window + slack
{p}claim:{key}                 string  a handler's stored outputs (outbox / dedupe):       window + slack
                                       outcome:/click:/final:<decision> → Experience JSON,
                                       conv:<conversion> → JoinRecord JSON
{p}parked / {p}parked:data     zset /  conversions waiting for their touches' watermark    none (drained)
                               hash
{p}wm:{topic}                  hash    partition → max event time seen (ms)                none
=============================  ======  ==================================================  =================

Creative experiments' results share the connection and prefix (``{p}x…`` keys; see
``adapters.redis_experiments``).

Budget, journey, identity and park updates are Lua scripts (``redis_lua``): one atomic step
each. Hot paths cost a fixed number of round trips per batch, not per item:

- decide batch: ``DECIDE_CONTEXTS`` (identity, last touches, budget, stored decision of every
  impression; one msgpack reply), then ``RESERVE_AND_PUT`` per budget period, pipelined (atomic,
  greedy in order: a request's imps share one check; each decision stored with its reservation);
- stream batch: ``ADVANCE_WATERMARK`` ×partitions (pipelined), ``MGET`` of decisions (``EXISTS``
  counts for impressions, ``MISSING_DECISIONS`` only when short),
  ``RECORD_RESULTS`` (settle + touch + window + claim, atomic per result, 50 per call),
  ``JOIN_CONTEXTS`` / ``RECORD_JOINS`` / ``RECORD_CLICKS`` (50 per call), ``PARK`` (500 per call);
- user DB (``ProfileStore``): ``SCAN`` (``MATCH`` each key kind that names a person, ``COUNT`` 10 ×
  the batch size), then one read-only ``EXPORT_PROFILES`` per batch; ``IMPORT_PROFILES`` (100
  persons per call, pipelined), each person replaced in one atomic step;
- identity-links batch (``pipeline.identity_links``): ``IDENTITY_PEERS``, ``IP_DEVICES``, then
  ``ASSIGN_IDENTITIES`` (50 devices per call), each device's re-assignment and the move of its
  own touches and of its share of the profile one atomic step.

Every write is idempotent by its key, so the client reconnects and retries a command whose
connection dropped (a Redis restart) without double effects. Library errors become
``StoreError``. The scripts build keys from the prefix, so this adapter targets a standalone
Redis (or one hash slot), not a sharded cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agent_service.adapters import redis_lua
from agent_service.adapters.redis_pipeline import (
    HiredisPackConnection,
    RespArgs,
    bulk,
    read_each,
    run_scripts,
)
from agent_service.contracts.events import Decision, Touch
from agent_service.errors import BudgetError, StoreError
from agent_service.ports.store import (
    ACTIVITY_HALF_LIFE_MS,
    Activity,
    BudgetState,
    ClickEffect,
    ContextQuery,
    DecideContext,
    DecisionDraft,
    DeviceShare,
    Identity,
    IdentityAssignment,
    JoinContext,
    JoinEffect,
    JoinQuery,
    PersonProfile,
    ResultEffect,
    check_drafts,
)
from agent_service.units import DAY_S

__all__ = ["RedisStore"]

_CHUNK = 50
"""Items per batched write script call."""
_Claimed = TypeVar("_Claimed", ResultEffect, ClickEffect)
_PARK_CHUNK = 500
"""Conversions per PARK call (Lua's unpack() has a stack limit)."""
_CONTEXT_CHUNK = 1_000
"""Impressions per DECIDE_CONTEXTS call."""
_touch_dec = msgspec.json.Decoder(Touch)
_PERSON_KEYS = ("id:person:", "ctx:", "jidx:", "jclick:")
"""Key kinds that name a person, scanned in this order (``EXPORT_PROFILES`` phases 1-4)."""


class _EncodedStateDecision(Decision, frozen=True, kw_only=True):
    """A stored decision read with its state left encoded (see ``Decision.state``)."""

    state: msgspec.Raw  # type: ignore[assignment]


# Decisions are stored as the same JSON the decision log carries: the bid path encodes the state
# once, and the stream reads it back without parsing its floats (``get_decisions(state_encoded=True)``).
_decision_dec = msgspec.json.Decoder(Decision)
_decision_raw_dec = msgspec.json.Decoder(_EncodedStateDecision)
_decision_enc = msgspec.json.Encoder()
_decision_msgpack_dec = msgspec.msgpack.Decoder(Decision)
"""Records written before the JSON layout (msgpack); they expire with their 16-day TTL."""


_STATE_KEY = b'"state":['


def _decode_decision(raw: bytes, state_encoded: bool = False) -> Decision:
    if raw[:1] != b"{":
        return _decision_msgpack_dec.decode(raw)
    if not state_encoded:
        return _decision_dec.decode(raw)
    # The state (a flat array, ~90 % of the bytes) is cut out as is and the rest parsed: msgspec
    # would scan every byte of it only to hand back the same slice. A key can only match outside
    # JSON strings (their quotes are escaped); anything unexpected takes the full parse.
    at = raw.find(_STATE_KEY) + len(_STATE_KEY) - 1
    end = raw.find(b"]", at) + 1
    if at > 0 and end > 0:
        try:
            dec = _decision_raw_dec.decode(raw[:at] + b"[]" + raw[end:])
        except msgspec.DecodeError:
            pass
        else:  # a view, not a copy of the state's KBs (every writer copies it from the view as is)
            msgspec.structs.force_setattr(dec, "state", msgspec.Raw(memoryview(raw)[at:end]))
            return dec
    return _decision_raw_dec.decode(raw)

_enc = msgspec.json.Encoder()


def _touches(raw: list[bytes | None], clicks: list[bytes | None]) -> list[Touch]:
    out = []
    for t, c in zip(raw, clicks, strict=True):
        if t is not None:
            touch = _touch_dec.decode(t)
            out.append(msgspec.structs.replace(touch, clicked=True) if c is not None and not touch.clicked else touch)
    return out


class RedisStore:
    """State in Redis (see the module docstring for the key layout).

    :param url: ``redis://HOST:PORT/DB``.
    :param prefix: prefix of every key.
    :param identity_ttl_s: expiry of identity links.
    :param retention_s: expiry of journeys, decisions, credits and claims (window + slack).
    :param max_connections: connection pool size (callers beyond it wait).
    """

    def __init__(self, url: str, prefix: str = "gaelp:", identity_ttl_s: int = 90 * DAY_S,
                 retention_s: int = 16 * DAY_S, max_connections: int = 32) -> None:
        self._url = url
        self._max_connections = max_connections
        self._p = prefix
        self._identity_ttl = identity_ttl_s
        self._retention = retention_s
        self._r: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._resp = False
        """Whether the pool's connections take pre-packed arguments (``RespArgs``; not over a unix socket)."""

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            # A blocking pool: a burst of concurrent calls waits for a connection instead of failing.
            # Reconnect-and-retry on a dropped connection (a Redis restart): every write here is
            # idempotent by its key, so running a command again after an unseen success is harmless.
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url, max_connections=self._max_connections, timeout=10, health_check_interval=10,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 4),
                retry_on_error=[RedisConnectionError, RedisTimeoutError], connection_class=HiredisPackConnection)
            self._resp = getattr(pool.connection_class, "packs_resp", False)
            self._r = aioredis.Redis(connection_pool=pool, decode_responses=False)
            await self._r.ping()
        except RedisError as exc:
            raise StoreError(f"cannot reach Redis at {self._url}: {exc}") from exc
        for name in redis_lua.__all__:
            self._scripts[name] = self._r.register_script(getattr(redis_lua, name))

    async def stop(self) -> None:
        if self._r is not None:
            await self._r.aclose()
            self._r = None

    @property
    def prefix(self) -> str:
        """Prefix of every key (adapters sharing the connection use it too)."""
        return self._p

    @property
    def redis(self) -> aioredis.Redis:
        if self._r is None:
            raise StoreError("RedisStore used before start()")
        return self._r

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._scripts[name](keys=list(keys), args=list(args))
        except RedisError as exc:
            raise StoreError(f"redis script {name} failed: {exc}") from exc

    # --- identity ------------------------------------------------------------------------
    async def identity_peers(self, device_ids: Sequence[str]) -> list[tuple[str, list[str]]]:
        out: list[tuple[str, list[str]]] = []
        for k in range(0, len(device_ids), _CONTEXT_CHUNK):
            res = await self._run("IDENTITY_PEERS", [], [self._p, *device_ids[k:k + _CONTEXT_CHUNK]])
            out += [(person.decode(), sorted(d.decode() for d in devices)) for person, devices in res]
        return out

    async def person_devices(self, person_ids: Sequence[str]) -> list[list[str]]:
        raw = await read_each(self.redis, "smembers", [f"{self._p}id:person:{p}" for p in person_ids],
                              "reading person devices failed")
        return [sorted(d.decode() for d in devices) for devices in raw]

    async def assign_identities(self, assignments: Sequence[IdentityAssignment], ttl_s: int) -> int:
        calls: list[tuple[str, Sequence[str], Sequence[Any]]] = []
        head: list[Any] = [self._p, self._identity_ttl, ttl_s, ACTIVITY_HALF_LIFE_MS]
        for k in range(0, len(assignments), _CHUNK):
            args: list[Any] = list(head)
            for a in assignments[k:k + _CHUNK]:
                args += [a.device_id, a.person_id or "", repr(float(a.confidence))]
            calls.append(("ASSIGN_IDENTITIES", [], args))
        return sum(int(n) for n in await self._pipelined("assign_identities", calls))

    async def ip_devices(self, items: Sequence[tuple[str, Sequence[str]]], cap: int) -> list[list[str]]:
        res = await self._pipelined("ip_devices", [
            ("IP_DEVICES", [f"{self._p}id:ip:{ip}"], [cap, self._identity_ttl, *devices]) for ip, devices in items])
        return [sorted(d.decode() for d in members) for members in res]

    # --- decision path ---------------------------------------------------------------------
    async def _pipelined(self, what: str, calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]]) -> list[Any]:
        """Run several script calls in one round trip (:func:`run_scripts`; not a transaction)."""
        try:
            return await run_scripts(self.redis, [(self._scripts[name], keys, args) for name, keys, args in calls])
        except RedisError as exc:
            raise StoreError(f"redis pipeline {what} failed: {exc}") from exc

    async def decide_contexts(self, queries: Sequence[ContextQuery], max_touches: int) -> list[DecideContext]:
        if len(queries) > _CONTEXT_CHUNK:  # Lua's unpack() has a stack limit
            return [c for k in range(0, len(queries), _CONTEXT_CHUNK)
                    for c in await self.decide_contexts(queries[k:k + _CONTEXT_CHUNK], max_touches)]
        if not queries:
            return []
        p = self._p
        args: list[bytes] = [p.encode(), b"%d" % max_touches]
        for q in queries:
            args += [q.device_id.encode(), self._budget_key(q.campaign, q.period).encode(),
                     f"{p}dec:{q.decision_id}".encode()]
        packed, *stored = await self._run("DECIDE_CONTEXTS", [], args)
        res = msgspec.msgpack.decode(packed)
        out = []
        for i, existing in zip(range(0, len(res), 9), stored, strict=True):
            person, score, ndev, touches, clicks, b, s, r, prof = res[i:i + 9]
            out.append(DecideContext(Identity(person, float(score), int(ndev)),
                                     _touches([t or None for t in touches], [c or None for c in clicks])
                                     if touches else [],  # most requests: a person without a journey
                                     BudgetState(int(b), int(s), int(r)),
                                     _decode_decision(existing, True) if existing else None,
                                     *(_profile(prof) if prof else _NO_PROFILE)))
        return out

    async def replace_decisions(self, decisions: Sequence[Decision], ttl_s: int) -> None:
        if not decisions:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for d in decisions:
                    pipe.set(f"{self._p}dec:{d.id}", _decision_enc.encode(d), ex=ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"replacing decisions failed: {exc}") from exc

    async def get_decisions(self, ids: Sequence[str], state_encoded: bool = False) -> dict[str, Decision]:
        if not ids:
            return {}
        try:
            raw = await self.redis.mget([f"{self._p}dec:{i}" for i in ids])
        except RedisError as exc:
            raise StoreError(f"reading decisions failed: {exc}") from exc
        return {i: _decode_decision(cast(bytes, v), state_encoded)
                for i, v in zip(ids, raw, strict=True) if v is not None}

    async def stored_decisions(self, ids: Sequence[str]) -> set[str]:
        # One native EXISTS per chunk counts the stored ones (a script's redis.call per id costs
        # Redis more than the check); only a chunk found short asks which (MISSING_DECISIONS).
        chunks = [ids[k:k + _CONTEXT_CHUNK] for k in range(0, len(ids), _CONTEXT_CHUNK)]
        if not chunks:
            return set()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    pipe.exists(*(f"{self._p}dec:{i}" for i in chunk))
                counts = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"checking decisions failed: {exc}") from exc
        short = [c for c, n in zip(chunks, counts, strict=True) if n < len(c)]
        res = await self._pipelined("stored_decisions", [
            ("MISSING_DECISIONS", [], [self._p.encode(), *(i.encode() for i in c)]) for c in short]) if short else []
        missing = {c[int(j) - 1] for c, got in zip(short, res, strict=True) for j in got}
        return {i for i in ids if i not in missing}

    # --- budget ----------------------------------------------------------------------------
    def _budget_key(self, campaign: str, period: int) -> str:
        return f"{self._p}budget:{campaign}:{period}"

    def _ledger_keys(self, campaign: str, period: int) -> list[str]:
        return [self._budget_key(campaign, period), f"{self._p}resv:{campaign}:{period}",
                f"{self._p}settled:{campaign}:{period}"]

    async def set_budget(self, campaign: str, period: int, budget_micros: int) -> None:
        await self._write_budget(campaign, period, budget_micros, only_if_unset=False)

    async def init_budget(self, campaign: str, period: int, budget_micros: int) -> None:
        await self._write_budget(campaign, period, budget_micros, only_if_unset=True)

    async def _write_budget(self, campaign: str, period: int, budget_micros: int, *, only_if_unset: bool) -> None:
        if budget_micros < 0:
            raise BudgetError(f"budget must be >= 0 micros, got {budget_micros}")
        write = self.redis.hsetnx if only_if_unset else self.redis.hset
        try:
            await write(self._budget_key(campaign, period), "budget", int(budget_micros))
        except RedisError as exc:
            raise StoreError(f"setting budget failed: {exc}") from exc

    async def budget(self, campaign: str, period: int) -> BudgetState:
        try:
            b, s, r = await self.redis.hmget(self._budget_key(campaign, period), "budget", "spent", "reserved")
        except RedisError as exc:
            raise StoreError(f"reading budget failed: {exc}") from exc
        return BudgetState(int(b or 0), int(s or 0), int(r or 0))

    async def reserve_and_put(self, campaign: str, drafts: Sequence[DecisionDraft], ttl_s: int) -> list[Decision]:
        check_drafts(drafts)
        by_period: dict[int, list[int]] = {}
        for k, d in enumerate(drafts):
            by_period.setdefault(d.period, []).append(k)
        calls: list[tuple[str, Sequence[str], Sequence[Any]]] = []
        for period, ks in by_period.items():
            args: list[Any] = [ttl_s, 3 * DAY_S, ACTIVITY_HALF_LIFE_MS]
            for k in ks:
                d = drafts[k]
                args += [f"{self._p}dec:{d.decision.id}", d.decision.id, int(d.reserve_micros),
                         _decision_enc.encode(d.decision),
                         _decision_enc.encode(d.if_short) if d.if_short is not None else b"",
                         *self._profile_keys(d), max(d.context, 0), int(d.decision.event_time), int(d.search)]
            calls.append(("RESERVE_AND_PUT", self._ledger_keys(campaign, period), args))
        out: list[Decision] = [d.decision for d in drafts]
        for ks, got in zip(by_period.values(), await self._pipelined("reserve_and_put", calls), strict=True):
            for k, g in zip(ks, got, strict=True):
                if isinstance(g, bytes):
                    out[k] = _decode_decision(g, True)
                elif not g:
                    out[k] = cast(Decision, drafts[k].if_short)
        return out

    def _profile_keys(self, d: DecisionDraft) -> tuple[str, str]:
        """The person's profile and the device's share of it that count ``d`` ('' when not counted);
        the device comes first in the share's key, as a (hex) device pseudonym holds no ``:``."""
        if d.context < 0:
            return "", ""
        person, device = d.decision.person_id, d.decision.device_id
        return f"{self._p}ctx:{person}", f"{self._p}ctxdev:{device}:{person}"

    async def settle(self, campaign: str, period: int, reservation_id: str, cost_micros: int) -> bool:
        if cost_micros < 0:
            raise BudgetError(f"cost must be >= 0 micros, got {cost_micros}")
        ok = await self._run("SETTLE", self._ledger_keys(campaign, period),
                             [reservation_id, int(cost_micros), 3 * DAY_S])
        return bool(ok)

    # --- batched effects: one pipeline per batch, one atomic script per item ------------------
    async def record_results(self, effects: Sequence[ResultEffect], ttl_s: int) -> list[tuple[bool, bytes]]:
        head = [self._p.encode(), str(ttl_s).encode(), str(3 * DAY_S).encode()]

        def fields(e: ResultEffect) -> list[bytes]:
            t = e.touch
            return [e.claim_key.encode(), e.device_id.encode(), e.payload, f"{e.campaign}:{e.period}".encode(),
                    e.decision_id.encode(), b"%d" % e.cost_micros, b"0" if t is None else b"1",
                    b"0" if t is None else b"%d" % t.event_time, b"" if t is None else _enc.encode(t),
                    b"0" if t is None else b"%d" % (t.event_time - ttl_s * 1000), b"%d" % e.window_close_ms]

        def wire(e: ResultEffect, out: list[bytes]) -> None:  # fields(e) in RESP: ~half the CPU of packing them
            t = e.touch
            ck, dev, pay = e.claim_key.encode(), e.device_id.encode(), e.payload
            led, dec = f"{e.campaign}:{e.period}".encode(), e.decision_id.encode()
            cost, close = b"%d" % e.cost_micros, b"%d" % e.window_close_ms
            if t is None:
                out += (bulk(len(ck)), ck, bulk(len(dev)), dev, bulk(len(pay)), pay, bulk(len(led)), led,
                        bulk(len(dec)), dec, bulk(len(cost)), cost, b"$1", b"0", b"$1", b"0", b"$0", b"", b"$1", b"0",
                        bulk(len(close)), close)
            else:
                at, touch, drop = b"%d" % t.event_time, _enc.encode(t), b"%d" % (t.event_time - ttl_s * 1000)
                out += (bulk(len(ck)), ck, bulk(len(dev)), dev, bulk(len(pay)), pay, bulk(len(led)), led,
                        bulk(len(dec)), dec, bulk(len(cost)), cost, b"$1", b"1", bulk(len(at)), at,
                        bulk(len(touch)), touch, bulk(len(drop)), drop, bulk(len(close)), close)
        return await self._claimed_chunks("RECORD_RESULTS", head, effects, fields, (11, wire))

    async def record_clicks(self, effects: Sequence[ClickEffect], ttl_s: int) -> list[tuple[bool, bytes]]:
        return await self._claimed_chunks(
            "RECORD_CLICKS", [self._p.encode(), b"%d" % ttl_s], effects,
            lambda e: [e.claim_key.encode(), e.device_id.encode(), e.decision_id.encode(), e.payload])

    async def _claimed_chunks(self, script: str, head: list[bytes], effects: Sequence[_Claimed],
                              fields: Callable[[_Claimed], list[bytes]],
                              wire: tuple[int, Callable[[_Claimed, list[bytes]], None]] | None = None,
                              ) -> list[tuple[bool, bytes]]:
        """Effects through one of the chunked claim scripts (``_CHUNK`` per call, pipelined: few
        commands for the client, and Redis never blocked by one script for long — the bid path
        shares it): (applied, record) each; a claim taken before gives back its stored record.
        ``wire`` = (arguments per effect, ``fields`` appended in RESP form): used when the
        connections take ``RespArgs``; the script's ARGV is the same."""
        calls: list[tuple[str, list[str], list[Any]]] = []
        for start in range(0, len(effects), _CHUNK):
            args: list[Any] = list(head)
            chunk = effects[start:start + _CHUNK]
            if wire is not None and self._resp:
                out: list[bytes] = []
                for e in chunk:
                    wire[1](e, out)
                out.append(b"")
                args.append(RespArgs(wire[0] * len(chunk), b"\r\n".join(out)))
            else:
                for e in chunk:
                    args += fields(e)
            calls.append((script, [], args))
        flat = [x for chunk in await self._pipelined(script.lower(), calls) for x in chunk]
        # applied: the script stored our payload and did not echo it back (redis_lua)
        return [(True, e.payload) if flat[2 * k] else (False, bytes(flat[2 * k + 1])) for k, e in enumerate(effects)]

    async def join_contexts(self, queries: Sequence[JoinQuery]) -> list[JoinContext]:
        calls: list[tuple[str, list[str], list[Any]]] = []
        for k in range(0, len(queries), _CHUNK):
            args: list[Any] = [self._p.encode()]
            for q in queries[k:k + _CHUNK]:
                args += [q.claim_key.encode(), (q.user_id or "").encode(), (q.device_id or "").encode(),
                         b"%d" % q.since_ms]
            calls.append(("JOIN_CONTEXTS", [], args))
        res = [c for chunk in await self._pipelined("join_contexts", calls) for c in chunk]
        return [JoinContext(bytes(stored) if stored else None, person.decode(), _touches(touches, clicks))
                for stored, person, touches, clicks in res]

    async def record_joins(self, effects: Sequence[JoinEffect], ttl_s: int) -> list[tuple[bool, bytes]]:
        calls: list[tuple[str, list[str], list[Any]]] = []
        for k in range(0, len(effects), _CHUNK):
            args: list[Any] = [self._p.encode(), b"%d" % ttl_s]
            for e in effects[k:k + _CHUNK]:
                args += [e.claim_key.encode(), e.payload, e.late_payload, e.conversion_id.encode(),
                         b"%d" % len(e.credits)]
                for d, micros in e.credits:
                    args += [d.encode(), b"%d" % int(micros)]
            calls.append(("RECORD_JOINS", [], args))
        flat = [x for chunk in await self._pipelined("record_joins", calls) for x in chunk]
        # applied with an empty reply: the script stored our payload (see redis_lua)
        return [(True, e.payload) if flat[2 * k] and not flat[2 * k + 1]
                else (bool(flat[2 * k]), bytes(flat[2 * k + 1])) for k, e in enumerate(effects)]

    async def peek_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            raw = await self.redis.mget([f"{self._p}claim:{k}" for k in keys])
        except RedisError as exc:
            raise StoreError(f"peek failed: {exc}") from exc
        return [None if v is None else cast(bytes, v) for v in raw]

    async def credits_many(self, decision_ids: Sequence[str]) -> list[dict[str, int]]:
        raw = await read_each(self.redis, "hgetall", [f"{self._p}credit:{d}" for d in decision_ids],
                              "reading credits failed")
        return [{k.decode(): int(v) for k, v in r.items()} for r in raw]

    async def claim_many(self, items: Sequence[tuple[str, bytes]], ttl_s: int) -> list[tuple[bool, bytes]]:
        if not items:
            return []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, payload in items:
                    pipe.set(f"{self._p}claim:{key}", payload, nx=True, ex=ttl_s, get=True)
                old = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"claim failed: {exc}") from exc
        return [(True, p) if o is None else (False, bytes(o)) for (_, p), o in zip(items, old, strict=True)]

    # --- windows, parked conversions, watermarks ---------------------------------------------
    async def due_windows(self, until_ms: int, limit: int) -> list[str]:
        try:
            ids = await self.redis.zrangebyscore(f"{self._p}windows", "-inf", until_ms, start=0, num=limit)
        except RedisError as exc:
            raise StoreError(f"listing windows failed: {exc}") from exc
        return [cast(bytes, i).decode() for i in ids]

    async def drop_windows(self, decision_ids: Sequence[str]) -> None:
        if decision_ids:
            try:
                await self.redis.zrem(f"{self._p}windows", *decision_ids)
            except RedisError as exc:
                raise StoreError(f"dropping windows failed: {exc}") from exc

    async def park_many(self, items: Sequence[tuple[str, int, bytes]]) -> None:
        keys = [f"{self._p}parked", f"{self._p}parked:data"]
        await self._pipelined("park_many", [
            ("PARK", keys, [x for i, t, payload in items[k:k + _PARK_CHUNK] for x in (i, t, payload)])
            for k in range(0, len(items), _PARK_CHUNK)])

    async def due_parked(self, until_ms: int, limit: int) -> list[tuple[str, bytes]]:
        try:
            ids = cast(list[bytes], await self.redis.zrangebyscore(f"{self._p}parked", "-inf", until_ms,
                                                                    start=0, num=limit))
            if not ids:
                return []
            data = await self.redis.hmget(f"{self._p}parked:data", ids)
        except RedisError as exc:
            raise StoreError(f"listing parked items failed: {exc}") from exc
        return [(i.decode(), cast(bytes, d)) for i, d in zip(ids, data, strict=True) if d is not None]

    async def unpark(self, item_ids: Sequence[str]) -> None:
        if item_ids:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.zrem(f"{self._p}parked", *item_ids)
                    pipe.hdel(f"{self._p}parked:data", *item_ids)
                    await pipe.execute()
            except RedisError as exc:
                raise StoreError(f"unparking failed: {exc}") from exc

    async def advance_watermarks(self, topic: str, marks: dict[int, int]) -> None:
        key = f"{self._p}wm:{topic}"
        await self._pipelined("advance_watermarks", [("ADVANCE_WATERMARK", [key], [p, t]) for p, t in marks.items()])

    async def watermarks_many(self, topics: Sequence[str]) -> list[dict[int, int]]:
        raw = await read_each(self.redis, "hgetall", [f"{self._p}wm:{t}" for t in topics], "reading watermarks failed")
        return [{int(k): int(v) for k, v in r.items()} for r in raw]

    # --- persons: the warehouse user DB ---------------------------------------------------------
    async def export_profiles(self, cursor: str, limit: int) -> tuple[list[PersonProfile], str]:
        # The cursor is "<phase>:<SCAN cursor>": one SCAN pass per key kind naming a person. SCAN
        # visits 10 keys per person asked for: a person has several keys, MATCH keeps one kind.
        phase, scan = (int(x) for x in cursor.split(":")) if cursor else (1, 0)
        head = self._p + _PERSON_KEYS[phase - 1]
        try:
            scan, keys = await self.redis.scan(scan, match=_glob_escape(head) + "*", count=10 * max(1, limit))
        except RedisError as exc:
            raise StoreError(f"scanning persons failed: {exc}") from exc
        persons = [cast(bytes, k).decode()[len(head):] for k in keys]
        rows = []
        if persons:
            packed = await self._run("EXPORT_PROFILES", [], [self._p, phase, *persons])
            rows = [_person_profile(r) for r in msgspec.msgpack.decode(packed)]
        if scan == 0:
            return rows, (f"{phase + 1}:0" if phase < len(_PERSON_KEYS) else "")
        return rows, f"{phase}:{scan}"

    async def import_profiles(self, profiles: Sequence[PersonProfile], ttl_s: int) -> int:
        head: list[Any] = [self._p, self._identity_ttl, ttl_s]
        calls: list[tuple[str, Sequence[str], Sequence[Any]]] = [
            ("IMPORT_PROFILES", [], head + [_profile_enc.encode(_profile_args(r)) for r in profiles[k:k + 100]])
            for k in range(0, len(profiles), 100)]
        return sum(int(n) for n in await self._pipelined("import_profiles", calls))


_profile_enc = msgspec.msgpack.Encoder()


def _activity_args(a: Activity) -> list[str]:
    return [repr(float(a.requests)), repr(float(a.search)), str(int(a.at_ms))]


def _profile_args(r: PersonProfile) -> list[Any]:
    """A profile as one ``IMPORT_PROFILES`` row (numbers as strings: Redis stores them as given)."""
    return [r.person_id, [[d, repr(float(c))] for d, c in r.devices],
            [[str(b), str(n)] for b, n in r.contexts], _activity_args(r.activity),
            [[s.device_id, [[str(b), str(n)] for b, n in s.contexts], *_activity_args(s.activity)] for s in r.shares],
            [[t.decision_id, str(t.event_time), _enc.encode(t).decode()] for t in r.journey], list(r.clicks)]


def _person_profile(r: list[Any]) -> PersonProfile:
    """An ``EXPORT_PROFILES`` entry as a ``PersonProfile``."""
    person, links, prof, touches, clicks, shares = r
    contexts, activity = _profile(prof)
    own = [DeviceShare(shares[j], *_profile(shares[j + 1])) for j in range(0, len(shares), 2)]
    journey = sorted((_touch_dec.decode(t) for t in touches), key=lambda t: (t.event_time, t.decision_id))
    return PersonProfile(person, tuple(sorted((links[j], float(links[j + 1])) for j in range(0, len(links), 2))),
                         contexts, activity, tuple(sorted(own)), tuple(journey), tuple(sorted(clicks)))


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


def _profile(flat: list[Any]) -> tuple[tuple[tuple[int, int], ...], Activity]:
    """A profile hash (HGETALL, flat): its context counts and the activity fields."""
    fields = {str(flat[j]): flat[j + 1] for j in range(0, len(flat), 2)}
    counts = tuple(sorted((int(k), int(v)) for k, v in fields.items() if not k.startswith("_")))
    activity = Activity(float(fields.get("_n", 0)), float(fields.get("_s", 0)), int(fields.get("_t", 0)))
    return counts, activity


_NO_PROFILE: tuple[tuple[tuple[int, int], ...], Activity] = _profile([])  # shared: tuples are immutable
