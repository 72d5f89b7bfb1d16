"""Wire contracts: OpenRTB 2.6 subset and GAELP's event records, with their codec."""

from agent_service.contracts.codec import decode, decode_bid_request, encode, to_builtins
from agent_service.contracts.events import (
    Action,
    AdEvent,
    AuctionResult,
    Conversion,
    DeadLetter,
    Decision,
    Experience,
    IdentityLink,
    RewardParts,
    Tick,
    Touch,
)
from agent_service.contracts.openrtb import Bid, BidRequest, BidResponse, Imp, SeatBid
from agent_service.contracts.outside import OutsideDecision

__all__ = [
    "Action",
    "AdEvent",
    "AuctionResult",
    "Bid",
    "BidRequest",
    "BidResponse",
    "Conversion",
    "DeadLetter",
    "Decision",
    "Experience",
    "IdentityLink",
    "Imp",
    "OutsideDecision",
    "RewardParts",
    "SeatBid",
    "Tick",
    "Touch",
    "decode",
    "decode_bid_request",
    "encode",
    "to_builtins",
]
