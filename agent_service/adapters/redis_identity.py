"""The production identity graph on Redis: one atomic Lua script per link, pipelined.

Key layout (``{p}`` is ``IdentityConfig.key_prefix``, hash-tagged so every key shares a
cluster slot, as the scripts touch keys they compute)::

    {p}e              hash  link_id -> JSON {a, b, s, ip, st}   the edge log, every link ever seen
    {p}adj:{node}     hash  link_id -> "score|other"            accepted links of a node
    {p}root           hash  node -> root                        nodes of multi-node components
    {p}mem:{root}     set   members of a multi-node component
    {p}dev            set   every device node seen
    {p}ipd:{ip}       set   device nodes seen on an IP (until it is found shared)
    {p}ipe:{ip}       set   accepted link ids citing the IP
    {p}ipx            set   shared IPs (fan-out cap exceeded)

Links are applied by a Lua script, a batch of links per call, each call atomic, so
concurrent stream workers cannot interleave half a merge; ingest pipelines several
``EVALSHA`` calls per round trip. Splits
(revocation, IP found shared) search the component breadth-first inside the script;
components are capped, so scripts stay short. The semantics are those of
:class:`~agent_service.identity.memory.InMemoryIdentityGraph`, and the contract tests
check that both give the same person ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agent_service.adapters.redis_pipeline import HiredisPackConnection, run_scripts
from agent_service.errors import StoreError
from agent_service.identity.config import IdentityConfig
from agent_service.identity.model import GraphLink, Resolution, device_node, max_product_confidence

__all__ = ["RedisIdentityGraph"]

_RESOLVE_CHUNK = 500
"""Devices per resolve script call."""

_LIB = r"""
local P = KEYS[1]
local function pref(n) if string.sub(n, 1, 2) == 'u:' then return '0' .. n end return '1' .. n end
local function root_of(n) return redis.call('HGET', P .. 'root', n) or n end
local function members(r)
  local m = redis.call('SMEMBERS', P .. 'mem:' .. r)
  if #m == 0 then return {r} end
  return m
