"""The canary port on Redis: one plan and one set of per-arm tallies for every bidder on every host.

Key layout (``{p}`` is the prefix, default ``gaelp:canary:``; person ids are pseudonyms):

=================================  ======  ===================================================  ==========
key                                type    content                                              expiry
=================================  ======  ===================================================  ==========
{p}plan                            string  the :class:`CanaryPlan`, JSON                        none
{p}{exp}:{arm}:{field}             hash    person → integer total (``FIELDS``: requests, ...)   none
{p}{exp}:{arm}:sum                hash    the arm's ``ArmSummary``: n, s{i}, p{i}_{j}, pos{i}    none
{p}{exp}:done:{key}                string  a tally batch already applied (exactly once)         retention
=================================  ======  ===================================================  ==========

``ADD`` (Lua) claims the batch's key and applies its increments in one atomic step, so a
redelivered or retried batch changes nothing. The same step moves the arm's sums by the difference a
person's new totals make (a person's first candidate tally takes their control totals out of the
control sums), so ``summary`` reads two small hashes whatever the number of persons. Bidders read the plan with one ``GET`` per poll,
never per request. Library errors become :class:`~agent_service.errors.StoreError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agent_service.adapters.redis_pipeline import read_each, run_scripts
from agent_service.errors import StoreError
from agent_service.ports.canary import ARMS, FIELDS, SCALE, ArmSummary, ArmTally, ArmTotals, CanaryPlan
from agent_service.units import DAY_S

__all__ = ["RedisCanaryStore"]

_ADD = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local p = ARGV[2]
local fields = {FIELDS_}
local scale = {SCALE_}
local F = #fields
local function totals(arm, person)
  local v = {}
  for j = 1, F do v[j] = tonumber(redis.call('HGET', p .. arm .. ':' .. fields[j], person)) or 0 end
  return v
end
local function present(arm, person)
  return redis.call('HEXISTS', p .. arm .. ':' .. fields[1], person) == 1
end
local function fmt(x) return string.format('%.17g', x) end
-- the arm's sums move from a person's old totals to the new ones (dn: persons joining or leaving)
local function shift(arm, old, new, dn)
  local k = p .. arm .. ':sum'
  if dn ~= 0 then redis.call('HINCRBY', k, 'n', dn) end
  for i = 1, F do
    local o, w = old[i] * scale[i], new[i] * scale[i]
    if w ~= o then redis.call('HINCRBYFLOAT', k, 's' .. i, fmt(w - o)) end
    if (o > 0) ~= (w > 0) then redis.call('HINCRBY', k, 'pos' .. i, (w > 0) and 1 or -1) end
    for j = i, F do
      local d = w * new[j] * scale[j] - o * old[j] * scale[j]
      if d ~= 0 then redis.call('HINCRBYFLOAT', k, 'p' .. i .. '_' .. j, fmt(d)) end
    end
  end
end
local zero = {}
for j = 1, F do zero[j] = 0 end
local i = 3
while i <= #ARGV do
  local arm, person = ARGV[i], ARGV[i + 1]
  local was = present(arm, person)
  local old = was and totals(arm, person) or zero
  local new = {}
  for j = 1, F do
    local v = tonumber(ARGV[i + 1 + j])
    new[j] = old[j] + v
    if v ~= 0 or j == 1 then redis.call('HINCRBY', p .. arm .. ':' .. fields[j], person, v) end
  end
  if arm == 'candidate' then
    if not was and present('control', person) then shift('control', totals('control', person), zero, -1) end
    shift('candidate', old, new, was and 0 or 1)
  elseif not present('candidate', person) then
    shift('control', old, new, was and 0 or 1)
  end
  i = i + 2 + F
end
return 1
""".replace("FIELDS_", ", ".join(f"'{f}'" for f in FIELDS)).replace("SCALE_", ", ".join(repr(x) for x in SCALE))

_plan_dec = msgspec.json.Decoder(CanaryPlan)


