"""Journeys in bulk: the ``channelattribution`` path table, parsed fast and checked strictly.

A path table has one row per (distinct) path: ``path`` ("a > b > c", channels in the order
they touched the person), ``total_conversions``, ``total_conversion_value`` and
``total_null`` (journeys on this path that did not convert). :class:`PathTable` holds it as
flat integer codes (CSR layout: ``codes[offsets[i]:offsets[i+1]]`` is path ``i``), which is
what every batch model reads.

Parsing is the expensive part of attribution on 100k paths (the chain solve takes
milliseconds), so it avoids a Python loop per step: all paths are joined and split once,
distinct raw tokens are mapped to codes through a dict, and whitespace is stripped per
*distinct* token only. Channel codes follow first appearance, as in ``channelattribution``.

Bad input raises :class:`~agent_service.errors.DecodeError` whose field names the row and
column, e.g. ``row 7: total_null``. Rows are numbered as a spreadsheet shows them: the
header is row 1, the first path row 2.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent_service.errors import DecodeError

__all__ = ["COLUMNS", "PathTable", "parse_paths_csv", "read_paths_csv"]

COLUMNS: tuple[str, ...] = ("path", "total_conversions", "total_conversion_value", "total_null")
"""Columns a path CSV must have (others are ignored)."""

_FIRST_ROW = 2


@dataclass(frozen=True, eq=False)
class PathTable:
    """Paths with their conversions, value and non-converting count.

    :param channels: channel names; a code is an index into this tuple.
    :param codes: int32 channel codes of every step of every path, concatenated.
    :param offsets: int64, length ``n_paths + 1``; path ``i`` is ``codes[offsets[i]:offsets[i+1]]``.
    :param conversions: float64 conversions per path (>= 0).
    :param values: float64 conversion value per path (>= 0).
    :param nulls: float64 non-converting journeys per path (>= 0).
    :param rows: source row number of each path (for messages).
    """

    channels: tuple[str, ...]
    codes: np.ndarray
    offsets: np.ndarray
    conversions: np.ndarray
    values: np.ndarray
    nulls: np.ndarray
    rows: np.ndarray

    @property
    def n_paths(self) -> int:
        """Number of paths (rows)."""
        return int(self.offsets.shape[0] - 1)

    @property
    def lengths(self) -> np.ndarray:
        """Steps per path (int64)."""
        return np.diff(self.offsets)

    def path(self, i: int) -> tuple[str, ...]:
        """The channels of path ``i``."""
        return tuple(self.channels[c] for c in self.codes[self.offsets[i]:self.offsets[i + 1]])

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_columns(
        cls,
        paths: Sequence[str],
        conversions: Sequence[float | str] | np.ndarray,
        values: Sequence[float | str] | np.ndarray | None = None,
        nulls: Sequence[float | str] | np.ndarray | None = None,
        *,
        sep: str = ">",
        rows: np.ndarray | None = None,
    ) -> PathTable:
        """Build a table from columns (strings or numbers), checking every value.

        :param paths: one path per row, steps separated by ``sep`` ("a > b > c").
        :param conversions: conversions per path.
        :param values: conversion value per path (zeros when None).
        :param nulls: non-converting journeys per path (zeros when None).
        :param sep: step separator; whitespace around steps is ignored.
        :param rows: source row numbers for error messages (default 2, 3, ...).
        """
        n = len(paths)
        row_no = np.arange(_FIRST_ROW, _FIRST_ROW + n) if rows is None else np.asarray(rows)
        if n == 0:
            raise DecodeError(f"row {_FIRST_ROW}: path", "no paths: the table has a header but no rows")
        for name, col in (("total_conversions", conversions), ("total_conversion_value", values),
                          ("total_null", nulls)):
            if col is not None and len(col) != n:
                raise DecodeError(f"column {name}", f"has {len(col)} values for {n} paths")
        conv = _numbers(conversions, "total_conversions", row_no)
        val = np.zeros(n) if values is None else _numbers(values, "total_conversion_value", row_no)
        nul = np.zeros(n) if nulls is None else _numbers(nulls, "total_null", row_no)
        channels, codes, offsets = _parse_paths(paths, sep, row_no)
        return cls(channels, codes, offsets, conv, val, nul, row_no)


    @classmethod
    def from_journeys(cls, journeys: Iterable[tuple[Sequence[str], bool, float]]) -> PathTable:
        """Aggregate individual journeys (e.g. closed 14-day windows from the stream) into distinct paths.

        Use it to refit the channel weights of ``markov``/``shapley`` from recent journeys.

        :param journeys: ``(channels oldest first, converted, conversion value)`` per journey;
            a journey needs at least one channel.
        """
        agg: dict[tuple[str, ...], list[float]] = {}
        for i, (channels, converted, value) in enumerate(journeys):
            key = tuple(channels)
            if not key or any(not c for c in key):
                raise DecodeError(f"journey {i}: channels", "needs at least one non-empty channel")
            if not math.isfinite(value) or value < 0:
                raise DecodeError(f"journey {i}: value", f"must be finite and >= 0, got {value!r}")
            acc = agg.setdefault(key, [0.0, 0.0, 0.0])
            if converted:
                acc[0] += 1.0
                acc[1] += value
            else:
                acc[2] += 1.0
        if not agg:
            raise DecodeError("journeys", "no journeys")
        names: dict[str, int] = {}
        flat = [names.setdefault(c, len(names)) for key in agg for c in key]
        lengths = np.fromiter((len(k) for k in agg), dtype=np.int64, count=len(agg))
        offsets = np.zeros(len(agg) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        stats = np.array(list(agg.values()), dtype=np.float64)
        return cls(tuple(names), np.asarray(flat, dtype=np.int32), offsets, stats[:, 0].copy(), stats[:, 1].copy(),
                   stats[:, 2].copy(), np.arange(len(agg)))


def _numbers(col: Sequence[float | str] | np.ndarray, name: str, rows: np.ndarray) -> np.ndarray:
    """A column as finite, non-negative float64, or an error naming the first bad row."""
    try:
        arr = np.asarray(col, dtype=np.float64)
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.ndim != 1:
        for i, v in enumerate(col):
            try:
                float(v)
            except (ValueError, TypeError):
                raise DecodeError(f"row {rows[i]}: {name}", f"not a number: {v!r}") from None
        raise DecodeError(f"column {name}", "not a flat column of numbers")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise DecodeError(f"row {rows[i]}: {name}", f"must be a finite number, got {col[i]!r}")
    neg = arr < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise DecodeError(f"row {rows[i]}: {name}", f"must be >= 0, got {col[i]!r}")
    return arr


def _parse_paths(paths: Sequence[str], sep: str, rows: np.ndarray) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Channel names, flat codes and offsets of ``paths`` (see the module docstring)."""
    if not sep:
        raise DecodeError("sep", "the step separator must not be empty")
    if not all(isinstance(p, str) for p in paths):
        i = next(i for i, p in enumerate(paths) if not isinstance(p, str))
        raise DecodeError(f"row {rows[i]}: path", f"must be a string, got {type(paths[i]).__name__}")
    lengths = np.fromiter((p.count(sep) for p in paths), dtype=np.int64, count=len(paths)) + 1
    tokens = sep.join(paths).split(sep)
    raw_index = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    raw_codes = np.fromiter(map(raw_index.__getitem__, tokens), dtype=np.int32, count=len(tokens))
    offsets = np.zeros(len(paths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Canonical channel per distinct raw token (whitespace stripped), in first-seen order.
    names: dict[str, int] = {}
    remap = np.empty(len(raw_index), dtype=np.int32)
    for raw, i in raw_index.items():
        name = raw.strip()
        if not name:
            bad = int(np.argmax(raw_codes == i))
            p = int(np.searchsorted(offsets, bad, side="right") - 1)
            step = bad - int(offsets[p]) + 1
            what = "empty path" if lengths[p] == 1 else f"empty step {step} of {int(lengths[p])}"
            raise DecodeError(f"row {rows[p]}: path", f"{what}: {paths[p]!r}")
        remap[i] = names.setdefault(name, len(names))
    codes = remap[raw_codes]
    return tuple(names), codes, offsets


def read_paths_csv(path: str | Path, *, sep: str = ">") -> PathTable:
    """Read a path CSV in the ``channelattribution`` layout (see :data:`COLUMNS`).

    :param path: the CSV file (UTF-8, comma-separated, header row first).
    :param sep: step separator inside the ``path`` column.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DecodeError("--paths", f"file {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise DecodeError("--paths", f"{path} is not UTF-8 text: {exc}") from exc
    return parse_paths_csv(text, sep=sep)


def parse_paths_csv(text: str, *, sep: str = ">") -> PathTable:
    """Parse CSV text in the ``channelattribution`` layout (see :func:`read_paths_csv`)."""
    fast = _split_plain(text)
    if fast is not None:
        return _from_records(fast[0], fast[1], fast[2], sep)
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        records = list(reader)
    except csv.Error as exc:
        raise DecodeError(f"row {reader.line_num}", f"malformed CSV: {exc}") from exc
    if not records:
        raise DecodeError("row 1", "empty file: expected a header naming " + ", ".join(COLUMNS))
    header = records[0]
    body = records[1:]
    width = len(header)
    if all(len(r) == width for r in body):
        rows = np.arange(_FIRST_ROW, _FIRST_ROW + len(body))
    else:  # skip blank lines, reject ragged rows
        keep, numbers = [], []
        for i, r in enumerate(body):
            if not r:
                continue
            if len(r) != width:
                raise DecodeError(f"row {i + _FIRST_ROW}",
                                  f"malformed CSV: {len(r)} fields where the header has {width}")
            keep.append(r)
            numbers.append(i + _FIRST_ROW)
        body, rows = keep, np.asarray(numbers, dtype=np.int64)
    cols = list(zip(*body, strict=True)) if body else [() for _ in header]
    return _from_records(header, cols, rows, sep)


def _split_plain(text: str) -> tuple[list[str], list[list[str]], np.ndarray] | None:
    """Header, columns and row numbers of a CSV without quotes, CR or blank lines; else None.

    Such files (the common case: paths need no quoting) are split with two C-level string
    operations instead of the ``csv`` module's per-field state machine.
    """
    if '"' in text or "\r" in text:
        return None
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        return None
    width = lines[0].count(",") + 1
    body = lines[1:]
    if any(line.count(",") != width - 1 for line in body):  # ragged or blank lines: slow path
        return None
    flat = ",".join(body).split(",")
    cols = [flat[j::width] for j in range(width)]
    return lines[0].split(","), cols, np.arange(_FIRST_ROW, _FIRST_ROW + len(body))


def _from_records(header: list[str], cols: Sequence[Sequence[str]], rows: np.ndarray, sep: str) -> PathTable:
    header = [h.strip().lstrip("\ufeff") for h in header]
    where = {}
    for col in COLUMNS:
        if col not in header:
            raise DecodeError(f"row 1: {col}", "missing column; the header must name " + ", ".join(COLUMNS))
        where[col] = header.index(col)
    if len(rows) == 0:
        raise DecodeError(f"row {_FIRST_ROW}: path", "no paths: the table has a header but no rows")
    return PathTable.from_columns(
        list(cols[where["path"]]),
        cols[where["total_conversions"]],
        cols[where["total_conversion_value"]],
        cols[where["total_null"]],
        sep=sep,
        rows=rows,
    )
