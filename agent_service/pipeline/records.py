"""What handlers return: records to publish, clean-up to run after publishing, dead letters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

import msgspec

from agent_service.contracts.codec import encode
from agent_service.contracts.events import DeadLetter
from agent_service.metrics import Metrics
from agent_service.pipeline.pseudonym import Pseudonymizer, redact
from agent_service.ports.bus import BusRecord, EventBus

__all__ = ["HandleResult", "Output", "dead_letter", "publish_result", "reason_label"]


class Output(NamedTuple):
    """A record to publish."""

    topic: str
    key: bytes | None
    value: bytes


class HandleResult(NamedTuple):
    outputs: list[Output]
    after_publish: list[Callable[[], Awaitable[None]]]
    """Clean-up that must run only after ``outputs`` are durably published."""


def reason_label(reason: str) -> str:
    """A bounded metric label for a failure reason (never the raw message)."""
    for prefix, label in (("invalid JSON", "invalid_json"), ("Expected", "type"), ("required", "missing_field"),
                          ("duplicate", "duplicate"), ("unknown decision", "unknown_decision"),
                          ("win without", "unreserved_win")):
        if reason.startswith(prefix):
            return label
    return "invalid"


_MAX_OPAQUE = 512


def _safe_payload(raw: bytes, ids: Pseudonymizer | None) -> str:
    """The record for the dead-letter topic: JSON with its personal ids pseudonymised; anything
    that is not JSON (and so cannot be redacted field by field) cut to a short prefix."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            text = raw.hex()
        return text[:_MAX_OPAQUE]
    if ids is not None:
        value = redact(value, ids)
    return msgspec.json.encode(value).decode()


def dead_letter(rec: BusRecord, field: str, reason: str, topic: str, metrics: Metrics,
                ids: Pseudonymizer | None = None) -> Output:
    """A dead-letter record for ``rec`` naming the field and the reason (ids pseudonymised)."""
    metrics.dead_letters.labels(rec.topic, reason_label(reason)).inc()
    payload = _safe_payload(rec.value, ids)
    letter = DeadLetter(id=f"{rec.topic}:{rec.partition}:{rec.offset}", topic=rec.topic, reason=reason,
                        field=field, payload=payload[:10_000])
    return Output(topic, None, encode(letter))


async def publish_result(bus: EventBus, result: HandleResult) -> None:
    """Publish a handler's outputs durably (one batch call per topic, each key's records in
    order), then run its clean-up."""
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
    for out in result.outputs:
        by_topic.setdefault(out.topic, []).append((out.key, out.value))
    for topic, records in by_topic.items():
        await bus.publish_many(topic, records)
    await bus.flush()
    for step in result.after_publish:
        await step()