class RedisCanaryStore:
    """See the module docstring.

    :param url: ``redis://HOST:PORT/DB``.
    :param prefix: key prefix.
    :param retention_s: how long an applied batch key is remembered (longer than any redelivery).
    """

    def __init__(self, url: str, prefix: str = "gaelp:canary:", retention_s: int = 16 * DAY_S) -> None:
        self.url, self.prefix, self.retention_s = url, prefix, retention_s
        self._r: aioredis.Redis | None = None
        self._add: Any = None

    async def start(self) -> None:
        try:
            self._r = aioredis.Redis.from_url(self.url, socket_timeout=5.0, socket_connect_timeout=2.0,
                                              retry_on_timeout=True)
            await self._r.ping()
        except RedisError as exc:
            raise StoreError(f"canary store: cannot reach Redis at {self.url}: {exc}") from exc
        self._add = self._r.register_script(_ADD)

    async def stop(self) -> None:
        if self._r is not None:
            await self._r.aclose()
            self._r = None

    async def __aenter__(self) -> RedisCanaryStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def _redis(self) -> aioredis.Redis:
        if self._r is None:
            raise StoreError("RedisCanaryStore used before start()")
        return self._r

    async def put_plan(self, plan: CanaryPlan) -> None:
        try:
            await self._redis.set(f"{self.prefix}plan", msgspec.json.encode(plan))
        except RedisError as exc:
            raise StoreError(f"canary store at {self.url}: writing the plan failed: {exc}") from exc

    async def plan(self) -> CanaryPlan | None:
        try:
            raw = await self._redis.get(f"{self.prefix}plan")
        except RedisError as exc:
            raise StoreError(f"canary store at {self.url}: reading the plan failed: {exc}") from exc
        return None if raw is None else _plan_dec.decode(raw)

    async def add(self, experiment_id: str, batches: Sequence[tuple[str, Sequence[ArmTally]]]) -> list[bool]:
        exp = f"{self.prefix}{experiment_id}:"
        calls = []
        for key, tallies in batches:
            args: list[Any] = [self.retention_s, exp]
            for t in tallies:
                if t.arm not in ARMS:
                    raise ValueError(f"arm must be one of {ARMS}, got {t.arm!r}")
                args += [t.arm, t.person_id, *(getattr(t, f) for f in FIELDS)]
            calls.append((self._add, [f"{exp}done:{key}"], args))
        try:
            return [bool(r) for r in await run_scripts(self._redis, calls)]
        except RedisError as exc:
            raise StoreError(f"canary store at {self.url}: adding tallies failed: {exc}") from exc

    async def totals(self, experiment_id: str) -> dict[str, ArmTotals]:
        exp = f"{self.prefix}{experiment_id}:"
        got = await read_each(self._redis, "hgetall", [f"{exp}{arm}:{f}" for arm in ARMS for f in FIELDS],
                              f"canary store at {self.url}: reading tallies failed")
        out = {}
        for a, arm in enumerate(ARMS):
            rows: dict[str, list[int]] = {}
            for j in range(len(FIELDS)):
                for person, v in got[a * len(FIELDS) + j].items():
                    rows.setdefault(person.decode(), [0] * len(FIELDS))[j] = int(v)
            out[arm] = ArmTotals.from_rows(rows)
        return out

    async def summary(self, experiment_id: str) -> dict[str, ArmSummary]:
        exp = f"{self.prefix}{experiment_id}:"
        got = await read_each(self._redis, "hgetall", [f"{exp}{arm}:sum" for arm in ARMS],
                              f"canary store at {self.url}: reading the sums failed")
        F = len(FIELDS)
        out = {}
        for arm, raw in zip(ARMS, got, strict=True):
            h = {k.decode(): float(v) for k, v in raw.items()}
            products = np.zeros((F, F))
            for i in range(F):
                for j in range(i, F):
                    products[i, j] = products[j, i] = h.get(f"p{i + 1}_{j + 1}", 0.0)
            out[arm] = ArmSummary(int(h.get("n", 0)), np.array([h.get(f"s{i + 1}", 0.0) for i in range(F)]), products,
                                  np.array([int(h.get(f"pos{i + 1}", 0)) for i in range(F)]))
        return out
