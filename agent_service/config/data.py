"""Settings of the data sources (TOML table ``[data]``): how a GA4 export becomes sessions,
touches and conversions (``[data.ga4]``).

The channel mapping follows GA4's default channel grouping: an ordered list of rules
(:class:`ChannelRule`, first match wins) gives each (source, medium, campaign) a GA4 channel
group ("Paid Search", "Organic Social", "Direct", ...), and ``group_channels`` maps groups to
GAELP channels (``agent_service.config.CHANNELS``). A group left unmapped keeps its own name in
snake case ("referral", "email", "unassigned"), so nothing is folded away unseen. Regexes are
Python ``re``, matched case-insensitively against the whole value.

Override in TOML, e.g. direct traffic counted as organic::

    [data.ga4.group_channels]
    Direct = "organic"

``channel_rules`` given in TOML replace the default list as a whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent_service.errors import ConfigError

__all__ = [
    "DEFAULT_CHANNEL_RULES",
    "DEFAULT_GROUP_CHANNELS",
    "DEFAULT_SOURCE_CATEGORIES",
    "ChannelRule",
    "DataConfig",
    "Ga4Config",
]

_PAID = r".*cp.*|ppc|retargeting|paid.*"
_SHOP_CAMPAIGN = r".*(([^a-df-z]|^)shop|shopping).*"
_EMAIL = r"email|e-mail|e_mail|e mail"

DEFAULT_SOURCE_CATEGORIES: dict[str, str] = {
    # Abridged from GA4's source category lists; a host may carry sub-domains and any TLD.
    "search": r"(.*\.)?(google|bing|yahoo|baidu|duckduckgo|yandex|ecosia|naver|ask|aol|seznam|startpage|qwant"
              r"|sogou|so|360|daum|msn|brave|search\.brave|onet|najdi|lycos|avg|search-results)(\.[a-z.]+)?",
    "social": r"(.*\.)?(facebook|fb|instagram|ig|twitter|t|x|linkedin|lnkd|pinterest|reddit|tiktok|snapchat|vk"
              r"|weibo|tumblr|quora|threads|whatsapp|messenger|discord|mastodon|xing)(\.[a-z.]+)?",
    "video": r"(.*\.)?(youtube|youtu|vimeo|twitch|dailymotion|wistia|netflix)(\.[a-z.]+)?",
    "shopping": r"(.*\.)?(amazon|ebay|etsy|shopify|walmart|aliexpress|alibaba|mercadolibre|rakuten|igshopping"
                r"|shopping\.google|google shopping)(\.[a-z.]+)?",
}
"""Source categories the rules can name: category → regex over the source."""


@dataclass(frozen=True)
class ChannelRule:
    """One rule of the channel grouping: when its conditions hold, the touch gets ``group``."""

    group: str
    """GA4 channel group assigned, e.g. "Paid Search"."""
    source: str = ""
    """Regex the source must match ("" = no condition)."""
    medium: str = ""
    """Regex the medium must match ("" = no condition)."""
    campaign: str = ""
    """Regex the campaign name must match ("" = no condition)."""
    source_category: str = ""
    """A key of ``source_categories`` whose regex the source must match ("" = no condition)."""
    match: str = "all"
    """``all``: every condition given must hold; ``any``: one is enough."""

    def __post_init__(self) -> None:
        if not self.group:
            raise ConfigError("group", "must name a channel group")
        if self.match not in ("all", "any"):
            raise ConfigError("match", "must be 'all' or 'any'")
        if not (self.source or self.medium or self.campaign or self.source_category):
            raise ConfigError("group", "a rule needs at least one of source, medium, campaign, source_category")
        for name in ("source", "medium", "campaign"):
            try:
                re.compile(getattr(self, name))
            except re.error as exc:
                raise ConfigError(name, f"not a valid regex: {exc}") from None


R = ChannelRule
DEFAULT_CHANNEL_RULES: tuple[ChannelRule, ...] = (
    R("Direct", source=r"\(direct\)", medium=r"\(none\)|\(not set\)|"),
    R("Cross-network", campaign=r".*cross-network.*"),
    R("Paid Shopping", source_category="shopping", medium=_PAID),
    R("Paid Shopping", campaign=_SHOP_CAMPAIGN, medium=_PAID),
    R("Paid Search", source_category="search", medium=_PAID),
    R("Paid Social", source_category="social", medium=_PAID),
    R("Paid Video", source_category="video", medium=_PAID),
    R("Display", medium=r"display|banner|expandable|interstitial|cpm"),
    R("Paid Other", medium=_PAID),
    R("Organic Shopping", source_category="shopping", campaign=_SHOP_CAMPAIGN, match="any"),
    R("Organic Social", source_category="social",
      medium=r"social|social-network|social-media|sm|social network|social media", match="any"),
    R("Organic Video", source_category="video", medium=r".*video.*", match="any"),
    R("Organic Search", source_category="search", medium=r"organic", match="any"),
    R("Referral", medium=r"referral|app|link"),
    R("Email", source=_EMAIL, medium=_EMAIL, match="any"),
    R("Affiliates", medium=r"affiliate"),
    R("Audio", medium=r"audio"),
    R("SMS", source=r"sms", medium=r"sms", match="any"),
    R("Mobile Push Notifications", source=r"firebase", medium=r".*push|.*mobile.*|.*notification.*", match="any"),
)
"""GA4's default channel grouping, in its order (first match wins; no match: "Unassigned")."""
del R

