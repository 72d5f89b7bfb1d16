"""Keyed records that could not be published yet, kept in order in a local file.

The bid path logs every decision to Kafka after answering. While the broker is down the
records wait in memory; past a bound they go here instead of being dropped, and they are
published from here, oldest first, before anything newer once the broker is back. A process
that dies with records in the file publishes them when it starts again: the position of the
first unpublished record is kept beside the file (``<name>.pos``, replaced atomically after each
published chunk), so a restart re-sends at most the chunk in flight when it died.

Format: per record, a 4-byte big-endian key length, the key, a 4-byte value length, the value.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RecordSpill"]

_LEN = struct.Struct(">I")


class RecordSpill:
    """An append-only file of (key, value) records read back in order (see the module docstring).

    :param path: the spill file (created with its folder if missing; records already in it are kept).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._pos_path = path.with_name(path.name + ".pos")
        self._f = open(path, "a+b")  # noqa: SIM115  # held open for the process's life
        try:  # one writer per file: a second process on the same folder takes the next file
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.close()
            raise
        self._read_pos = self._saved_pos()
        self._peeked_end = self._read_pos
        self._peeked = 0
        self.count = self._count_complete()

    @classmethod
    def claim(cls, folder: Path, stem: str, slots: int = 64) -> RecordSpill:
        """The first of ``<stem>-0.spill``, ``<stem>-1.spill``, ... that no other live process holds:
        a restarted process gets its predecessor's file back (the lock died with it)."""
        for i in range(slots):
            try:
                return cls(folder / f"{stem}-{i}.spill")
            except BlockingIOError:
                continue
        raise OSError(f"all {slots} spill files {folder / stem}-*.spill are held by other processes")

    def _saved_pos(self) -> int:
        try:
            pos = int(self._pos_path.read_text())
        except (OSError, ValueError):
            return 0
        return pos if 0 <= pos <= os.fstat(self._f.fileno()).st_size else 0

    def _count_complete(self) -> int:
        """Unpublished records in the file; a torn last record (a crash mid-write) is cut off."""
        self._f.seek(self._read_pos)
        n, good = 0, self._read_pos
        while True:
            rec = self._read_one()
            if rec is None:
                break
            n, good = n + 1, self._f.tell()
        if good != os.fstat(self._f.fileno()).st_size:
            self._f.truncate(good)
        return n

    def _read_one(self) -> tuple[bytes, bytes] | None:
        out: list[bytes] = []
        for _ in range(2):
            head = self._f.read(4)
            if len(head) < 4:
                return None
            (size,) = _LEN.unpack(head)
            body = self._f.read(size)
            if len(body) < size:
                return None
            out.append(body)
        return out[0], out[1]

    def append(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Add records after every record already here (flushed to the OS before returning)."""
        self._f.seek(0, os.SEEK_END)
        self._f.write(b"".join(_LEN.pack(len(k)) + k + _LEN.pack(len(v)) + v for k, v in records))
        self._f.flush()
        self.count += len(records)

    def peek(self, n: int) -> list[tuple[bytes, bytes]]:
        """Up to ``n`` of the oldest records, left in place until :meth:`pop`."""
        self._f.seek(self._read_pos)
        out: list[tuple[bytes, bytes]] = []
        while len(out) < n:
            rec = self._read_one()
            if rec is None:
                break
            out.append(rec)
        self._peeked_end, self._peeked = self._f.tell(), len(out)
        return out

    def pop(self) -> None:
        """Drop the records the last :meth:`peek` returned (they are published); an emptied file is truncated."""
        self._read_pos, self.count = self._peeked_end, self.count - self._peeked
        self._peeked = 0
        if self.count == 0:  # all published: start the file over
            self._f.truncate(0)
            self._read_pos = self._peeked_end = 0
        tmp = self._pos_path.with_name(self._pos_path.name + ".tmp")
        tmp.write_text(str(self._read_pos))
        os.replace(tmp, self._pos_path)

    def close(self) -> None:
        self._f.close()
