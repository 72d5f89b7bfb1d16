"""GAELP's own errors, mapped once at the edge.

Hierarchy::

    GaelpError
    ├── ConfigError            a setting is wrong; names the key and how to fix it
    ├── DecodeError            an input record or request does not match its contract;
    │                          names the field (a JSON path such as ``$.imp[0].bidfloor``)
    ├── BudgetError            a money operation was refused (never raised for "no budget left",
    │                          which is an ordinary no-bid)
    ├── StoreError             the state store failed (adapters translate redis errors here)
    ├── BusError               the event bus failed (adapters translate Kafka errors here)
    └── ModelError             a model or weight update is invalid (e.g. NaN weights)
        └── CorruptModelError  a published weights blob fails its checksum or is incomplete

Adapters translate library exceptions with ``raise ... from exc``; the domain never catches
bare ``Exception``.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "BusError",
    "ConfigError",
    "CorruptModelError",
    "DecodeError",
    "GaelpError",
    "ModelError",
    "StoreError",
]


class GaelpError(Exception):
    """Base class of every error GAELP raises on purpose."""


class ConfigError(GaelpError):
    """A configuration value is missing or invalid.

    :param key: dotted key of the setting, e.g. ``"budget.daily_usd"``.
    :param reason: what is wrong and how to fix it.
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"config key '{key}': {reason}")


class DecodeError(GaelpError):
    """An input does not match its wire contract.

    :param field: JSON path of the offending field (``$`` for the whole document).
    :param reason: what is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class BudgetError(GaelpError):
    """A budget operation was malformed (negative amount, unknown period)."""


class StoreError(GaelpError):
    """The state store could not complete an operation."""


class BusError(GaelpError):
    """The event bus could not complete an operation."""


class ModelError(GaelpError):
    """A model, checkpoint or weight update is invalid."""


class CorruptModelError(ModelError):
    """A published weights blob does not match its checksum, or is missing or truncated.

    Bidders refuse it and keep serving the last good version.
    """
