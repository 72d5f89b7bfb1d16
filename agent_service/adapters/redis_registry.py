"""The model registry on Redis: one registry shared by every bidder on every host.

Key layout (``{p}`` is the prefix, default ``gaelp:model:``):

=====================  ======  ===============================================================
key                    type    content
=====================  ======  ===============================================================
{p}next                string  version allocator (``INCR``): two publishers never share a number
{p}latest              string  the newest visible version (only ever raised, by ``PUBLISH``)
{p}versions            zset    versions held, scored by number
{p}blob:{v}            string  ``torch.save`` of the state dict
{p}sha:{v}             string  its SHA-256, hex
channel {p}published   pubsub  each version as it becomes visible
=====================  ======  ===============================================================

``PUBLISH`` (Lua, one atomic step) stores blob and checksum, adds the version, raises
``latest`` if this version is newer (publishers may finish out of order) and announces it; so a
reader never sees a version whose blob is incomplete. Versions older than the newest ``keep``
are dropped (never the latest). Library errors become :class:`~agent_service.errors.StoreError`
— a bidder keeps serving what it has while Redis is away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agent_service.adapters.registry import from_blob, to_blob
from agent_service.errors import ModelError, StoreError
from agent_service.ports.registry import checksum, rollback, verified

__all__ = ["RedisRegistry"]

_PUBLISH = """
local v = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], v, ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[4]) or '0')
if v > cur then
  redis.call('SET', KEYS[4], ARGV[1])
  cur = v
end
local keep = tonumber(ARGV[4])
local n = redis.call('ZCARD', KEYS[3])
if n > keep then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[3], 0, n - keep - 1)) do
    if tonumber(old) ~= cur then
      redis.call('DEL', ARGV[5] .. 'blob:' .. old, ARGV[5] .. 'sha:' .. old)
      redis.call('ZREM', KEYS[3], old)
    end
  end
end
redis.call('PUBLISH', ARGV[5] .. 'published', ARGV[1])
return cur
"""


class RedisRegistry:
    """See the module docstring.

    :param url: ``redis://HOST:PORT/DB``.
    :param prefix: key prefix of this registry (one model lineage).
    :param keep: versions kept (older ones are deleted on publish; the latest always stays).
    """

    def __init__(self, url: str, prefix: str = "gaelp:model:", keep: int = 50) -> None:
        if keep < 2:
            raise ValueError("keep must be >= 2 (a rollback needs an earlier version)")
        self.url, self.prefix, self.keep = url, prefix, keep
        self._r = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0,
                                       retry_on_timeout=True)
        self._publish = self._r.register_script(_PUBLISH)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except RedisError as exc:
            raise StoreError(f"model registry at {self.url}: {what} failed: {exc}") from exc

    def latest_version(self) -> int:
        return int(self._call("reading the latest version", self._r.get, f"{self.prefix}latest") or 0)

    def publish(self, state: dict[str, Any]) -> int:
        blob = to_blob(state)
        p = self.prefix
        version = int(self._call("allocating a version", self._r.incr, f"{p}next"))
        self._call("publishing", self._publish,
                   [f"{p}blob:{version}", f"{p}sha:{version}", f"{p}versions", f"{p}latest"],
                   [version, blob, checksum(blob), self.keep, p])
        return version

    def load(self, version: int) -> dict[str, Any]:
        p = self.prefix
        blob, sha = self._call("loading", self._r.mget, [f"{p}blob:{version}", f"{p}sha:{version}"])
        if blob is None and sha is None and version > self.latest_version():
            raise ModelError(f"no model version {version} in the registry at {p}")
        return from_blob(verified(blob, sha.decode() if sha is not None else None, version), version)

    def versions(self) -> list[int]:
        return sorted(int(v) for v in self._call("listing versions", self._r.zrange, f"{self.prefix}versions", 0, -1))

    def rollback(self) -> int:
        return rollback(self)

    async def notices(self) -> AsyncIterator[int]:
        """Versions as they are published (pub/sub; messages sent while disconnected are lost,
        so readers also poll ``latest_version``)."""
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2.0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(f"{self.prefix}published")
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is not None and msg.get("type") == "message":
                    yield int(msg["data"])
        except RedisError as exc:
            raise StoreError(f"model registry notices at {self.url}: {exc}") from exc
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except RedisError:
                pass

    def close(self) -> None:
        self._r.close()
