"""Reading a calibration file: TOML in, a validated :class:`Calibration` out.

Every key is checked: an unknown key, a wrong type or a bad value raises
:class:`~agent_service.errors.ConfigError` naming the dotted path in the file
(``channels.social.competitor_cpm``, ``segments[2].share``). ``dump_calibration`` writes a
calibration back as TOML in the same format (the discovery engine's output path), so
``load(dump(c)) == c``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from agent_service.typed_mapping import from_mapping, read_toml
from simulators.calibration.schema import Calibration

__all__ = ["calibration_from_mapping", "default_calibration_path", "dump_calibration", "load_calibration"]

_DEFAULT = Path(__file__).with_name("default.toml")


def default_calibration_path() -> Path:
    """The documented default calibration, ``simulators/calibration/default.toml``."""
    return _DEFAULT


def load_calibration(path: str | Path | None = None) -> Calibration:
    """Load and validate a calibration file.

    :param path: a TOML calibration file; None or "" for the default.
    """
    p = Path(path) if path else _DEFAULT
    return calibration_from_mapping(read_toml(p, "simulation.calibration"))


def calibration_from_mapping(data: dict[str, Any]) -> Calibration:
    """Build a calibration from parsed TOML (or any mapping of the same shape).

    :param data: the file's tables, e.g. ``{"channels": {"social": {...}}, "segments": [...]}``.
    """
    return from_mapping(Calibration, data)


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