end
local function accepted(st) return st == 'merged' or st == 'linked' end
local function sadd_all(key, items)
  for i = 1, #items, 1000 do
    redis.call('SADD', key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local function reach(start)
  local seen = {[start] = true}
  local q = {start}
  local i = 1
  while i <= #q do
    local vals = redis.call('HVALS', P .. 'adj:' .. q[i])
    i = i + 1
    for _, v in ipairs(vals) do
      local other = string.sub(v, string.find(v, '|', 1, true) + 1)
      if not seen[other] then seen[other] = true; q[#q + 1] = other end
    end
  end
  return seen, q
end
local function relabel(r, part)
  if #part == 1 then
    redis.call('HDEL', P .. 'root', part[1])
    if part[1] == r then redis.call('DEL', P .. 'mem:' .. r) end
    return
  end
  redis.call('DEL', P .. 'mem:' .. r)
  for _, m in ipairs(part) do redis.call('HSET', P .. 'root', m, r) end
  sadd_all(P .. 'mem:' .. r, part)
end
local function detach(id, new_status)
  local raw = redis.call('HGET', P .. 'e', id)
  local e = cjson.decode(raw)
  local was = e.st
  e.st = new_status
  redis.call('HSET', P .. 'e', id, cjson.encode(e))
  if not accepted(was) or e.a == e.b then return end
  redis.call('HDEL', P .. 'adj:' .. e.a, id)
  redis.call('HDEL', P .. 'adj:' .. e.b, id)
  if e.ip ~= '' then redis.call('SREM', P .. 'ipe:' .. e.ip, id) end
  local seen_a, part_a = reach(e.a)
  if seen_a[e.b] then return end
  local _, part_b = reach(e.b)
  local r = root_of(e.a)
  local keep, split = part_a, part_b
  if not seen_a[r] then keep, split = part_b, part_a end
  local best = split[1]
  for _, m in ipairs(split) do if pref(m) < pref(best) then best = m end end
  relabel(r, keep)
  relabel(best, split)
end
local function attach(id, a, b, s, maxn)
  local ra, rb = root_of(a), root_of(b)
  if ra == rb then
    if a ~= b then
      redis.call('HSET', P .. 'adj:' .. a, id, s .. '|' .. b)
      redis.call('HSET', P .. 'adj:' .. b, id, s .. '|' .. a)
    end
    return 'linked'
  end
  local na = math.max(redis.call('SCARD', P .. 'mem:' .. ra), 1)
  local nb = math.max(redis.call('SCARD', P .. 'mem:' .. rb), 1)
  if na + nb > maxn then return 'capped' end
  local win, lose = ra, rb
  if nb > na or (nb == na and pref(rb) < pref(ra)) then win, lose = rb, ra end
  local moving = members(lose)
  redis.call('HSET', P .. 'root', win, win)
  redis.call('SADD', P .. 'mem:' .. win, win)
  for _, m in ipairs(moving) do redis.call('HSET', P .. 'root', m, win) end
  sadd_all(P .. 'mem:' .. win, moving)
  redis.call('DEL', P .. 'mem:' .. lose)
  redis.call('HSET', P .. 'adj:' .. a, id, s .. '|' .. b)
  redis.call('HSET', P .. 'adj:' .. b, id, s .. '|' .. a)
  return 'merged'
end
"""

_ADD = _LIB + r"""
local thr, maxn, maxip = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for k = 4, #ARGV, 6 do
  local id, a, b, det, s, ip = ARGV[k], ARGV[k + 1], ARGV[k + 2], ARGV[k + 3] == '1', ARGV[k + 4], ARGV[k + 5]
  local prev = redis.call('HGET', P .. 'e', id)
  local st = false
  if prev then
    st = cjson.decode(prev).st
  else
    redis.call('SADD', P .. 'dev', a)
    if string.sub(b, 1, 2) == 'd:' then redis.call('SADD', P .. 'dev', b) end
    if ip ~= '' then
      if redis.call('SISMEMBER', P .. 'ipx', ip) == 1 then
        st = 'ip_fanout'
      else
        redis.call('SADD', P .. 'ipd:' .. ip, a, b)
        if redis.call('SCARD', P .. 'ipd:' .. ip) > maxip then
          redis.call('SADD', P .. 'ipx', ip)
          local ids = redis.call('SMEMBERS', P .. 'ipe:' .. ip)
          table.sort(ids)
          for _, eid in ipairs(ids) do detach(eid, 'ip_fanout') end
          redis.call('DEL', P .. 'ipe:' .. ip, P .. 'ipd:' .. ip)
          st = 'ip_fanout'
        end
      end
    end
    if not st and not det and tonumber(s) < thr then st = 'below_threshold' end
    if not st then st = attach(id, a, b, s, maxn) end
    if ip ~= '' and accepted(st) then redis.call('SADD', P .. 'ipe:' .. ip, id) end
    redis.call('HSET', P .. 'e', id, cjson.encode({a = a, b = b, s = s, ip = ip, st = st}))
  end
  out[#out + 1] = st
end
return out
"""

_REVOKE = _LIB + r"""
local id = ARGV[1]
local prev = redis.call('HGET', P .. 'e', id)
if not prev then
  redis.call('HSET', P .. 'e', id, cjson.encode({a = '', b = '', s = '0', ip = '', st = 'revoked'}))
  return false
end
local was = cjson.decode(prev).st
detach(id, 'revoked')
return was
"""


# Read only: the components of many nodes in one call (a command per member from the client cost
# more than the graph work). KEYS: prefix. ARGV: nodes. Returns {root or false per node, {per
# distinct root: {root, member, {its adjacency values}, member, ...}}}.
_RESOLVE = r"""
local P = KEYS[1]
local roots, comps, seen = {}, {}, {}
for i, n in ipairs(ARGV) do
  local r = redis.call('HGET', P .. 'root', n)
  roots[i] = r
  if r and not seen[r] then
    seen[r] = true
    local comp = {r}
    for _, m in ipairs(redis.call('SMEMBERS', P .. 'mem:' .. r)) do
      comp[#comp + 1] = m
      comp[#comp + 1] = redis.call('HVALS', P .. 'adj:' .. m)
    end
    comps[#comps + 1] = comp
  end
end
return {roots, comps}
"""

class RedisIdentityGraph:
    """Identity graph in Redis (see the module docstring for the key layout).

    :param client: a ``redis.asyncio.Redis`` (the caller owns its lifecycle unless
        created by :meth:`from_url`).
    :param config: threshold, caps and key prefix.
    :param batch_size: links applied by one atomic script call in :meth:`add_links`.
    :param pipeline_depth: script calls pipelined per round trip.
    """

    def __init__(self, client: aioredis.Redis, config: IdentityConfig | None = None, batch_size: int = 100,
                 pipeline_depth: int = 10) -> None:
        self.config = config or IdentityConfig()
        self._r = client
        self._p = self.config.key_prefix
        if batch_size < 1 or pipeline_depth < 1:
            raise ValueError("batch_size and pipeline_depth must be >= 1")
        self._batch_size = batch_size
        self._pipeline_depth = pipeline_depth
        self._add = client.register_script(_ADD)
        self._revoke = client.register_script(_REVOKE)
        self._resolve = client.register_script(_RESOLVE)
        self._owned = False

    @classmethod
    def from_url(cls, url: str, config: IdentityConfig | None = None, batch_size: int = 100,
                 pipeline_depth: int = 10) -> RedisIdentityGraph:
        """Connect to ``url`` (``redis://HOST:PORT/DB``); :meth:`close` closes the client."""
        # C-packed commands, as the store's (a batch of links is ~6 arguments per link)
        graph = cls(aioredis.Redis.from_url(url, connection_class=HiredisPackConnection), config, batch_size,
                    pipeline_depth)
        graph._owned = True
        return graph

    # ------------------------------------------------------------------------------------
    async def add_links(self, links: Sequence[GraphLink]) -> list[str]:
        """Apply ``links`` in order: ``batch_size`` links per atomic script call, and
        ``pipeline_depth`` calls per round trip."""
        cfg = self.config
        fixed = [str(cfg.merge_threshold), str(cfg.max_component_nodes), str(cfg.max_ip_devices)]
        step = self._batch_size * self._pipeline_depth
        out: list[str] = []
        try:
            for start in range(0, len(links), step):
                calls = []
                for b0 in range(start, min(start + step, len(links)), self._batch_size):
                    args = list(fixed)
                    for link in links[b0:b0 + self._batch_size]:
                        a, b = link.nodes
                        det = link.deterministic
                        args += [link.link_id, a, b, "1" if det else "0", repr(float(link.score)),
                                 "" if det else link.ip]
                    calls.append((self._add, [self._p], args))
                for statuses in await run_scripts(self._r, calls):
                    out.extend(_text(x) for x in statuses)
        except RedisError as exc:
            raise StoreError(f"identity add_links failed: {exc}") from exc
        return out

    async def revoke(self, link_id: str) -> str | None:
        """Revoke ``link_id``; its previous status, None if it had not arrived."""
        try:
            prev = await self._revoke(keys=[self._p], args=[link_id])
        except RedisError as exc:
            raise StoreError(f"identity revoke failed: {exc}") from exc
        return None if prev is None else _text(prev)

    async def resolve(self, device_id: str) -> Resolution:
        """The person of ``device_id``."""
        return (await self.resolve_many([device_id]))[device_id]

    async def resolve_many(self, device_ids: Sequence[str]) -> dict[str, Resolution]:
        """Persons of many devices: roots, members and their adjacency in one read-only script
        call per ``_RESOLVE_CHUNK`` devices, the calls pipelined (one round trip)."""
        nodes = [device_node(d) for d in device_ids]
        chunks = [nodes[k:k + _RESOLVE_CHUNK] for k in range(0, len(nodes), _RESOLVE_CHUNK)]
        try:
            replies = await run_scripts(self._r, [(self._resolve, [self._p], chunk) for chunk in chunks])
        except RedisError as exc:
            raise StoreError(f"identity resolve failed: {exc}") from exc
        roots: list[Any] = []
        member_sets: dict[str, set[str]] = {}
        adjacency: dict[str, list[Any]] = {}
        for chunk_roots, comps in replies:
            roots += chunk_roots
            for comp in comps:
                members = {_text(m) for m in comp[1::2]}
                member_sets[_text(comp[0])] = members
                adjacency.update(zip((_text(m) for m in comp[1::2]), comp[2::2], strict=True))
        confidences: dict[str, dict[str, float]] = {}
        for r, members in member_sets.items():
            edges = []
            for m in members:
                for raw in adjacency.get(m, []):
                    score, other = _text(raw).split("|", 1)
                    edges.append((m, other, float(score)))
            confidences[r] = max_product_confidence(r, edges)
        out = {}
        for device, node, root in zip(device_ids, nodes, roots, strict=True):
            if root is None:
                out[device] = Resolution(node, 1.0, 1)
            else:
                r = _text(root)
                members = member_sets[r]
                count = sum(1 for m in members if m.startswith("d:"))
                out[device] = Resolution(r, confidences[r].get(node, 0.0), max(count, 1))
        return out

    async def assignments(self) -> dict[str, str]:
        """Device id → person id for every device seen."""
        try:
            devices = await self._r.smembers(self._p + "dev")
            roots = await self._r.hgetall(self._p + "root")
        except RedisError as exc:
            raise StoreError(f"identity assignments failed: {exc}") from exc
        root_of = {_text(k): _text(v) for k, v in roots.items()}
        return {_text(d)[2:]: root_of.get(_text(d), _text(d)) for d in devices}

    async def clear(self) -> None:
        """Delete every identity key under the prefix (tests and benches)."""
        try:
            keys = [k async for k in self._r.scan_iter(match=_glob_escape(self._p) + "*", count=1000)]
            for i in range(0, len(keys), 1000):
                await self._r.delete(*keys[i:i + 1000])
        except RedisError as exc:
            raise StoreError(f"identity clear failed: {exc}") from exc

    async def close(self) -> None:
        """Close the client if this graph created it."""
        if self._owned:
            await self._r.aclose()


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)
