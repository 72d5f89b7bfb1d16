"""Command-line flags made from the settings tree, so that a setting has one default and one
help text: the field of its ``GaelpConfig`` section and the docstring under it.

``add_flags(parser, "train", ["days", "seed"])`` adds ``--days`` and ``--seed`` whose help is
the field's docstring followed by its default and its TOML key. Their argparse default is
None, so a flag not given leaves the value of the TOML file (or the dataclass default) in
force; :func:`apply_flags` then writes the given ones into the configuration, where the
section's ``__post_init__`` checks them and names the key of a bad one.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent_service.config import GaelpConfig, load_config

__all__ = ["add_flags", "add_out_and_config", "apply_flags", "config_from_args", "field_docs"]

_SEP = "."  # dest = "<section>.<field>": argparse keeps it verbatim


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings under a dataclass's fields (the string literal after each annotation)."""
    tree = ast.parse(inspect.getsource(sys.modules[cls.__module__]))
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    docs: dict[str, str] = {}
    body = node.body
    for stmt, nxt in zip(body, body[1:], strict=False):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _section(name: str) -> type:
    return typing.get_type_hints(GaelpConfig)[name]  # type: ignore[no-any-return]


def _kind(hint: Any) -> tuple[Any, dict[str, Any]]:
    """argparse ``type`` and extra keywords for a field's annotation."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _kind(inner[0])
    if origin is tuple:
        return typing.get_args(hint)[0], {"nargs": "+"}
    if hint is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    return hint, {}


def add_flags(p: argparse.ArgumentParser, section: str, names: Sequence[str],
              rename: Mapping[str, str] | None = None, types: Mapping[str, Callable[[str], Any]] | None = None,
              ) -> None:
    """Add a flag for each of ``section``'s fields in ``names`` (``--field-name``, or the name
    ``rename`` gives), its help made of the field's docstring, default and TOML key; ``types``
    parses a field's text its own way (a share given as ``5%``)."""
    cls = _section(section)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name in names:
        kind, extra = _kind(hints[name])
        default = defaults[name]
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else '""' if default == "" else default
        flag = "--" + (rename or {}).get(name, name.replace("_", "-"))
        doc = docs.get(name, "").replace("``", "")
        help_ = f"{doc} (default {shown}; [{section}] {name})".replace("%", "%%").strip()
        if kind is not None:
            extra.update(type=(types or {}).get(name, kind), metavar=name.upper())
        p.add_argument(flag, dest=f"{section}{_SEP}{name}", default=None, help=help_, **extra)


def apply_flags(cfg: GaelpConfig, args: argparse.Namespace) -> GaelpConfig:
    """``cfg`` with every flag of :func:`add_flags` that was given on the command line."""
    changes: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if _SEP in dest and value is not None:
            section, name = dest.split(_SEP, 1)
            changes.setdefault(section, {})[name] = tuple(value) if isinstance(value, list) else value
    for section, values in changes.items():
        cfg = cfg.replace(section, **values)
    return cfg


def add_out_and_config(p: argparse.ArgumentParser, out: str) -> None:
    """``--out DIR`` (default ``out``) and ``--config FILE``, the two paths of a run command."""
    p.add_argument("--out", type=Path, default=Path(out), help=f"output directory (default {out})")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file")


def config_from_args(args: argparse.Namespace) -> GaelpConfig:
    """The ``--config`` file's settings (the defaults without one), with the flags given on top."""
    return apply_flags(load_config(args.config), args)
