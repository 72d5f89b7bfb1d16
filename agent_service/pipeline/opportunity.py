"""Reading an OpenRTB impression: who it is for, which channels it offers, its floor and context."""

from __future__ import annotations

import hashlib

from agent_service.agent.model.opportunity import Opportunity
from agent_service.config import CHANNELS
from agent_service.contracts.openrtb import BidRequest, Imp

__all__ = ["DEFAULT_CHANNELS", "channels_of", "device_id_of", "opportunity_of"]

DEFAULT_CHANNELS: tuple[str, ...] = ("social",)
"""Channels of a plain OpenRTB impression (exchange display/social inventory)."""


def device_id_of(req: BidRequest) -> str:
    """The device id GAELP keys journeys on.

    ``device.ifa`` when present; else the buyer uid or exchange user id; else a digest of
    IP and user agent (a weak, probabilistic id, never stored raw).
    """
    dev, user = req.device, req.user
    if dev is not None and dev.ifa:
        return dev.ifa
    if user is not None and (user.buyeruid or user.id):
        return f"u-{user.buyeruid or user.id}"
    raw = f"{dev.ip if dev else ''}|{dev.ua if dev else ''}"
    return "h-" + hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


def channels_of(imp: Imp) -> tuple[str, ...]:
    """Channels offered by an impression: ``imp.ext.gaelp.channels`` or ``DEFAULT_CHANNELS``."""
    ext = imp.ext or {}
    gaelp = ext.get("gaelp") if isinstance(ext, dict) else None
    chans = gaelp.get("channels") if isinstance(gaelp, dict) else None
    if isinstance(chans, list):
        picked = tuple(c for c in CHANNELS if c in chans)
        if picked:
            return picked
    return DEFAULT_CHANNELS


def _context_of(req: BidRequest) -> str:
    if req.site is not None:
        if req.site.cat:
            return req.site.cat[0]
        return req.site.domain or ""
    if req.app is not None:
        if req.app.cat:
            return req.app.cat[0]
        return req.app.bundle or ""
    return ""


def opportunity_of(req: BidRequest, imp: Imp, event_time: int, floor_cpm_usd: float | None = None) -> Opportunity:
    """The feature-relevant view of one impression.

    :param floor_cpm_usd: the floor in USD when the caller converted it from ``bidfloorcur``
        (default: ``imp.bidfloor``, a USD floor)."""
    return Opportunity(
        event_time=event_time,
        devicetype=req.device.devicetype if req.device is not None else None,
        channels=channels_of(imp),
        floor_cpm_usd=imp.bidfloor if floor_cpm_usd is None else floor_cpm_usd,
        context=_context_of(req),
    )
