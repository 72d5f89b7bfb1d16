"""The creative catalogue: which creatives exist, on which channels, and when (``[creatives]``).

The policy has a fixed number of creative slots (``creatives.capacity``, 64 by default); the
catalogue fills them in order — the i-th creative is slot i, for as long as the service runs —
and says, for each opportunity, which slots may be shown: a creative is eligible when its
``start``/``stop`` window (event time) contains the opportunity and the channel played is one of
its ``channels``. The decision path masks the creative policy with it, and the learner applies
the same mask when it re-evaluates a logged decision (the mask is a function of event time and
channel, so both sides agree without logging it).

Adding a creative while the service runs: append it to the catalogue file; every process reloads
it (``creatives.reload_s``), the new id takes the next free slot and the learner starts its click
model from the mean of the eligible creatives (a prior, not a blank) in the next version.
Retiring one: give it a ``stop`` (or delete it: it is then retired at reload time, and its slot is
never reused). Without a file, ``creatives.count`` creatives ``c00``, ``c01``… on every channel.

File format (TOML)::

    [[creative]]
    id = "spring-sale-a"
    channels = ["paid_search", "social"]        # default: every channel
    text = "Spring sale: 20 % off"              # optional
    start = "2026-03-01T00:00:00Z"              # optional (RFC 3339 or a date)
    stop = "2026-04-01"                         # optional
    meta = { theme = "sale", format = "banner" } # optional, strings
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from agent_service.config import CHANNELS
from agent_service.errors import ConfigError

__all__ = ["Catalogue", "Creative", "channel_priors", "creative_priors", "load_priors", "restrict_to_arms"]

_NEVER = 2**62


def restrict_to_arms(eligible: np.ndarray, arms: np.ndarray | None) -> np.ndarray:
    """The creative mask of the decision and of the learner's replay: the catalogue's eligible slots
    within each person's experiment arm (``agent_service.pipeline.experiments``).

    :param eligible: bool [B, C] the catalogue's mask.
    :param arms: bool [B, C] the arm's slots, a row all False for a person in no experiment (None: nobody).
    :returns: ``eligible & arm`` on rows with an arm; where that is empty (no arm creative fits the
        channel or is live) the arm alone, as the experiment decides what the person is shown.
    """
    if arms is None or not arms.any():
        return eligible
    both = eligible & arms
    mine = np.where(both.any(axis=1, keepdims=True), both, arms)
    return np.where(arms.any(axis=1, keepdims=True), mine, eligible)


@dataclass(frozen=True)
class Creative:
    """One creative of the catalogue."""

    id: str
    channels: tuple[str, ...] = CHANNELS
    """Channels it may be shown on."""
    text: str = ""
    meta: tuple[tuple[str, str], ...] = ()
    """Free-form (key, value) metadata (theme, format, language…)."""
    start_ms: int = 0
    """First event time (ms) it may be shown at."""
    stop_ms: int = _NEVER
    """Event time (ms) from which it is retired."""


@dataclass(frozen=True)
class Catalogue:
    """The creatives in slot order (see the module docstring)."""

    creatives: tuple[Creative, ...]
    _index: dict[str, int] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.creatives:
            raise ConfigError("creatives", "the catalogue needs at least one creative")
        for i, c in enumerate(self.creatives):
            where = f"creatives[{i}]"
            if not c.id:
                raise ConfigError(f"{where}.id", "must not be empty")
            if c.id in self._index:
                raise ConfigError(f"{where}.id", f"{c.id!r} appears twice")
            if not c.channels or any(ch not in CHANNELS for ch in c.channels):
                raise ConfigError(f"{where}.channels", f"must be a non-empty subset of {list(CHANNELS)}, "
                                                       f"got {list(c.channels)}")
            if c.start_ms >= c.stop_ms:
                raise ConfigError(f"{where}.stop", "must be after start")
            self._index[c.id] = i

    def __len__(self) -> int:
        return len(self.creatives)

    def __contains__(self, creative_id: object) -> bool:
        return creative_id in self._index

    def slot(self, creative_id: str) -> int:
        """The slot of a creative id (KeyError if unknown)."""
        return self._index[creative_id]

    def mask(self, t_ms: np.ndarray, channel: np.ndarray, capacity: int) -> np.ndarray:
        """bool [B, capacity]: the slots eligible for each opportunity (event time, channel index).

        A row with no eligible creative allows every creative live at that time, and failing
        that every slot of the catalogue (a decision is never left without a creative).
        """
        if len(self) > capacity:
            raise ConfigError("creatives.capacity", f"{len(self)} creatives in the catalogue, {capacity} slots")
        t = np.asarray(t_ms, np.int64)
        ch = np.asarray(channel, np.int64)
        if len(t):  # the bid path: a batch's times nearly always fall between two starts/stops
            lo, hi, table = self._epoch(int(t.min()), capacity)
            if lo <= int(t.max()) < hi:
                return table[ch]  # a new array: callers may write to it
        return self._rows(t, ch, capacity)

    def _epoch(self, t0: int, capacity: int) -> tuple[int, int, np.ndarray]:
        """(lo, hi, mask per channel [3, capacity]) of the span [lo, hi) around ``t0`` in which no
        creative starts or stops: every opportunity in it has its channel's row of :meth:`mask`.
        Kept until a batch falls outside it."""
        hit = self.__dict__.get("_epoch_cache")
        if hit is not None and hit[0] <= t0 < hit[1] and hit[2].shape[1] == capacity:
            return hit
        edges = self._edges
        i = int(np.searchsorted(edges, t0, side="right"))
        lo = int(edges[i - 1]) if i > 0 else -(1 << 64)  # Python ints: exact at any ms
        hi = int(edges[i]) if i < len(edges) else 1 << 64
        hit = self.__dict__["_epoch_cache"] = (lo, hi, self._rows(np.full(3, t0, np.int64), np.arange(3), capacity))
        return hit

    @cached_property
    def _edges(self) -> np.ndarray:
        """Sorted event times at which some creative starts or stops (the mask changes only there)."""
        start, stop, _ = self._arrays
        return np.unique(np.concatenate([start, stop]))

    def _rows(self, t_ms: np.ndarray, ch: np.ndarray, capacity: int) -> np.ndarray:
        """:meth:`mask` computed row by row (any event times)."""
        t = t_ms[:, None]
        start, stop, on = self._arrays
        live = (start <= t) & (t < stop)  # [B, n]
        ok = live & on[:, ch].T
        ok = np.where(ok.any(axis=1, keepdims=True), ok, live)
        ok = np.where(ok.any(axis=1, keepdims=True), ok, True)
        out = np.zeros((len(ch), capacity), bool)
        out[:, :len(self)] = ok
        return out

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """start [n], stop [n], channel eligibility [n, 3] (built once: the bid path asks every batch)."""
        return (np.array([c.start_ms for c in self.creatives], np.int64),
                np.array([c.stop_ms for c in self.creatives], np.int64),
                np.array([[name in c.channels for name in CHANNELS] for c in self.creatives], bool))

    def merged(self, newer: Catalogue, now_ms: int) -> Catalogue:
        """This catalogue updated to ``newer`` without moving any slot: known ids take ``newer``'s
        settings in their slots, new ids are appended, and ids missing from ``newer`` are retired
        at ``now_ms`` (their slots are never reused)."""
        out = []
        for c in self.creatives:
            if c.id in newer._index:
                out.append(newer.creatives[newer.slot(c.id)])
            else:
                out.append(replace(c, stop_ms=min(c.stop_ms, now_ms)) if c.start_ms < now_ms else
                           replace(c, start_ms=now_ms - 1, stop_ms=now_ms))
        out += [c for c in newer.creatives if c.id not in self._index]
        return Catalogue(tuple(out))

    @staticmethod
    def generated(n: int) -> Catalogue:
        """``n`` creatives ``c00``, ``c01``… on every channel, always live."""
        if n < 1:
            raise ConfigError("creatives.count", "must be >= 1")
        return Catalogue(tuple(Creative(f"c{i:02d}") for i in range(n)))

    @staticmethod
    def from_entries(entries: Sequence[Mapping[str, Any]]) -> Catalogue:
        """From ``[[creative]]`` tables (see the module docstring); errors name the entry and field."""
        out = []
        for i, e in enumerate(entries):
            where = f"creatives[{i}]"
            unknown = set(e) - {"id", "channels", "text", "start", "stop", "meta"}
            if unknown:
                raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown field")
            if not isinstance(e.get("id"), str):
                raise ConfigError(f"{where}.id", "must be a string")
            channels = e.get("channels", list(CHANNELS))
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise ConfigError(f"{where}.channels", "must be a list of channel names")
            meta = e.get("meta", {})
            if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                raise ConfigError(f"{where}.meta", "must be a table of strings")
            text = e.get("text", "")
            if not isinstance(text, str):
                raise ConfigError(f"{where}.text", "must be a string")
            out.append(Creative(e["id"], tuple(channels), text, tuple(sorted(meta.items())),
                                _time(e.get("start"), f"{where}.start", 0), _time(e.get("stop"), f"{where}.stop",
                                                                                   _NEVER)))
        return Catalogue(tuple(out))

    @staticmethod
    def load(path: str | Path) -> Catalogue:
        """Read a catalogue file (see the module docstring)."""
        try:
            doc = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("creatives.catalogue", f"cannot read {path}: {exc}") from exc
        entries = doc.get("creative")
        if not isinstance(entries, list):
            raise ConfigError("creatives.catalogue", f"{path} has no [[creative]] entries")
        return Catalogue.from_entries(entries)


def _time(value: Any, where: str, default: int) -> int:
    """Event time (ms) of a TOML datetime, date or RFC 3339 string (UTC when no offset)."""
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(where, f"not a date or RFC 3339 time: {value!r}") from exc
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return int(when.timestamp() * 1000)
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp() * 1000)
    raise ConfigError(where, f"not a date or time: {value!r}")


class CatalogueFile:
    """The catalogue a process serves, reloaded from its file when it changes (no restart).

    ``current(now_ms)`` stats the file at most every ``reload_s`` seconds (wall clock); a changed
    file is read and merged into the catalogue in force (slots never move, dropped ids retire at
    ``now_ms``). A file that fails to load keeps the catalogue in force and is reported once
    (``error``). Without a file: ``count`` generated creatives.
    """

    def __init__(self, path: str, count: int, capacity: int, reload_s: float = 5.0, clock: Any = None) -> None:
        import time

        self.path, self.reload_s, self.capacity = path, reload_s, capacity
        self._clock = clock or time.monotonic
        self.error: str | None = None
        self.version = 1
        self._checked = self._clock()
        self._mtime = Path(path).stat().st_mtime_ns if path else 0
        self.catalogue = self._fits(Catalogue.load(path) if path else Catalogue.generated(min(count, capacity)))

    def _fits(self, cat: Catalogue) -> Catalogue:
        if len(cat) > self.capacity:
            raise ConfigError("creatives.capacity", f"the catalogue has {len(cat)} creatives (retired ones keep "
                                                    f"their slots), the policy {self.capacity} slots")
        return cat

    def current(self, now_ms: int) -> Catalogue:
        if not self.path or self._clock() - self._checked < self.reload_s:
            return self.catalogue
        self._checked = self._clock()
        try:
            mtime = Path(self.path).stat().st_mtime_ns
            if mtime != self._mtime:
                self.catalogue = self._fits(self.catalogue.merged(Catalogue.load(self.path), now_ms))
                self._mtime, self.error = mtime, None
                self.version += 1
        except (OSError, ConfigError) as exc:
            self.error = str(exc)
        return self.catalogue


def load_priors(path: str) -> dict[str, Any] | None:
    """The ``[creatives] priors`` file, or None when unset.

    :raises ConfigError: naming ``creatives.priors`` when the file is missing or not such a JSON.
    """
    if not path:
        return None
    import json

    try:
        priors = json.loads(Path(path).read_text())
        for p in (*priors["creative"].values(), *priors.get("channel_device", {}).values()):
            float(p["ctr"]["alpha"]) + float(p["ctr"]["beta"]) + float(p["cvr"]["rate"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError("creatives.priors", f"{path}: not a priors file of `gaelp ingest campaigns "
                                              f"--priors-out` ({type(exc).__name__}: {exc})") from exc
    return priors  # type: ignore[no-any-return]


def creative_priors(catalogue: Catalogue, priors: dict[str, Any], capacity: int) -> tuple[np.ndarray, ...]:
    """Per-slot pseudo-counts (impressions, clicks, conversions) of the catalogue's creatives
    whose ids a campaign report covers (``gaelp ingest campaigns --priors-out``: Beta α/β of CTR
    and CVR per ad id, ``agent_service/ingest/campaign_store.py``); zeros elsewhere.

    :param catalogue: the catalogue in force (its ids name the report's ads).
    :param priors: the priors file's JSON object.
    :param capacity: creative slots of the policy.
    """
    imps, clicks, convs = np.zeros(capacity), np.zeros(capacity), np.zeros(capacity)
    for ad, p in priors.get("creative", {}).items():
        try:
            k = catalogue.slot(ad)
        except KeyError:  # an ad the catalogue does not hold
            continue
        if k >= capacity:
            continue
        ctr, cvr = p["ctr"], p["cvr"]
        imps[k], clicks[k] = ctr["alpha"] + ctr["beta"], ctr["alpha"]
        # the CVR prior's trials are clicks: rescaled to the CTR prior's clicks so the two agree
        convs[k] = cvr["rate"] * clicks[k]
    return imps, clicks, convs


_DEVICE_CLASS = {"mobile": 0, "tablet": 0, "desktop": 1}
"""A report's device (``ingest/campaigns.py`` DEVICES) → the agent's device class (phones and
tablets are mobile, as the state's ``device_mobile``); any other device is class 2."""


def channel_priors(priors: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Pseudo-counts (impressions, clicks, conversions) [3 channels, 3 device classes] from the
    report's ``channel_device`` priors (``"paid_search|mobile"``: Beta α/β of CTR and CVR); the
    report's devices are summed into the agent's classes, channels other than ``CHANNELS`` (a
    network the GA4 group map does not send to a GAELP channel) are left out.

    :param priors: the priors file's JSON object.
    """
    imps, clicks, convs = np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3))
    for key, p in priors.get("channel_device", {}).items():
        channel, _, device = str(key).partition("|")
        if channel not in CHANNELS:
            continue
        i, j = CHANNELS.index(channel), _DEVICE_CLASS.get(device, 2)
        ctr, cvr = p["ctr"], p["cvr"]
        n, c = float(ctr["alpha"]) + float(ctr["beta"]), float(ctr["alpha"])
        imps[i, j] += n
        clicks[i, j] += c
        convs[i, j] += float(cvr["rate"]) * c  # the CVR prior rescaled to the CTR prior's clicks, as per creative
    return imps, clicks, convs
