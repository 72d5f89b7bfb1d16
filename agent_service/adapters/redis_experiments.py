"""Redis :class:`~agent_service.ports.experiments.ExperimentStore`, on the state store's connection.

Key layout (``{p}`` is the state store's prefix, default ``gaelp:``):

=============================  ======  ==================================================  =================
key                            type    content                                             expiry
=============================  ======  ==================================================  =================
{p}xclaim:{effect key}         string  1: the effect was applied (dedupe)                  ttl of the call
{p}xp:{experiment}:{person}    hash    arm, e (exposed), x (value USD), y (spend USD),     ttl of the call
                                       r (requests), nb (no-bids), er (errors)
{p}xa:{experiment}:{arm}       hash    exposed, n, then per ratio (``''`` value/spend;     none (audit)
                                       ``gs_``, ``gn_``, ``ge_``: spend, no-bids, errors
                                       per request) its npos, sx, sy, sxx, syy, sxy
{p}xarms:{experiment}          set     arms with results                                   none
{p}xflush:{experiment}         string  the warehouse flush's checkpoint                    none
=============================  ======  ==================================================  =================

``RECORD_ARM_EFFECTS`` applies a batch of effects, each one atomic step (claim, person, arm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis.exceptions import RedisError

from agent_service.adapters.redis_pipeline import read_each
from agent_service.adapters.redis_store import RedisStore
from agent_service.errors import StoreError
from agent_service.experiments.guardrails import GuardrailStats
from agent_service.experiments.sequential import RatioStats
from agent_service.ports.experiments import ArmEffect, ArmRunning

__all__ = ["RECORD_ARM_EFFECTS", "RedisExperimentStore"]

# ARGV: prefix, ttl, then per effect: key, experiment, arm, person, exposed (0/1), spend, value,
# requests, no-bids, errors. Lua numbers reach Redis as %.17g strings: the float sums round-trip exactly.
RECORD_ARM_EFFECTS = """
local p, ttl = ARGV[1], tonumber(ARGV[2])
local function fmt(v) return string.format('%.17g', v) end
-- one ratio's sums move as the person's totals go from (x, y) to (x + dx, y + dy)
local function fold(ak, tag, x, y, dx, dy)
  local nx, ny = x + dx, y + dy
  if dx ~= 0 then
    redis.call('HINCRBYFLOAT', ak, tag .. 'sx', fmt(dx))
    redis.call('HINCRBYFLOAT', ak, tag .. 'sxx', fmt(nx * nx - x * x))
  end
  if dy ~= 0 then
    redis.call('HINCRBYFLOAT', ak, tag .. 'sy', fmt(dy))
    redis.call('HINCRBYFLOAT', ak, tag .. 'syy', fmt(ny * ny - y * y))
  end
  if dx ~= 0 or dy ~= 0 then redis.call('HINCRBYFLOAT', ak, tag .. 'sxy', fmt(nx * ny - x * y)) end
  if x <= 0 and nx > 0 then redis.call('HINCRBY', ak, tag .. 'npos', 1) end
end
local out = {}
for i = 3, #ARGV, 10 do
  local exp, person = ARGV[i + 1], ARGV[i + 3]
  if redis.call('SET', p .. 'xclaim:' .. ARGV[i], '1', 'NX', 'EX', ttl) then
    local pk = p .. 'xp:' .. exp .. ':' .. person
    local cur = redis.call('HMGET', pk, 'arm', 'e', 'x', 'y', 'r', 'nb', 'er')
    local arm = cur[1]
    local x, y = tonumber(cur[3]) or 0, tonumber(cur[4]) or 0
    local r, nb, er = tonumber(cur[5]) or 0, tonumber(cur[6]) or 0, tonumber(cur[7]) or 0
    local ak
    if not arm then
      arm = ARGV[i + 2]
      ak = p .. 'xa:' .. exp .. ':' .. arm
      redis.call('HSET', pk, 'arm', arm)
      redis.call('HINCRBY', ak, 'n', 1)
      redis.call('SADD', p .. 'xarms:' .. exp, arm)
    else
      ak = p .. 'xa:' .. exp .. ':' .. arm
    end
    if ARGV[i + 4] == '1' and not cur[2] then
      redis.call('HSET', pk, 'e', '1')
      redis.call('HINCRBY', ak, 'exposed', 1)
    end
    local dy, dx = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
    local dr, dnb, der = tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9])
    fold(ak, '', x, y, dx, dy)
    fold(ak, 'gs_', y, r, dy, dr)
    fold(ak, 'gn_', nb, r, dnb, dr)
    fold(ak, 'ge_', er, r, der, dr)
    redis.call('HSET', pk, 'x', fmt(x + dx), 'y', fmt(y + dy), 'r', r + dr, 'nb', nb + dnb, 'er', er + der)
    redis.call('EXPIRE', pk, ttl)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

