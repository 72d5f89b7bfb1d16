"""Where the agent's creative regret comes from (issue 18; validation seeds only).

Runs the trained agent (still learning online, as ``gaelp evaluate`` runs it) on validation
seeds of a world and, for every impression it wins on the measured days, records the true value
of every creative (fatigue-aware, the harness's ``best``), the creative chosen, and the terms
of the agent's creative policy (click-model creative logit, optimism bonus). Afterwards it scores
other creative rules *on the same impressions* (counterfactual per impression: the fatigue
state is the one the agent's own choices produced):

* ``served``        the creative sampled (the measured regret);
* ``served_mean``   the expectation over the served probabilities (sampling luck removed);
* ``greedy_bonus``  argmax of click logit + bonus (no sampling);
* ``greedy``        argmax of the click logit alone (no bonus, no sampling);
* ``soft_nobonus``  the served softmax without the bonus (expectation);
* ``uniform``       a random creative;
* ``bayes_profile`` reference reading ground truth: argmax of the true value averaged over the
                    person's segment posterior from every request seen (the simulator's own
                    table), true fatigue — what a perfect click model on the agent's information
                    could do: the floor of the regret without knowing the true segment;
* ``bayes_request`` the same with the current request's posterior alone;
* ``seg_oracle``    the best creative of the true segment for a fresh person (fatigue ignored).

Ground truth is read here for scoring only; the agent never sees it. Never run on test seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats as sstats

from agent_service.agent.learning.ppo import creative_bonus
from agent_service.agent.serving.hybrid import _mixed
from agent_service.config import GaelpConfig, load_config
from agent_service.evaluation.harness import run_campaign
from agent_service.evaluation.market import Opportunities, Plays, Results, Truth
from agent_service.evaluation.sim_market import SimMarket
from agent_service.lab.campaign import HybridCampaign
from agent_service.lab.evaluate import load_trained
from agent_service.units import DAY_MS, HOUR_MS
from simulators.calibration import Calibration, load_calibration

RULES = ("served", "served_mean", "greedy_bonus", "greedy", "soft_nobonus", "uniform", "bayes_profile",
         "bayes_request", "seg_oracle")


def worlds() -> dict[str, Calibration]:
    cal = load_calibration()
    return {"default": cal,
            "creative_seed": dataclasses.replace(cal, creatives=dataclasses.replace(cal.creatives,
                                                                                    seed=cal.creatives.seed + 1))}


class RecordingMarket(SimMarket):
    """SimMarket that keeps the last truth and the true value of every creative under every segment."""

    last: Truth | None = None
    by_segment: np.ndarray | None = None
    fatigue: np.ndarray | None = None

    def truth(self, opps: Opportunities, channel: np.ndarray) -> Truth:
        tr = super().truth(opps, channel)
        self.last = tr
        raw, e, m = self._raw, self.engine, self.engine.model
        assert raw is not None
        n, C, K = raw.t.size, m.n_creatives, m.k
        p, t = raw.person, raw.t
        days = (t - e.origin[0]) / DAY_MS
        stage = m.stage_of(e.interest(p, t)).astype(np.int64)
        fatigue = (e.fatigue_scaled[p] * np.exp(-days / m.tau_fatigue)[:, None]).reshape(-1)
        touches = e.touch_scaled[p] * np.exp(-days / m.tau_touch)
        hour = (t % DAY_MS) // HOUR_MS
        ch = channel.astype(np.int64)
        pending = e.conv_until[p] > t
        out = np.zeros((n, K, C))
        for k in range(K):
            seg = np.full(n, k, np.int64)
            pc = m.p_click(np.repeat(ch, C), np.repeat(seg, C), np.repeat(stage, C), np.tile(np.arange(C), n),
                           fatigue, 1).reshape(n, C)
            conv, view = m.p_conv(ch, seg, stage, hour, touches)
            conv, view = np.where(pending, 0.0, conv), np.where(pending, 0.0, view)
            out[:, k] = m.expected_value(pc, conv[:, None], view[:, None], seg[:, None])
        self.by_segment = out
        self.fatigue = fatigue.reshape(n, C)
        return tr


class Recorder:
    """Wraps the agent's campaign policy; keeps what the scoring needs for won impressions."""

    def __init__(self, inner: HybridCampaign, market: RecordingMarket, warmup: int) -> None:
        self.inner, self.market, self.warmup = inner, market, warmup
        self.name = inner.name
        self.rows: dict[str, list[np.ndarray]] = {k: [] for k in ("value", "by_seg", "chosen", "logit", "bonus",
                                                                   "post_req", "post_prof", "segment", "fatigue",
                                                                   "exposures", "agent_post", "channel", "clicked",
                                                                   "channel_term", "day")}
        self._loglik: dict[int, np.ndarray] = {}
        m = market.engine.model
        ncat = len(market.cal.traffic.categories)
        cs = market.cal.traffic.context_signal
        lik = np.full((ncat, m.k), (1 - cs) / ncat)
        lik[m.seg_category, np.arange(m.k)] += cs
        self._loglik_cat, self._logprior = np.log(lik), np.log(m.seg_share)
        self._play: tuple[np.ndarray, ...] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def play(self, opps: Opportunities, journeys: Any, ctx: Any) -> Plays:
        plays = self.inner.play(opps, journeys, ctx)
        assert self.inner._pending is not None
        batch, _ = self.inner._pending
        agent = self.inner.agent
        net = agent.net
        out = net.heads(net.serve_np(batch.state, batch.touches, batch.touch_creatives).astype(np.float64))
        logit = out.click_creative
        segs = batch.state[:, agent.spec.cols("segment_")]
        bonus = creative_bonus(agent.stats.impressions_for(segs), agent.stats.campaign_ctr(),
                               agent.cfg.ppo.creative_optimism)
        bonus = np.broadcast_to(bonus, logit.shape)
        # the person's segment posterior from every request so far (the simulator's table)
        prof = np.zeros((len(opps.person), len(self._logprior)))
        for i, (p, c) in enumerate(zip(opps.person.tolist(), opps.context.tolist(), strict=True)):
            acc = self._loglik.get(p, self._logprior) + self._loglik_cat[c]
            self._loglik[p] = acc
            prof[i] = acc
        prof = np.exp(prof - prof.max(axis=1, keepdims=True))
        prof /= prof.sum(axis=1, keepdims=True)
        exposures = batch.state[:, agent.spec.cols("exposures_")]
        chan_term = out.click_channel
        self._play = (logit, bonus, prof, opps.segment_probs[:, :len(self._logprior)], exposures, segs, chan_term)
        return plays

    def observe(self, keys: np.ndarray, opps: Opportunities, plays: Plays, results: Results, ctx: Any) -> None:
        self.inner.observe(keys, opps, plays, results, ctx)
        tr, by_seg, rec = self.market.last, self.market.by_segment, self._play
        assert tr is not None and by_seg is not None and rec is not None
        won = np.flatnonzero(results.won)
        logit, bonus, prof, req, exposures, segs, chan_term = rec
        self.rows["clicked"].append(results.clicked[won])
        self.rows["channel_term"].append(chan_term[won, plays.channel[won]])
        self.rows["day"].append(np.full(len(won), ctx.day))
        for key, arr in (("value", tr.value_by_creative), ("by_seg", by_seg), ("chosen", plays.creative),
                         ("logit", logit), ("bonus", bonus), ("post_req", req), ("post_prof", prof),
                         ("segment", tr.segment), ("fatigue", self.market.fatigue), ("exposures", exposures),
                         ("agent_post", segs), ("channel", plays.channel)):
            self.rows[key].append(np.asarray(arr)[won])

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.rows.items()}


