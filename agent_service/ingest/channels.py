"""Source / medium / campaign → GA4 channel group → GAELP channel, by the rules of
:class:`~agent_service.config.data.Ga4Config` (GA4's default channel grouping unless configured).

A missing source or medium is GA4's "(direct)" / "(none)"; values are compared lower-cased and
stripped. Results are cached per triple: an export has few distinct triples and many events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent_service.config.data import ChannelRule, Ga4Config

__all__ = ["ChannelMapper", "MappedChannel", "snake"]

UNASSIGNED = "Unassigned"


@dataclass(frozen=True)
class MappedChannel:
    """Where one (source, medium, campaign) lands."""

    group: str
    """GA4 channel group ("Paid Search", "Direct", ..., "Unassigned")."""
    channel: str
    """GAELP channel (``organic``, ``paid_search``, ``social``) or the group in snake case."""


def snake(group: str) -> str:
    """``"Organic Video"`` → ``"organic_video"``."""
    return re.sub(r"[^a-z0-9]+", "_", group.lower()).strip("_")


class _Compiled:
    __slots__ = ("campaign", "group", "medium", "need_all", "source", "source_category")

    def __init__(self, rule: ChannelRule, categories: dict[str, re.Pattern[str]]) -> None:
        def rx(pattern: str) -> re.Pattern[str] | None:
            return re.compile(pattern, re.IGNORECASE) if pattern else None

        self.group = rule.group
        self.source = rx(rule.source)
        self.medium = rx(rule.medium)
        self.campaign = rx(rule.campaign)
        self.source_category = categories[rule.source_category] if rule.source_category else None
        self.need_all = rule.match == "all"

    def matches(self, source: str, medium: str, campaign: str) -> bool:
        checks = [(self.source, source), (self.medium, medium), (self.campaign, campaign),
                  (self.source_category, source)]
        hits = (rx.fullmatch(value) is not None for rx, value in checks if rx is not None)
        return all(hits) if self.need_all else any(hits)


class ChannelMapper:
    """Maps traffic-source triples to channels.

    :param config: the GA4 ingestion settings (rules, categories, group → channel map).
    """

    def __init__(self, config: Ga4Config | None = None) -> None:
        cfg = config or Ga4Config()
        categories = {k: re.compile(v, re.IGNORECASE) for k, v in cfg.source_categories.items()}
        self._rules = [_Compiled(r, categories) for r in cfg.channel_rules]
        self._channels = cfg.channel_of_group
        self._cache: dict[tuple[str | None, str | None, str | None], MappedChannel] = {}

    def map(self, source: str | None, medium: str | None, campaign: str | None = None) -> MappedChannel:
        """The channel group and GAELP channel of one triple.

        :param source: utm_source / GA4 source (None or "" = "(direct)").
        :param medium: utm_medium (None or "" = "(none)").
        :param campaign: campaign name (None = "").
        """
        key = (source, medium, campaign)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._map(*_normalise(source, medium, campaign))
        return hit

    def _map(self, source: str, medium: str, campaign: str) -> MappedChannel:
        group = next((r.group for r in self._rules if r.matches(source, medium, campaign)), UNASSIGNED)
        return MappedChannel(group, self._channels.get(group) or snake(group))


def _normalise(source: str | None, medium: str | None, campaign: str | None) -> tuple[str, str, str]:
    s = (source or "").strip().lower() or "(direct)"
    m = (medium or "").strip().lower() or ("(none)" if s == "(direct)" else "(not set)")
    return s, m, (campaign or "").strip().lower()
