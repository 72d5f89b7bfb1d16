"""The creative catalogue: parsed and checked with errors naming the field, eligibility by time
and channel on the bid path and in the learner alike, reloaded without a restart, and a new
creative starting from the others' mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agent_service.agent.learning.learner import HybridLearner
from agent_service.agent.model.state import OpportunityArrays, PacingInputs, build_states, journey_arrays
from agent_service.agent.serving.hybrid import HybridAgent, spec_of
from agent_service.config import CHANNELS, RewardConfig
from agent_service.config.agent import HybridConfig
from agent_service.creatives import Catalogue, CatalogueFile, Creative
from agent_service.errors import ConfigError
from agent_service.units import DAY_MS as DAY

T = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _write(path: Path, entries: list[str]) -> None:
    path.write_text("\n".join(f"[[creative]]\n{e}" for e in entries))


def test_the_default_catalogue_is_sixty_creatives_on_every_channel() -> None:
    cat = Catalogue.generated(60)
    assert len(cat) == 60 and cat.slot("c59") == 59
    assert cat.mask(np.array([0]), np.array([1]), 64)[0].tolist() == [True] * 60 + [False] * 4


@pytest.mark.parametrize(("entry", "field"), [
    ('id = ""', "creatives[0].id"),
    ('id = "a"\nchannels = ["tv"]', "creatives[0].channels"),
    ('id = "a"\nstart = "2026-02-01"\nstop = "2026-01-01"', "creatives[0].stop"),
    ('id = "a"\nstart = "not a date"', "creatives[0].start"),
    ('id = "a"\ncolour = "red"', "creatives[0].colour"),
    ('id = "a"\nmeta = { n = 1 }', "creatives[0].meta"),
])
def test_a_bad_entry_is_refused_naming_its_field(tmp_path: Path, entry: str, field: str) -> None:
    path = tmp_path / "creatives.toml"
    _write(path, [entry])
    with pytest.raises(ConfigError) as err:
        Catalogue.load(path)
    assert err.value.key == field


def test_twice_the_same_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    _write(path, ['id = "a"', 'id = "a"'])
    with pytest.raises(ConfigError, match="appears twice"):
        Catalogue.load(path)


def test_eligibility_follows_dates_and_channels(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    _write(path, ['id = "search-only"\nchannels = ["paid_search"]', 'id = "january"\nstop = "2026-02-01"',
                  'id = "february"\nstart = 2026-02-01T00:00:00Z\ntext = "Feb"\nmeta = { theme = "winter" }'])
    cat = Catalogue.load(path)
    jan, feb = T + DAY, T + 40 * DAY
    m = cat.mask(np.array([jan, jan, feb]), np.array([1, 2, 2]), 4)
    assert m.tolist() == [[True, True, False, False], [False, True, False, False], [False, False, True, False]]
    assert cat.creatives[2].meta == (("theme", "winter"),) and cat.creatives[2].text == "Feb"


def test_reloaded_without_restart_slots_never_move_and_dropped_ones_retire(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    _write(path, ['id = "a"', 'id = "b"'])
    clock = [0.0]
    f = CatalogueFile(str(path), 60, capacity=4, reload_s=5.0, clock=lambda: clock[0])
    first = f.current(T)
    _write(path, ['id = "b"', 'id = "c"\nchannels = ["social"]'])
    import os
    os.utime(path, ns=(1, 10**18))  # a new mtime even on coarse clocks
    assert f.current(T + 1) is first  # not checked again before reload_s
    clock[0] = 6.0
    now = T + 10 * DAY
    cat = f.current(now)
    assert [c.id for c in cat.creatives] == ["a", "b", "c"] and f.version == 2
    m = cat.mask(np.array([now - 1, now + 1]), np.array([2, 2]), 4)
    assert m.tolist() == [[True, True, True, False], [False, True, True, False]]  # "a" retired at reload
    _write(path, [f'id = "x{i}"' for i in range(5)])
    os.utime(path, ns=(2, 2 * 10**18))
    clock[0] = 12.0
    assert f.current(now) is cat and "capacity" in (f.error or "")  # too many: refused, the last one stays


def test_the_learner_masks_as_the_server_did_and_a_new_creative_starts_from_the_mean() -> None:
    cfg = HybridConfig(lstm_hidden=16, hidden=32)
    spec = spec_of(cfg, 4)
    learner = HybridLearner(spec, cfg, RewardConfig())
    with torch.no_grad():
        learner.net.appeal.normal_()
        learner.net.creative_bias.copy_(torch.tensor([0.5, -0.5, 9.0, 9.0]))
    old = Catalogue.generated(2)
    learner.set_catalogue(old)
    assert learner._creative_mask(np.array([0]), np.array([1]), np.zeros((1, spec.dim))).tolist() == [
        [True, True, False, False]]
    new = old.merged(Catalogue.from_entries([{"id": "c00"}, {"id": "c01"}, {"id": "fresh"}]), T)
    assert learner.set_catalogue(new) == [2]
    assert float(learner.net.creative_bias[2].detach()) == pytest.approx(0.0)  # the mean of 0.5 and -0.5, not 9
    assert torch.allclose(learner.net.appeal[:, 2], learner.net.appeal[:, :2].mean(dim=1))
    # the agent never picks an ineligible creative, and logs the masked probability
    agent = HybridAgent(spec, cfg)
    agent.load_state(learner.state(), 2)
    B = 64
    opp = OpportunityArrays(np.full(B, T), np.zeros(B, np.int64), np.ones((B, 3), bool), np.full(B, 0.5),
                            np.full((B, 8), 1 / 8), np.ones(B), np.ones(B), np.zeros(B, np.int64), np.zeros(B),
                            np.arange(B))
    batch = build_states(spec, opp, journey_arrays([[]] * B, ["d"] * B, spec.max_touches),
                         PacingInputs(10.0, 0.0, 0.0, 0.5, 0.5), learner.stats)
    only_first = Catalogue.from_entries([{"id": "a"}, {"id": "b", "channels": ["organic"]}])
    acts = agent.act(batch, np.ones((B, 3), bool), np.full(B, 0.5), 10.0,
                     creative_mask=lambda ch: only_first.mask(np.full(B, T), ch, 4))
    assert set(acts.creative[acts.channel != 0].tolist()) == {0}


def test_the_mask_cached_between_starts_and_stops_equals_the_row_by_row_one() -> None:
    """The bid path reuses one mask per channel while no creative starts or stops; across random
    catalogues and batches (some spanning a start or stop) it equals the mask computed per row."""
    rng = np.random.default_rng(1)
    spans = 0
    for _ in range(200):
        creatives = []
        for i in range(int(rng.integers(1, 12))):
            start = int(rng.integers(0, 50))
            stop = start + int(rng.integers(1, 50)) if rng.random() < 0.7 else Creative.stop_ms
            channels = tuple(c for c in CHANNELS if rng.random() < 0.5) or ("social",)
            creatives.append(Creative(id=f"c{i}", channels=channels, start_ms=start, stop_ms=stop))
        cat = Catalogue(tuple(creatives))
        capacity = len(creatives) + int(rng.integers(0, 4))
        for _ in range(20):
            t = int(rng.integers(-5, 120)) + rng.integers(0, 1 if rng.random() < 0.7 else 30, int(rng.integers(1, 15)))
            ch = rng.integers(0, 3, len(t))
            spans += int(t.max() > t.min())
            assert np.array_equal(cat.mask(t, ch, capacity), cat._rows(t.astype(np.int64), ch, capacity))
    assert spans > 100