def score(d: dict[str, np.ndarray], cfg: GaelpConfig, best_creative: np.ndarray) -> dict[str, Any]:
    V, n = d["value"], len(d["value"])
    rows = np.arange(n)
    best = V.max(axis=1).sum()
    beta, eps = cfg.hybrid.ppo.creative_value_weight, cfg.hybrid.ppo.creative_eps
    served_p = _mixed(beta * (d["logit"] + d["bonus"]), eps, None)
    nobonus_p = _mixed(beta * d["logit"], eps, None)
    picks = {
        "served": V[rows, d["chosen"]].sum(),
        "served_mean": (served_p * V).sum(),
        "greedy_bonus": V[rows, (d["logit"] + d["bonus"]).argmax(1)].sum(),
        "greedy": V[rows, d["logit"].argmax(1)].sum(),
        "soft_nobonus": (nobonus_p * V).sum(),
        "uniform": V.mean(axis=1).sum(),
        "bayes_profile": V[rows, np.einsum("nk,nkc->nc", d["post_prof"], d["by_seg"]).argmax(1)].sum(),
        "bayes_request": V[rows, np.einsum("nk,nkc->nc", d["post_req"], d["by_seg"]).argmax(1)].sum(),
        "seg_oracle": V[rows, best_creative[d["segment"]]].sum(),
    }
    out: dict[str, Any] = {"impressions": n, "regret": {k: round(1 - v / best, 4) for k, v in picks.items()}}
    # (c) ranking: the click logit against the true value, per impression
    with np.errstate(invalid="ignore"):
        rank = [sstats.spearmanr(d["logit"][i], V[i]).statistic for i in rows[:: max(1, n // 2000)]]
    out["spearman_logit_vs_truth"] = round(float(np.nanmean(rank)), 3)
    out["top1_logit_is_best"] = round(float((d["logit"].argmax(1) == V.argmax(1)).mean()), 3)
    out["top1_bayes_profile_is_best"] = round(float(
        (np.einsum("nk,nkc->nc", d["post_prof"], d["by_seg"]).argmax(1) == V.argmax(1)).mean()), 3)
    out["served_top_prob_mean"] = round(float(served_p.max(1).mean()), 3)
    out["bonus_spread_mean"] = round(float((d["bonus"].max(1) - d["bonus"].min(1)).mean()), 3)
    out["logit_spread_mean"] = round(float((d["logit"].max(1) - d["logit"].min(1)).mean()), 3)
    # (e) fatigue: how far the best for this impression is below the same creative fresh
    fresh = V[rows, best_creative[d["segment"]]]
    out["chosen_is_seg_best"] = round(float((d["chosen"] == best_creative[d["segment"]]).mean()), 3)
    out["seg_best_fatigued_share"] = round(float((V.argmax(1) != best_creative[d["segment"]]).mean()), 3)
    out["fresh_seg_best_over_best"] = round(float(fresh.sum() / best), 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="a `gaelp train --out` directory (its budget)")
    ap.add_argument("--fresh", action="store_true", help="start the agent untrained (the checkpoint's budget only)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--worlds", nargs="+", default=["default", "creative_seed"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--save", type=Path, default=None, help="directory for the recorded arrays (npz per run)")
    ap.add_argument("--set", nargs="*", default=[], help="hybrid.ppo overrides, key=value (floats, true/false)")
    args = ap.parse_args()
    if any(s >= 1000 for s in args.seeds):
        ap.error("validation seeds only (< 1000)")
    cfg = load_config(None)
    over: dict[str, Any] = {k: (v == "true") if v in ("true", "false") else float(v)
                            for k, v in (s.split("=") for s in args.set)}
    cfg = dataclasses.replace(cfg, hybrid=dataclasses.replace(cfg.hybrid, ppo=dataclasses.replace(cfg.hybrid.ppo,
                                                                                                  **over)))
    summary, ckpt, _, _ = load_trained(args.checkpoint)
    budget = summary["config"]["budget_usd"]
    torch.set_num_threads(1)
    result: dict[str, Any] = {"set": over}
    for wname in args.worlds:
        cal = worlds()[wname]
        for seed in args.seeds:
            market = RecordingMarket(seed, budget, 5_000, 20_000.0, cfg.hybrid.segments, cal=cal)
            agent = HybridCampaign(market.creatives, cfg.hybrid, cfg.reward, seed=seed)
            if not args.fresh:
                agent.restore(ckpt)
            rec = Recorder(agent, market, args.warmup)
            r = run_campaign(market, rec, args.warmup + args.days)  # type: ignore[arg-type]
            measured = r.days[args.warmup:]
            value = sum(d.expected_value_usd for d in measured)
            harness_regret = 1 - sum(d.chosen_value_usd for d in measured) / sum(d.best_value_usd for d in measured)
            arrays = rec.arrays()
            s = score({k: v[arrays["day"] >= args.warmup] for k, v in arrays.items()}, cfg, market.best_creative)
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                net = agent.agent.net
                saved = {**arrays, "appeal_true": market.engine.model.appeal, "appeal": net.appeal.detach().numpy(),
                         "bias": net.creative_bias.detach().numpy(), "fatigue_w": net.fatigue.detach().numpy()}
                np.savez_compressed(args.save / f"{wname}-{seed}.npz", **saved)  # type: ignore[arg-type]
            s.update(value_usd=round(value, 2), harness_regret=round(harness_regret, 4))
            result[f"{wname}/{seed}"] = s
            print(wname, seed, json.dumps(s), file=sys.stderr, flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
