"""Reading a calibration file: TOML in, a validated :class:`Calibration` out.

Every key is checked: an unknown key, a wrong type or a bad value raises
:class:`~agent_service.errors.ConfigError` naming the dotted path in the file
(``channels.social.competitor_cpm``, ``segments[2].share``). ``dump_calibration`` writes a
calibration back as TOML in the same format (the discovery engine's output path), so
``load(dump(c)) == c``.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

from agent_service.errors import ConfigError
from simulators.calibration.schema import Calibration

__all__ = ["calibration_from_mapping", "default_calibration_path", "dump_calibration", "load_calibration"]

T = TypeVar("T")
_DEFAULT = Path(__file__).with_name("default.toml")


def default_calibration_path() -> Path:
    """The documented default calibration, ``simulators/calibration/default.toml``."""
    return _DEFAULT


def load_calibration(path: str | Path | None = None) -> Calibration:
    """Load and validate a calibration file.

    :param path: a TOML calibration file; None or "" for the default.
    """
    p = Path(path) if path else _DEFAULT
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError("simulation.calibration", f"file {p} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("simulation.calibration", f"{p} is not valid TOML: {exc}") from exc
    return calibration_from_mapping(data)


def calibration_from_mapping(data: dict[str, Any]) -> Calibration:
    """Build a calibration from parsed TOML (or any mapping of the same shape).

    :param data: the file's tables, e.g. ``{"channels": {"social": {...}}, "segments": [...]}``.
    """
    return _build(Calibration, data, "")


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def _build(cls: type[T], data: Any, prefix: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(prefix or "calibration", f"expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = _join(prefix, name)
        if name not in names:
            raise ConfigError(key, f"unknown key; valid keys: {', '.join(sorted(names))}")
        kwargs[name] = _value(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(_join(prefix, exc.key), exc.reason) from None


def _value(value: Any, tp: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, key)
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(_value(v, item, f"{key}[{i}]") for i, v in enumerate(value))
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
    raise ConfigError(key, f"unsupported type {tp!r}")  # pragma: no cover - schema bug


def dump_calibration(cal: Calibration) -> str:
    """The calibration as TOML in the file format (``load_calibration`` reads it back equal).

    :param cal: a calibration.
    """
    lines: list[str] = []
    _dump_table(cal, "", lines)
    return "\n".join(lines).lstrip() + "\n"


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")  # pragma: no cover


def _dump_table(obj: Any, name: str, lines: list[str], array: bool = False) -> None:
    fields = dataclasses.fields(obj)
    simple = [f for f in fields if not _is_table(getattr(obj, f.name))]
    nested = [f for f in fields if _is_table(getattr(obj, f.name))]
    if name:
        lines += ["", f"[[{name}]]" if array else f"[{name}]"]
    for f in simple:
        lines.append(f"{f.name} = {_scalar(getattr(obj, f.name))}")
    for f in nested:
        value = getattr(obj, f.name)
        sub = f"{name}.{f.name}" if name else f.name
        if isinstance(value, tuple):
            for item in value:
                _dump_table(item, sub, lines, array=True)
        else:
            _dump_table(value, sub, lines)


def _is_table(v: Any) -> bool:
    if dataclasses.is_dataclass(v):
        return True
    return isinstance(v, tuple) and len(v) > 0 and dataclasses.is_dataclass(v[0])