_CHUNK = 100
"""Effects per script call (a call blocks Redis while it runs)."""


class RedisExperimentStore:
    """See the module docstring.

    :param store: the started state store whose connection and prefix are used.
    """

    def __init__(self, store: RedisStore, prefix: str = "gaelp:") -> None:
        self._store = store
        self._p = prefix
        self._script: Any = None

    async def record_arm_effects(self, effects: Sequence[ArmEffect], ttl_s: int) -> list[bool]:
        if self._script is None:
            self._script = self._store.redis.register_script(RECORD_ARM_EFFECTS)
        out: list[bool] = []
        for k in range(0, len(effects), _CHUNK):
            args: list[Any] = [self._p, max(1, int(ttl_s))]
            for e in effects[k:k + _CHUNK]:
                args += [e.key, e.experiment, e.arm, e.person_id, int(e.exposed), repr(float(e.spend_usd)),
                         repr(float(e.value_usd)), int(e.requests), int(e.no_bids), int(e.errors)]
            try:
                res = await self._script(keys=[], args=args)
            except RedisError as exc:
                raise StoreError(f"recording experiment effects failed: {exc}") from exc
            out += [bool(r) for r in res]
        return out

    async def arm_totals(self, experiment: str) -> dict[str, ArmRunning]:
        r, failed = self._store.redis, f"reading experiment '{experiment}' failed"
        try:
            arms = sorted(cast(bytes, a).decode() for a in await r.smembers(f"{self._p}xarms:{experiment}"))
        except RedisError as exc:
            raise StoreError(f"{failed}: {exc}") from exc
        rows = await read_each(r, "hgetall", [f"{self._p}xa:{experiment}:{arm}" for arm in arms], failed)
        out = {}
        for arm, raw in zip(arms, rows, strict=True):
            h = {k.decode(): v for k, v in raw.items()}
            n = int(h.get("n", 0))

            def ratio(tag: str, h: dict[str, Any] = h, n: int = n) -> RatioStats:
                sx, sy, sxx, syy, sxy = (float(h.get(f"{tag}{f}", 0)) for f in ("sx", "sy", "sxx", "syy", "sxy"))
                return RatioStats(n, sx, sy, sxx, syy, sxy, int(h.get(f"{tag}npos", 0)))

            out[arm] = ArmRunning(int(h.get("exposed", 0)), ratio(""),
                                  GuardrailStats(ratio("gs_"), ratio("gn_"), ratio("ge_")))
        return out

    async def flush_state(self, experiment: str) -> bytes | None:
        try:
            raw = await self._store.redis.get(f"{self._p}xflush:{experiment}")
        except RedisError as exc:
            raise StoreError(f"reading experiment '{experiment}' flush state failed: {exc}") from exc
        return None if raw is None else bytes(cast(bytes, raw))

    async def set_flush_state(self, experiment: str, state: bytes) -> None:
        try:
            await self._store.redis.set(f"{self._p}xflush:{experiment}", state)
        except RedisError as exc:
            raise StoreError(f"writing experiment '{experiment}' flush state failed: {exc}") from exc