DEFAULT_GROUP_CHANNELS: dict[str, str] = {
    "Paid Search": "paid_search",
    "Paid Shopping": "paid_search",
    "Cross-network": "paid_search",
    "Organic Search": "organic",
    "Organic Shopping": "organic",
    "Organic Social": "social",
    "Paid Social": "social",
    "Direct": "direct",
}
"""GA4 channel group → GAELP channel; other groups keep their name in snake case."""


@dataclass(frozen=True)
class Ga4Config:
    """How GA4 export rows become sessions, touches and conversions (TOML table ``[data.ga4]``)."""

    conversion_events: tuple[str, ...] = ("purchase",)
    """Event names counted as conversions (GA4 key events such as ``generate_lead`` can be added)."""
    page_view_events: tuple[str, ...] = ("page_view", "screen_view")
    """Event names counted as page views (a session's depth)."""
    session_source: str = "observed"
    """Where a session's source/medium/campaign comes from: ``observed`` — what arrived in the session
    (collected_traffic_source, gclid, the source/medium/campaign event params; the user's first-touch
    traffic_source for their first session; else (direct)) — or ``last_click`` — GA4's
    session_traffic_source_last_click when present (cross-session last non-direct click, as the GA4
    UI reports sessions), else as ``observed``."""
    source_categories: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SOURCE_CATEGORIES))
    """Category → regex over the source, named by rules' ``source_category``."""
    channel_rules: tuple[ChannelRule, ...] = DEFAULT_CHANNEL_RULES
    """Ordered channel-group rules, first match wins (TOML ``[[data.ga4.channel_rules]]`` replaces them)."""
    group_channels: dict[str, str] = field(default_factory=dict)
    """Overrides of ``DEFAULT_GROUP_CHANNELS`` (group → GAELP channel), merged over them."""

    def __post_init__(self) -> None:
        if not self.conversion_events:
            raise ConfigError("data.ga4.conversion_events", "name at least one event (e.g. 'purchase')")
        if self.session_source not in ("observed", "last_click"):
            raise ConfigError("data.ga4.session_source", "must be 'observed' or 'last_click'")
        for name, pattern in self.source_categories.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"data.ga4.source_categories.{name}", f"not a valid regex: {exc}") from None
        for i, rule in enumerate(self.channel_rules):
            if rule.source_category and rule.source_category not in self.source_categories:
                raise ConfigError(f"data.ga4.channel_rules[{i}].source_category",
                                  f"unknown category; known: {', '.join(sorted(self.source_categories))}")
        for group, channel in self.group_channels.items():
            if not channel:
                raise ConfigError(f"data.ga4.group_channels.{group}", "must name a channel")

    @property
    def channel_of_group(self) -> dict[str, str]:
        """The full group → channel map: defaults with ``group_channels`` applied."""
        return {**DEFAULT_GROUP_CHANNELS, **self.group_channels}


@dataclass(frozen=True)
class DataConfig:
    """The data sources (TOML table ``[data]``)."""

    ga4: Ga4Config = field(default_factory=Ga4Config)
    """GA4 export ingestion (``gaelp ingest ga4``)."""
