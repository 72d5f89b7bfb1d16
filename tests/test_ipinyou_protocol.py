"""The iPinYou replay protocol on hand-made logs: caps, ties, partial episode, exact cost."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agent_service.errors import ConfigError, DecodeError
from simulators.ipinyou.baselines import ConstBidder, LinearBidder
from simulators.ipinyou.config import IPinYouConfig
from simulators.ipinyou.data import AuctionLog, CampaignInfo, load_log, parse_log
from simulators.ipinyou.env import IPinYouEnv
from simulators.ipinyou.replay import Observation, Outcome, episode_budget, replay, replay_vectorised
from simulators.ipinyou.rlb import RLBBidder, value_function

INFO = CampaignInfo(imp_train=1000, cost_train=10_000, clk_train=5, price_counter_train=(1,) * 301)
LINES = """\
0 5 0.1
1 10 0.2
0 3 0.3
1 300 0.5
0 0 0.1
1 7 0.2
1 6 0.4
"""


class Scripted:
    """Bids a fixed list in order and records what it saw."""

    def __init__(self, bids: list[float]) -> None:
        self.bids = list(bids)
        self.seen: list[Observation] = []
        self.outcomes: list[Outcome] = []

    def bid(self, obs: Observation) -> int:
        self.seen.append(obs)
        return self.bids[len(self.seen) - 1]  # type: ignore[return-value]

    def observe(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def test_budget_formula_is_int_of_cpm_c0_n() -> None:
    assert episode_budget(INFO, 0.5, 3) == 15
    real = CampaignInfo(312_437, 19_689_072, 1386, (1,) * 301)
    assert episode_budget(real, 1 / 32) == 1969  # int(63.0177... * 1000 / 32)
    with pytest.raises(ConfigError, match="ipinyou.c0"):
        episode_budget(INFO, 0.0)


def test_protocol_on_hand_made_log() -> None:
    log = parse_log(LINES)
    # ep0: 5 ties 5 (win, b=10); 12 is capped at b=10 and ties 10 (win, b=0); 7 capped at 0 loses.
    # ep1: 1000 capped at 300 then at b=15, loses to 300; 0 wins a price-0 auction; 7.9 -> 7 ties 7.
    # ep2 (partial, 1 auction): the full budget again; 6 ties 6.
    bidder = Scripted([5, 12, 7, 1000, 0, 7.9, 6])
    res = replay(log, 15, bidder, episode_length=3)
    assert (res.auctions, res.impressions, res.clicks, res.cost, res.episodes) == (7, 5, 3, 28, 3)
    assert res.episode_clicks == (1, 1, 1)
    assert res.episode_cost == (15, 7, 6)
    assert [o.bid for o in bidder.outcomes] == [5, 10, 0, 15, 0, 7, 6]
    assert [o.won for o in bidder.outcomes] == [True, True, False, False, True, True, True]
    assert [s.budget_left for s in bidder.seen] == [15, 10, 0, 15, 15, 15, 15]
    assert [s.auctions_left for s in bidder.seen] == [3, 2, 1, 3, 2, 1, 3]
    assert [s.episode for s in bidder.seen] == [0, 0, 0, 1, 1, 1, 2]
    assert [o.episode_end for o in bidder.outcomes] == [False, False, True, False, False, True, True]
    assert res.win_rate == pytest.approx(5 / 7)
    assert res.cpm == pytest.approx(28 / 5)
    assert res.ecpc == pytest.approx(0.028 / 3)


def test_won_only_feedback_hides_lost_auctions() -> None:
    log = parse_log(LINES)
    bidder = Scripted([5, 12, 7, 1000, 0, 7.9, 6])
    replay(log, 15, bidder, episode_length=3, feedback="won")
    lost = [o for o in bidder.outcomes if not o.won]
    assert lost and all(o.click == -1 and o.market_price == -1 and o.cost == 0 for o in lost)
    won = [o for o in bidder.outcomes if o.won]
    assert [o.market_price for o in won] == [5, 10, 0, 7, 6]
    full = Scripted([5, 12, 7, 1000, 0, 7.9, 6])
    replay(log, 15, full, episode_length=3, feedback="full")
    assert [o.market_price for o in full.outcomes] == [5, 10, 3, 300, 0, 7, 6]


def test_bids_never_exceed_cap_or_budget() -> None:
    rng = np.random.default_rng(1)
    n = 500
    log = AuctionLog(rng.integers(0, 2, n), rng.integers(0, 301, n), rng.random(n) * 0.01)
    bidder = Scripted(list(rng.integers(0, 2000, n)))
    replay(log, 400, bidder, episode_length=100)
    for obs, out in zip(bidder.seen, bidder.outcomes, strict=True):
        assert 0 <= out.bid <= min(300, obs.budget_left)
        assert out.cost == (out.market_price if out.won else 0)
    with pytest.raises(ConfigError, match="feedback"):
        replay(log, 400, bidder, feedback="maybe")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_step_by_step(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2_345
    log = AuctionLog(rng.integers(0, 2, n), rng.integers(0, 120, n), rng.random(n) * 0.02)
    budget = 700
    table = value_function(INFO.price_pmf(), 100, budget, INFO.ctr)
    for bidder in (ConstBidder(17), LinearBidder(20.0, 0.005), RLBBidder(table)):
        a = replay(log, budget, bidder, episode_length=100)
        b = replay_vectorised(log, budget, bidder.bids, episode_length=100)
        assert a == b
        assert a.episodes == 24 and a.impressions > 0


def test_malformed_lines_name_line_and_field(tmp_path) -> None:
    cases = {
        "0 5 0.1\n1 x 0.2\n": "log:2 field market_price",
        "0 5 0.1\n0 5 0.1\n2 5 0.1\n": "log:3 field click",
        "0 5 abc\n": "log:1 field pctr",
        "0 5 1.5\n": "log:1 field pctr",
        "0 301 0.1\n": "log:1 field market_price",
        "0 5 0.1\n0 5\n": "log:2",
        "0 -4 0.1\n": "log:1 field market_price",
    }
    for text, where in cases.items():
        with pytest.raises(DecodeError) as err:
            parse_log(text)
        assert str(err.value).startswith(where), (text, str(err.value))
    path = tmp_path / "test.theta.txt"
    path.write_text("0 5 0.1\n0 5.5 0.1\n")
    with pytest.raises(DecodeError, match=r"test.theta.txt:2 field market_price"):
        load_log(tmp_path)
    with pytest.raises(DecodeError, match="no auctions"):
        parse_log("\n")


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="ipinyou.c0"):
        IPinYouConfig(c0=0)
    with pytest.raises(ConfigError, match="ipinyou.feedback"):
        IPinYouConfig(feedback="some")
    assert IPinYouConfig().data_path.name == "ipinyou-2997"


def test_env_passes_checker_and_matches_replay() -> None:
    log = parse_log(LINES * 40)  # 280 auctions: 2 full episodes of 100 and a partial one of 80
    for past in (False, True):
        check_env(IPinYouEnv(log, 40, episode_length=100, past_features=past), skip_render_check=True)
    env = IPinYouEnv(log, 40, episode_length=100, past_features=True)
    total, ends = 0.0, []
    obs, info = env.reset(seed=3)
    assert info["episode"] == 0 and obs[1] == 40 and obs[2] == 100
    for ep in range(env.n_episodes):
        if ep:
            obs, info = env.reset()
        done = False
        while not done:
            obs, reward, term, trunc, info = env.step(6)
            assert env.observation_space.contains(obs)
            total += reward
            done = term or trunc
        ends.append((term, trunc))
    assert ends == [(True, False), (True, False), (False, True)]
    assert total == replay(log, 40, ConstBidder(6), episode_length=100).clicks
    with pytest.raises(ConfigError, match="options.episode"):
        env.reset(options={"episode": 99})
