"""Data-driven attribution in the stream: refitted from the journeys it sees, equal to the batch
model on the same journeys, linear before the first fit, and selected by ``[join] attribution``."""

from __future__ import annotations

import numpy as np
import pytest

from agent_service.attribution.batch import attribute_paths, fit_journey_model
from agent_service.attribution.config import AttributionConfig
from agent_service.attribution.online import OnlineJourneyModel
from agent_service.attribution.paths import PathTable
from agent_service.config import GaelpConfig
from agent_service.contracts.events import Touch
from agent_service.errors import ConfigError
from agent_service.pipeline.flow import stream_attribution

CHANNELS = ("paid_search", "social", "organic")


def _journeys(n: int, seed: int) -> list[tuple[tuple[str, ...], bool, float]]:
    """Paths where search converts far more often than social (organic in between)."""
    rng = np.random.default_rng(seed)
    rate = {"paid_search": 0.3, "social": 0.05, "organic": 0.15}
    out = []
    for _ in range(n):
        path = tuple(rng.choice(CHANNELS, size=int(rng.integers(1, 5))).tolist())
        p = 1 - np.prod([1 - rate[c] for c in path])
        out.append((path, bool(rng.random() < p), float(rng.lognormal(3, 0.5))))
    return out


def _touches(path: tuple[str, ...]) -> list[Touch]:
    return [Touch(decision_id=f"d{i}", event_time=1_000 * i, channel=c, creative=0, segment=0, device_id="x")
            for i, c in enumerate(path)]


def test_given_the_same_journeys_the_online_fit_is_the_batch_model() -> None:
    journeys = _journeys(3000, 0)
    model = OnlineJourneyModel(AttributionConfig(model="markov"), refit_every=100, min_conversions=50)
    for path, converted, value in journeys:
        if converted:
            model.observe_conversion(path, value)
        else:
            model.observe_null(path)
    model.refit()  # the journeys since the last scheduled refit too
    batch = fit_journey_model(PathTable.from_journeys(journeys), AttributionConfig(model="markov"))
    path = ("social", "organic", "paid_search")
    online = dict(model.credit(_touches(path), 10_000))
    expected = batch.journey_fractions(list(path))
    assert [online[f"d{i}"] for i in range(3)] == pytest.approx(expected.tolist(), abs=1e-12)
    credit = attribute_paths(PathTable.from_journeys(journeys), "markov").as_dict()
    assert credit["paid_search"]["conversions"] > credit["social"]["conversions"]  # the data's signal


def test_linear_until_enough_conversions_then_refits_on_schedule() -> None:
    model = OnlineJourneyModel(AttributionConfig(model="markov"), refit_every=50, min_conversions=100)
    path = ("social", "paid_search")
    assert dict(model.credit(_touches(path), 5_000)) == pytest.approx({"d0": 0.5, "d1": 0.5})  # linear fallback
    assert model.fitted_on == 0
    seen = 0
    for p, converted, value in _journeys(2000, 1):
        if converted:
            model.observe_conversion(p, value)
            seen += 1
        else:
            model.observe_null(p)
    assert model.fitted is not None and model.refits == 1 + (seen - 100) // 50
    fitted = dict(model.credit(_touches(path), 5_000))
    assert sum(fitted.values()) == pytest.approx(1.0) and fitted["d1"] > fitted["d0"]  # search earns more


def test_join_attribution_selects_the_online_model_and_refuses_unknown_names() -> None:
    for name in ("markov", "data_driven"):
        model = stream_attribution(GaelpConfig().replace("join", attribution=name))
        assert isinstance(model, OnlineJourneyModel)
    assert not isinstance(stream_attribution(GaelpConfig()), OnlineJourneyModel)
    with pytest.raises(ConfigError, match="join.attribution"):
        stream_attribution(GaelpConfig().replace("join", attribution="magic"))
    with pytest.raises(ConfigError, match="refit_every"):
        GaelpConfig().replace("join", attribution_refit_every=0)


async def test_the_stream_feeds_the_model_once_per_conversion_and_nulls_at_window_close() -> None:
    from agent_service.adapters.memory_store import MemoryStore
    from agent_service.contracts.events import AuctionResult, Conversion
    from agent_service.contracts.openrtb import BidRequest, Device, Imp, Site
    from tests.flowkit import DAY, T0, FlowKit

    cfg = GaelpConfig().replace("join", attribution="markov").replace("budget", daily_usd=100.0)
    kit = FlowKit(MemoryStore(), cfg)
    model = kit.flow.outcomes.attribution
    assert isinstance(model, OnlineJourneyModel)
    won = []
    for i, dev in enumerate(("dev-a", "dev-a", "dev-b")):
        req = BidRequest(id=f"r{i}", imp=[Imp(id="1", bidfloor=0.5)], site=Site(id="s", cat=["IAB1"]),
                         device=Device(ifa=dev, devicetype=4), ext={"gaelp": {"event_time": T0 + i * 60_000,
                                                                             "channels": ["social"]}})
        [dec] = (await kit.flow.decider.decide([(req, T0 + i * 60_000)]))[0].decisions
        assert dec.bid, dec.no_bid_reason
        await kit.handle(kit.topics.auction_results, AuctionResult(
            id=f"a{i}", event_time=T0 + i * 60_000 + 1, decision_id=dec.id, won=True, price_paid_micros=1_000))
        won.append(dec)
    await kit.ticks(T0 + DAY)
    conv = Conversion(id="c1", event_time=T0 + DAY, value_micros=30_000_000, device_id="dev-a")
    await kit.handle(kit.topics.conversions, conv)
    await kit.handle(kit.topics.conversions, conv)  # redelivered: the model sees it once
    assert [(p, c) for p, c, _ in model.journeys] == [(("social", "social"), True)]
    await kit.ticks(T0 + 16 * DAY)  # every window closes; dev-b's touch led nowhere
    for _ in range(3):
        result = await kit.flow.advance()
        for step in result.after_publish:
            await step()
    nulls = [p for p, c, _ in model.journeys if not c]
    assert nulls == [("social",)]  # only the uncredited touch, once, when its window closed
