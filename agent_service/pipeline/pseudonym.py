"""Pseudonymous ids: raw user and device ids are replaced at the service's edge.

Every raw id that enters (``device.ifa``, ``user.buyeruid``/``user.id``, the IP+UA fallback,
conversions' ``user_id``/``device_id``, identity links' ``device_id``/``person_id``/
``other_device_id``/``ip``) becomes a keyed BLAKE2b digest (a MAC) under a secret salt from
the environment, ``GAELP_ID_SALT``.
The mapping is deterministic for a given salt, so joins across topics and restarts still
match, but without the salt an id can be neither recovered nor re-computed from a guess.
Nothing downstream of the edge — Redis keys and values, decisions, experience, dead letters,
logs — ever holds a raw id.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from agent_service.errors import ConfigError

__all__ = ["ENV_SALT", "ID_FIELDS", "Pseudonymizer", "redact"]

ENV_SALT = "GAELP_ID_SALT"
ID_FIELDS = frozenset({"ifa", "buyeruid", "user_id", "device_id", "person_id", "other_device_id", "ip", "ipv6", "ua",
                       "didsha1", "didmd5", "dpidsha1", "dpidmd5", "macsha1", "macmd5"})
"""JSON keys whose values are personal ids (``user.id`` is handled by its parent)."""

log = logging.getLogger(__name__)


class Pseudonymizer:
    """Maps raw ids to salted digests (24 hex characters, 96 bits).

    :param salt: the secret key (at least 16 bytes).
    """

    def __init__(self, salt: bytes) -> None:
        if len(salt) < 16:
            raise ConfigError(ENV_SALT, "the id salt must be at least 16 bytes")
        self._key = hashlib.blake2b(salt, digest_size=32).digest()

    def __call__(self, raw: str) -> str:
        """The pseudonym of ``raw``."""
        return hashlib.blake2b(raw.encode(), key=self._key, digest_size=12).hexdigest()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, required: bool = False) -> Pseudonymizer:
        """The salt from ``GAELP_ID_SALT``; without it a random per-process salt (embedded runs
        only: pseudonyms then do not survive a restart), or ``ConfigError`` when ``required``."""
        env = os.environ if env is None else env
        salt = env.get(ENV_SALT)
        if not salt:
            if required:
                raise ConfigError(ENV_SALT, "set a secret salt (>= 16 characters) for pseudonymising ids; "
                                            "it must stay the same across restarts")
            return cls(secrets.token_bytes(32))
        return cls(salt.encode())


def redact(value: Any, ids: Pseudonymizer, parent: str = "") -> Any:
    """A JSON value with every personal id replaced by its pseudonym (for dead letters)."""
    if isinstance(value, dict):
        return {k: (ids(str(v)) if isinstance(v, str | int) and not isinstance(v, bool)
                    and (k in ID_FIELDS or (k == "id" and parent == "user")) else redact(v, ids, k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, ids, parent) for v in value]
    return value
