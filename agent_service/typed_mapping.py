"""Frozen dataclasses from parsed TOML, every key checked: the one loader behind GAELP's
configuration (``agent_service.config``) and the simulator's calibration files.

An unknown key, a wrong type or a value the dataclass's ``__post_init__`` refuses raises
:class:`~agent_service.errors.ConfigError` naming the dotted path in the file
(``warehouse.backend``, ``channels.social.competitor_cpm``, ``segments[2].share``).
Supported field types: nested dataclasses, ``tuple[T, ...]``, ``dict[str, T]`` (a TOML
table), unions (``T | None``), int,
float (ints are accepted), str and bool.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from agent_service.errors import ConfigError

__all__ = ["from_mapping", "read_toml"]

T = TypeVar("T")


def read_toml(path: str | Path, key: str) -> dict[str, Any]:
    """The parsed TOML file at ``path``; a missing or malformed file raises ConfigError naming ``key``.

    :param path: the file.
    :param key: the setting or flag that named the file (``--config``, ``simulation.calibration``).
    """
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(key, f"file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, f"{path} is not valid TOML: {exc}") from exc


def from_mapping(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, naming any bad key.

    :param cls: a dataclass.
    :param data: parsed TOML (or any mapping) for it.
    :param prefix: dotted key of ``data`` in the file, used in error messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(prefix or "$", f"expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in names:
            raise ConfigError(key, f"unknown key; valid keys: {', '.join(sorted(names))}")
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # Validation may name its key relative to the dataclass (calibration) or in full (config).
        if not prefix or exc.key == prefix or exc.key.startswith((f"{prefix}.", f"{prefix}[")):
            raise
        raise ConfigError(f"{prefix}.{exc.key}", exc.reason) from None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_mapping(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:  # a table of name → value
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {type(value).__name__}")
        val_tp = typing.get_args(tp)[1]
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc.reason)
        raise ConfigError(key, "; ".join(errors))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {type(value).__name__}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {type(value).__name__}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(key, f"expected {tp.__name__}, got {type(value).__name__}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(key, f"expected nothing, got {type(value).__name__}")
        return None
    raise ConfigError(key, f"unsupported setting type {tp!r}")  # a schema bug, not a user error
