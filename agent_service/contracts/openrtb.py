"""OpenRTB 2.6 bid request / response: the subset GAELP reads and writes.

Only the fields GAELP uses are declared; every other field (and every ``ext``) is accepted
and ignored, as the spec requires (§3.1: "unknown fields must be tolerated"). Declared fields
are typed as the spec types them, so a request that breaks the spec gets a ``DecodeError``
naming the JSON path. Prices are CPM in ``cur`` (USD by default).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

__all__ = [
    "App",
    "Banner",
    "Bid",
    "BidRequest",
    "BidResponse",
    "Device",
    "Geo",
    "Imp",
    "SeatBid",
    "Site",
    "User",
]

NonNegFloat = Annotated[float, Meta(ge=0)]
Ext = dict[str, Any] | None


class Banner(Struct, kw_only=True, omit_defaults=True):
    w: int | None = None
    h: int | None = None
    pos: int | None = None
    ext: Ext = None


class Imp(Struct, kw_only=True, omit_defaults=True):
    id: str
    """Identifier of this impression within the request (required)."""
    bidfloor: NonNegFloat = 0.0
    """Minimum bid, CPM in ``bidfloorcur``."""
    bidfloorcur: str = "USD"
    banner: Banner | None = None
    video: dict[str, Any] | None = None
    native: dict[str, Any] | None = None
    tagid: str | None = None
    instl: int = 0
    secure: int | None = None
    ext: Ext = None


class Geo(Struct, kw_only=True, omit_defaults=True):
    country: str | None = None
    region: str | None = None
    city: str | None = None
    utcoffset: int | None = None
    ext: Ext = None


class Device(Struct, kw_only=True, omit_defaults=True):
    ua: str | None = None
    ip: str | None = None
    ifa: str | None = None
    """Advertising id of the device: GAELP's device id when present."""
    devicetype: int | None = None
    """AdCOM device type: 1 mobile/tablet, 2 PC, 3 TV, 4 phone, 5 tablet, 6 connected, 7 set-top."""
    os: str | None = None
    make: str | None = None
    model: str | None = None
    language: str | None = None
    geo: Geo | None = None
    ext: Ext = None


class User(Struct, kw_only=True, omit_defaults=True):
    id: str | None = None
    """Exchange-specific user id."""
    buyeruid: str | None = None
    """Buyer-specific user id (a logged-in, hashed id for GAELP's own traffic)."""
    yob: int | None = None
    gender: str | None = None
    keywords: str | None = None
    ext: Ext = None


class Publisher(Struct, kw_only=True, omit_defaults=True):
    id: str | None = None
    name: str | None = None
    domain: str | None = None
    ext: Ext = None


class Site(Struct, kw_only=True, omit_defaults=True):
    id: str | None = None
    domain: str | None = None
    cat: list[str] | None = None
    page: str | None = None
    publisher: Publisher | None = None
    ext: Ext = None


class App(Struct, kw_only=True, omit_defaults=True):
    id: str | None = None
    name: str | None = None
    bundle: str | None = None
    cat: list[str] | None = None
    publisher: Publisher | None = None
    ext: Ext = None


class BidRequest(Struct, kw_only=True, omit_defaults=True):
    id: str
    """Request id (required)."""
    imp: Annotated[list[Imp], Meta(min_length=1)]
    """At least one impression (required)."""
    site: Site | None = None
    app: App | None = None
    device: Device | None = None
    user: User | None = None
    test: int = 0
    at: int = 2
    """Auction type: 1 first price, 2 second price plus; > 500 exchange-specific."""
    tmax: Annotated[int, Meta(gt=0)] | None = None
    """Maximum time in ms the exchange allows for a bid, network included."""
    cur: list[str] | None = None
    """Allowed bid currencies; absent means USD."""
    bcat: list[str] | None = None
    badv: list[str] | None = None
    ext: Ext = None


class Bid(Struct, kw_only=True, omit_defaults=True):
    id: str
    impid: str
    price: float
    """CPM in the response's ``cur``."""
    adid: str | None = None
    crid: str | None = None
    cid: str | None = None
    adomain: list[str] | None = None
    nurl: str | None = None
    ext: Ext = None


class SeatBid(Struct, kw_only=True, omit_defaults=True):
    bid: list[Bid]
    seat: str | None = None
    ext: Ext = None


class BidResponse(Struct, kw_only=True, omit_defaults=True):
    id: str
    seatbid: list[SeatBid] = msgspec.field(default_factory=list)
    bidid: str | None = None
    cur: str = "USD"
    nbr: int | None = None
    ext: Ext = None
