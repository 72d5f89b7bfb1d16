"""The enriched state: every feature documented, bounded, built from what the service knows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agent_service.agent.model.state import (
    LOG_COLUMNS,
    TOUCH_FEATURES,
    CampaignStats,
    JourneyArrays,
    OpportunityArrays,
    PacingInputs,
    StateSpec,
    build_states,
    journey_arrays,
)
from agent_service.contracts.events import Touch
from agent_service.errors import ConfigError
from agent_service.units import DAY_MS as DAY

T0 = 1_767_225_600_000 + 14 * 3_600_000


def _opps(n: int, spec: StateSpec, rng: np.random.Generator) -> OpportunityArrays:
    seg = rng.dirichlet(np.ones(spec.segments), n)
    return OpportunityArrays(T0 + rng.integers(0, DAY, n), rng.integers(0, 3, n), rng.random((n, 3)) < 0.6,
                             rng.uniform(0, 3, n), seg, rng.random(n), rng.integers(1, 4, n),
                             rng.integers(0, spec.ab_variants, n), rng.uniform(0, 50, n), rng.integers(0, 10**9, n))


def _journeys(n: int, spec: StateSpec, rng: np.random.Generator) -> JourneyArrays:
    j = JourneyArrays.empty(n, spec.max_touches)
    for b in range(n):
        k = int(rng.integers(0, spec.max_touches + 1))
        if k:
            j.time_ms[b, -k:] = np.sort(T0 - rng.integers(0, 14 * DAY, k))
            j.channel[b, -k:] = rng.integers(0, 3, k)
            j.creative[b, -k:] = rng.integers(0, spec.creatives, k)
            j.clicked[b, -k:] = rng.random(k) < 0.2
            j.cost_cpm_usd[b, -k:] = rng.uniform(0, 12, k)
    return j


def test_every_feature_is_documented_and_the_layout_adds_up() -> None:
    spec = StateSpec(creatives=12)
    names = [n for n, _ in spec.features]
    assert len(names) == len(set(names)) == spec.dim
    assert all(meaning.strip() for _, meaning in spec.features)
    for group in ("stage_", "segment_", "device_", "avail_", "last_", "exposures_", "hour_", "dow_", "season_",
                  "ab_variant_"):
        assert any(n.startswith(group) for n in names), group
    for name in ("fatigue", "td_credit_share", "p_conv_journey", "win_rate", "auction_density", "budget_left",
                 "pace", "identity_confidence", "device_count", "ab_lift"):
        assert name in spec.index
    assert spec.net_dim == spec.dim - len(LOG_COLUMNS) - spec.arm_columns and len(TOUCH_FEATURES) == spec.touch_dim
    assert all(meaning.startswith("LOG:") for _, meaning in spec.features[spec.net_dim:])
    assert {"exp_in", "exp_control", "exp_arm_value"} <= set(names[:spec.net_dim])


def test_states_are_bounded_and_consistent() -> None:
    spec, rng = StateSpec(creatives=12), np.random.default_rng(0)
    n = 300
    pacing = PacingInputs(15.0, 6.0, 0.5, 0.4, 0.35, 0.2, 0.15, -0.7, 0.9, 1.3)
    b = build_states(spec, _opps(n, spec, rng), _journeys(n, spec, rng), pacing, CampaignStats(12))
    assert b.state.shape == (n, spec.dim) and b.state.dtype == np.float32
    assert np.isfinite(b.state).all() and np.isfinite(b.touches).all()
    net = b.state[:, :spec.net_dim]
    assert net.min() >= -1.0 and net.max() <= 1.0
    assert b.touches.min() >= 0.0 and b.touches.max() <= 1.0
    stage = b.state[:, spec.cols("stage_")]
    assert np.allclose(stage.sum(1), 1.0)
    assert np.allclose(b.state[:, spec.cols("segment_")].sum(1), 1.0, atol=1e-5)
    # padding: creative index C, zero features; real touches flagged present
    present = b.touches[:, :, 0] > 0
    assert ((b.touch_creatives == spec.creatives) == ~present).all()
    assert np.allclose(b.state[:, spec.index["budget_left"]], (15 - 6.5) / 15)


def test_the_serving_encoder_skips_padding_and_equals_the_full_lstm() -> None:
    """encode_padded (serving) runs only the real touches; it must give the full 16-step LSTM's code,
    for a batch of mixed lengths, for journeys all empty, and again after the weights change."""
    import torch

    from agent_service.agent.model.networks import JourneyEncoder

    spec, rng = StateSpec(creatives=12), np.random.default_rng(3)
    torch.manual_seed(0)
    enc = JourneyEncoder(spec.touch_dim, spec.creatives, 4, 32)
    pacing = PacingInputs(15.0, 6.0, 0.5, 0.4, 0.35, 0.2, 0.15, -0.7, 0.9, 1.3)
    b = build_states(spec, _opps(64, spec, rng), _journeys(64, spec, rng), pacing, CampaignStats(12))
    touches, creatives = torch.from_numpy(b.touches), torch.from_numpy(b.touch_creatives)
    lengths = (b.touches[:, :, 0] > 0).sum(1)
    assert lengths.min() == 0 and 0 < np.median(lengths) < spec.max_touches  # mixed lengths, some empty
    with torch.no_grad():
        for _ in range(2):
            full, fast = enc(touches, creatives), enc.encode_padded(touches, creatives)
            assert torch.allclose(full, fast, atol=1e-5)
            short = slice(0, 8)  # a batch whose longest journey is shorter than in the whole batch
            assert torch.allclose(enc(touches[short], creatives[short]),
                                  enc.encode_padded(touches[short], creatives[short]), atol=1e-5)
            partial = torch.from_numpy(np.flatnonzero((lengths > 0) & (lengths < spec.max_touches)))
            assert torch.allclose(enc(touches[partial], creatives[partial]),
                                  enc.encode_padded(touches[partial], creatives[partial]), atol=1e-5)
            empty = torch.from_numpy(np.flatnonzero(lengths == 0))
            assert torch.allclose(enc(touches[empty], creatives[empty]),
                                  enc.encode_padded(touches[empty], creatives[empty]), atol=1e-5)
            for p in enc.parameters():  # an in-place update (as an optimiser step) must refresh the cache
                p.add_(0.05 * torch.randn_like(p))


def _heads(net: Any, state: np.ndarray, touches: np.ndarray, creatives: np.ndarray) -> np.ndarray:
    """forward()'s outputs in serve_np's layout (creative, channel, target, click terms; no critic)."""
    import torch

    out = net(torch.from_numpy(state), torch.from_numpy(touches), torch.from_numpy(creatives))
    return torch.cat([out.creative_logits, out.channel_logits, out.target_logits, out.click_creative,
                      out.click_channel], dim=-1).numpy()


def test_the_numpy_serving_path_equals_the_torch_heads() -> None:
    """HybridNet.serve_np (numpy on views of the weights) must give forward()'s heads: with and
    without journeys, with and without the wide click part, and after in-place weight updates
    and a load_state_dict (the views share the parameters' memory)."""
    import torch

    from agent_service.agent.model.networks import HybridNet

    spec, rng = StateSpec(creatives=12), np.random.default_rng(5)
    pacing = PacingInputs(15.0, 6.0, 0.5, 0.4, 0.35, 0.2, 0.15, -0.7, 0.9, 1.3)
    b = build_states(spec, _opps(48, spec, rng), _journeys(48, spec, rng), pacing, CampaignStats(12))
    empty = np.flatnonzero((b.touches[:, :, 0] > 0).sum(1) == 0)
    assert 0 < len(empty) < 48
    for exposure_at in (spec.cols("exposures_").start, -1):
        torch.manual_seed(1)
        net = HybridNet(spec.net_dim, spec.touch_dim, spec.creatives, 3, spec.segments + 1, 32, 4, 24,
                        spec.cols("segment_").start, exposure_at)
        with torch.no_grad():
            for p in net.parameters():  # heads start at zero: give every weight a value
                p.add_(0.3 * torch.randn_like(p))
            for rows in (np.arange(48), empty, np.arange(3)):
                state, touches, creatives = b.state[rows], b.touches[rows], b.touch_creatives[rows]
                for _ in range(2):
                    ref = _heads(net, state, touches, creatives)
                    got = net.serve_np(state, touches, creatives)
                    assert got.shape == ref.shape
                    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
                    for p in net.parameters():  # an optimiser step: in place
                        p.add_(0.05 * torch.randn_like(p))
            named = net(torch.from_numpy(b.state), torch.from_numpy(b.touches), torch.from_numpy(b.touch_creatives))
            served = net.heads(net.serve_np(b.state, b.touches, b.touch_creatives))
            for head in served._fields:  # the serving path's heads by name are forward()'s of that name
                np.testing.assert_allclose(getattr(served, head), getattr(named, head).numpy(), rtol=1e-4, atol=1e-5)
            other = HybridNet(*net.dims)
            net.load_state_dict(other.state_dict())
            ref = _heads(net, b.state, b.touches, b.touch_creatives)
            np.testing.assert_allclose(net.serve_np(b.state, b.touches, b.touch_creatives), ref,
                                       rtol=1e-4, atol=1e-5)


def test_clock_and_pacing_columns_by_hand() -> None:
    spec, rng = StateSpec(creatives=12), np.random.default_rng(1)
    opp = _opps(2, spec, rng)
    six_am = 1_767_225_600_000 + 6 * 3_600_000  # 2026-01-01 (a Thursday) 06:00 UTC
    opp = opp._replace(event_time=np.array([six_am, six_am + 3 * DAY]))
    pacing = PacingInputs(20.0, 5.0, 1.0, 0.25, 0.5, 0.3, 0.2, -0.6, 0.7, 2.0)
    b = build_states(spec, opp, JourneyArrays.empty(2, spec.max_touches), pacing, CampaignStats(12))
    ix = spec.index
    assert b.state[0, ix["hour_sin"]] == pytest.approx(1.0) and b.state[0, ix["hour_cos"]] == pytest.approx(0.0, abs=1e-6)
    day = six_am // DAY
    for k, d in enumerate((day, day + 3)):
        assert b.state[k, ix["dow_sin"]] == pytest.approx(np.sin(2 * np.pi * ((d + 3) % 7) / 7), abs=1e-6)
        assert b.state[k, ix["season_cos"]] == pytest.approx(np.cos(2 * np.pi * (d % 365.25) / 365.25), abs=1e-6)
    expect = {"auction_density": 1.0, "budget_left": (20 - 6) / 20, "time_left": 0.75,
              "pace": min(1.0, 5.0 / (0.5 * 20) / 2), "spend_rate": min(1.0, 0.3 / 0.2 / 2),
              "pacing_factor": -0.3, "slot_action_prob": 0.7}
    for name, value in expect.items():
        assert b.state[:, ix[name]] == pytest.approx([value, value], abs=1e-6), name


def test_journey_arrays_keep_the_newest_touches_oldest_first_and_pack_round_trips() -> None:
    spec = StateSpec(creatives=4, max_touches=3)
    touches = [Touch(decision_id=f"d{i}", event_time=T0 - (5 - i) * 3_600_000, channel="social", creative=i % 4,
                     segment=0, device_id="a" if i % 2 else "b", clicked=i == 4) for i in range(5)]
    j = journey_arrays([touches, []], ["a", "a"], 3)
    assert j.time_ms[0].tolist() == [t.event_time for t in touches[-3:]]
    assert j.channel[1].tolist() == [-1, -1, -1]
    assert j.other_device[0].tolist() == [True, False, True] and j.clicked[0].tolist() == [False, False, True]
    rng = np.random.default_rng(1)
    opp = _opps(2, spec, rng)
    b = build_states(spec, opp, j, PacingInputs(10, 1, 0, 0.5, 0.5), CampaignStats(4))
    pacing = np.arange(9, dtype=np.float32) / 10
    logged = spec.pack(b, pacing)
    assert logged.shape == (2, spec.logged_dim)
    back, pac = spec.unpack(logged)
    assert np.array_equal(back.state, b.state) and np.array_equal(back.touches, b.touches)
    assert np.array_equal(back.touch_creatives, b.touch_creatives) and np.allclose(pac, pacing)
    assert b.state[0, spec.index["stage_decision"]] == 1.0 and b.state[1, spec.index["stage_awareness"]] == 1.0


def test_bad_layouts_are_refused_by_key() -> None:
    with pytest.raises(ConfigError, match="state.creatives"):
        StateSpec(creatives=0)


def test_conversion_value_is_learnt_per_segment_and_shrunk_to_the_campaign_mean() -> None:
    stats = CampaignStats(4, segments=3)
    np.testing.assert_allclose(stats.value_by_segment(30.0), 30.0)  # nothing seen: the prior everywhere
    post = np.array([[1.0, 0, 0]] * 20 + [[0, 0.5, 0.5]] * 20)
    stats.observe_conversions(np.zeros(40, np.int64), np.array([60.0] * 20 + [10.0] * 20), post)
    v = stats.value_by_segment(30.0)
    mean = stats.value_per_conversion(30.0)
    assert v[0] > mean > v[1] == pytest.approx(v[2]) and 10.0 < v[1] < mean
    np.testing.assert_allclose(stats.value_for(np.array([[1.0, 0, 0], [0.5, 0.5, 0]])), [v[0], (v[0] + v[1]) / 2])
    again = CampaignStats.from_state(stats.state())
    np.testing.assert_allclose(again.value_by_segment(30.0), v)
    old = stats.state()
    for k in ("segments", "segment_value_usd", "segment_weight"):  # a checkpoint from before per-segment values
        old.pop(k)
    assert CampaignStats.from_state(old).value_by_segment(30.0).shape == (8,)


def test_the_arm_slots_are_logged_exactly_and_restrict_the_catalogue_mask() -> None:
    from agent_service.agent.model.state import ArmInputs, arm_bits, arm_mask
    from agent_service.creatives import restrict_to_arms

    spec = StateSpec(creatives=64)
    assert spec.arm_columns == 3
    rng = np.random.default_rng(0)
    slots = rng.random((5, 64)) < 0.3
    slots[0] = False  # a person in no experiment
    slots[1] = False
    slots[1, 63] = True  # the highest bit of the last column
    bits = arm_bits(slots)
    assert bits.dtype == np.float32 and float(bits.max()) < 2**24
    state = np.zeros((5, spec.dim), np.float32)
    first = spec.index["exp_slots_0"]
    state[:, first:first + 3] = bits
    got = arm_mask(spec, state)
    assert got is not None and (got == slots).all()
    assert arm_mask(spec, np.zeros((2, spec.dim), np.float32)) is None
    eligible = np.ones((5, 64), bool)
    eligible[:, 63] = False  # not on this channel
    mask = restrict_to_arms(eligible, slots)
    assert (mask[0] == eligible[0]).all()  # no arm: the catalogue decides
    assert mask[1].tolist() == slots[1].tolist()  # the arm's only creative is ineligible: the arm still decides
    assert (mask[2:] == (slots[2:] & eligible[2:])).all()
    # build_states writes the group from ArmInputs
    B = 2
    arms = ArmInputs(np.array([[True] + [False] * 63, [False] * 64]), np.array([True, False]), np.array([3.0, 9.0]))
    opp = OpportunityArrays(np.full(B, T0), np.zeros(B, np.int64), np.ones((B, 3), bool), np.zeros(B),
                            np.full((B, spec.segments), 1 / spec.segments), np.ones(B), np.ones(B), np.zeros(B, np.int64),
                            np.zeros(B), np.zeros(B, np.int64), arms=arms)
    b = build_states(spec, opp, JourneyArrays.empty(B, spec.max_touches), PacingInputs(100.0, 0.0, 0.0, 0.5, 0.5),
                     CampaignStats(64))
    ix = spec.index
    assert b.state[:, ix["exp_in"]].tolist() == [1.0, 0.0] and b.state[:, ix["exp_control"]].tolist() == [1.0, 0.0]
    assert b.state[:, ix["exp_arm_value"]].tolist() == [1.0, 0.5]  # capped; 0.5 outside an experiment
    logged = arm_mask(spec, b.state)
    assert logged is not None and logged[0, 0] and not logged[1].any()


def test_a_batch_without_touches_gets_the_journey_columns_the_full_path_computes() -> None:
    # The no-touch batch takes constants; in a batch where someone has a touch, the same rows go
    # through the full computation: both must give the same bits.
    spec, rng = StateSpec(creatives=12), np.random.default_rng(5)
    pacing = PacingInputs(1000.0, 300.0, 20.0, 0.4, 0.5, 12.0, 10.0, 0.2, 0.9, 1.1)
    stats = CampaignStats(12)
    stats.impressions[:], stats.clicks[:], stats.conversions[:] = 100.0, rng.uniform(0, 5, 12), rng.uniform(0, 1, 12)
    n = 9
    opp = _opps(n, spec, rng)
    mixed = _journeys(n, spec, rng)
    mixed.channel[1:] = -1  # only row 0 has touches
    mixed.channel[0, -1] = 1
    full = build_states(spec, opp, mixed, pacing, stats)
    alone = build_states(spec, OpportunityArrays._make(None if a is None else a[1:] for a in opp),
                         JourneyArrays._make(a[1:] for a in mixed), pacing, stats)
    assert not (alone.touches != 0).any()
    np.testing.assert_array_equal(alone.state, full.state[1:])
    np.testing.assert_array_equal(alone.touches, full.touches[1:])
    np.testing.assert_array_equal(alone.touch_creatives, full.touch_creatives[1:])
