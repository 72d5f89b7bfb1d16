"""Where GA4 export rows come from: files (NDJSON as ``bq extract`` writes it, optionally gzipped; a
JSON array or a single JSON object; Parquet) and BigQuery tables (``bigquery_source``).

Each reader feeds one :class:`~agent_service.ingest.ga4.Ga4Builder` and reports progress through a
callback (bytes of the file for JSON, rows for Parquet). Row numbers are 1-based: the line of an
NDJSON file (blank lines keep their number and are skipped), the element of a JSON array, the row
of a Parquet file. A file that cannot be split into rows at all is one error at row 0.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from agent_service.errors import GaelpError
from agent_service.ingest.ga4 import Ga4Builder

__all__ = ["BQ_PREFIX", "FILE_SUFFIXES", "Progress", "SourceError", "expand", "feed_mappings", "is_table", "read_file", "size_hint"]

Progress = Callable[[int], None]
"""Called with the units (bytes or rows) done since the last call."""

FILE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz", ".parquet")
"""Files a directory is searched for."""

BQ_PREFIX = "bq:"
"""Targets and origins that name a BigQuery table start with this."""

_CHUNK = 1 << 20
_Stream = BinaryIO | gzip.GzipFile
_TABLE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?\.[A-Za-z0-9_$*-]+$")


class SourceError(GaelpError):
    """A source cannot be read at all (missing, unreadable, not a known format)."""


def is_table(target: str) -> bool:
    """Whether ``target`` names a BigQuery table: ``bq:[PROJECT.]DATASET.TABLE`` (``TABLE`` may end in
    ``*``) or a bare ``PROJECT.DATASET.TABLE`` (not ending like an export file); a path that exists never does."""
    if Path(target).exists():
        return False
    if target.startswith(BQ_PREFIX):
        return bool(_TABLE.match(target[len(BQ_PREFIX):]))
    looks_like_file = target.lower().endswith((".json", ".jsonl", ".ndjson", ".gz", ".parquet"))
    return "/" not in target and target.count(".") == 2 and not looks_like_file and bool(_TABLE.match(target))


def expand(target: Path) -> list[Path]:
    """The export files of ``target``: itself, or a directory's files with a known suffix (sorted).

    :param target: a file or a directory (e.g. one ``events_YYYYMMDD`` extract per file).
    """
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and p.name.lower().endswith(FILE_SUFFIXES))
        if not files:
            raise SourceError(f"{target}: no file ending in {', '.join(FILE_SUFFIXES)}")
        return files
    if not target.exists():
        raise SourceError(f"{target}: no such file or directory")
    return [target]


def size_hint(path: Path) -> tuple[int | None, str]:
    """(total, unit) of the progress ``read_file`` reports for ``path``."""
    if path.name.lower().endswith(".parquet"):
        return None, "rows"
    return path.stat().st_size, "B"


def read_file(path: Path, builder: Ga4Builder, progress: Progress | None = None) -> None:
    """Feed every row of one export file to ``builder``.

    :param path: NDJSON (``.gz`` too), a JSON array / object, or Parquet.
    :param builder: receives rows and errors.
    :param progress: optional callback (bytes read; rows for Parquet).
    """
    if path.name.lower().endswith(".parquet"):
        _read_parquet(path, builder, progress)
        return
    size = path.stat().st_size if progress is not None else 0
    try:
        with open(path, "rb", buffering=_CHUNK) as raw, contextlib.ExitStack() as stack:
            f: _Stream = raw
            if path.name.lower().endswith(".gz"):
                f = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
            first = _first_line(f)
            f.seek(0)
            if first is None:  # empty: no rows
                return
            if first.lstrip()[:1] == b"{" and _is_json(first):  # NDJSON (one row per line)
                _read_lines(f, builder, progress, raw.tell)  # progress in bytes of the file as stored
                return
            whole = f.read()
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from exc
    if not _read_document(whole, builder):
        if first.strip() in (b"{", b"["):  # a document broken somewhere: one error, not one per line
            builder.add_error(0, "$", f"the file starts a JSON document but is not valid JSON: {_why(whole)}",
                              whole)
        else:  # NDJSON whose first line is bad: report line by line
            _read_lines(io.BytesIO(whole), builder, None, lambda: 0)
    if progress is not None:
        progress(size)


def _first_line(f: _Stream) -> bytes | None:
    for line in f:
        if line.strip():
            return line
    return None


def _is_json(line: bytes) -> bool:
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError:
        return False
    return True


def _why(data: bytes) -> str:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        return str(exc)
    return "?"


def _read_document(data: bytes, builder: Ga4Builder) -> bool:
    """A whole-file JSON array of rows, or one row pretty-printed; False if it is neither."""
    try:
        doc = bytes(msgspec.json.decode(data, type=msgspec.Raw)).lstrip()
        if doc[:1] == b"[":
            for i, raw in enumerate(msgspec.json.decode(doc, type=list[msgspec.Raw]), start=1):
                builder.add_json(i, bytes(raw))
            return True
    except msgspec.DecodeError:
        return False
    if doc[:1] != b"{":
        builder.add_error(0, "$", "the file is JSON but neither a row object nor an array of rows", doc)
        return True
    builder.add_json(1, doc)
    return True


def _read_lines(f: _Stream, builder: Ga4Builder, progress: Progress | None, tell: Callable[[], int]) -> None:
    add = builder.add_json
    last = 0
    for n, line in enumerate(f, start=1):
        if len(line) <= 2 and not line.strip():
            continue
        add(n, line.rstrip(b"\r\n"))
        if progress is not None and not n & 8191:
            pos = tell()
            progress(pos - last)
            last = pos
    if progress is not None:
        progress(tell() - last)


def _parquet_rows(path: Path, batch: int = 2048) -> Iterator[tuple[int, dict[str, object]]]:
    import duckdb

    con = duckdb.connect()
    try:
        cur = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        names = [d[0] for d in cur.description or ()]
        n = 0
        while chunk := cur.fetchmany(batch):
            for values in chunk:
                n += 1
                yield n, dict(zip(names, values, strict=True))
    except duckdb.Error as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {exc}") from exc
    finally:
        con.close()


def _read_parquet(path: Path, builder: Ga4Builder, progress: Progress | None) -> None:
    feed_mappings(_parquet_rows(path), builder, progress)


def feed_mappings(rows: Iterable[tuple[int, Mapping[str, Any]]], builder: Ga4Builder,
                  progress: Progress | None = None) -> None:
    """Feed numbered rows (Parquet, a BigQuery table) to ``builder``, reporting progress in rows.

    :param rows: (row number, row) pairs; nested records as mappings, repeated fields as lists.
    :param builder: receives the rows.
    :param progress: optional callback (rows), called every 4096 rows and at the end.
    """
    step = 0
    for n, row in rows:
        builder.add_mapping(n, row)
        step += 1
        if progress is not None and step == 4096:
            progress(step)
            step = 0
    if progress is not None and step:
        progress(step)
