"""BatchHistogram.observe_n counts a value n times exactly as n observations would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from agent_service.metrics import BatchHistogram


def test_observe_n_equals_n_observations() -> None:
    bounds = (0.001, 0.01, 0.1)
    a, b = CollectorRegistry(), CollectorRegistry()
    batched, single = BatchHistogram("h", "x", buckets=bounds, registry=a), Histogram("h", "x", buckets=bounds, registry=b)
    for value, n in ((0.0005, 3), (0.001, 2), (0.05, 4), (5.0, 1), (0.01, 0)):  # on a bound, past the last, none
        batched.observe_n(value, n)
        for _ in range(n):
            single.observe(value)

    def samples(r: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(r).decode().splitlines() if not line.startswith("h_created")]

    assert samples(a) == samples(b)
    assert 'h_bucket{le="0.001"} 5.0' in samples(a)
