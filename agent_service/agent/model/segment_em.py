"""Segments learned from traffic: a mixture of multinomials over each person's context counts.

The agent never reads who a person is. What it sees is the page/app context of every request a
person makes (the state store counts them per person). People of one segment favour some
contexts, so a person's counts ``x`` are modelled as drawn from one of K segments::

    P(x) = Σ_k π_k · Mult(x | θ_k)          (π: segment shares, θ_k: segment k's context mix)

fitted by EM (Dempster, Laird & Rubin 1977; the multinomial mixture of Nigam et al. 2000) with a
small Dirichlet smoothing of θ, several seeded restarts, and K chosen by BIC
(``-2 log L + (K (C - 1) + K - 1) log N``; N = people with at least one request). Rows with the
same counts are fitted once with their multiplicity, which makes a fit over a million people a
few milliseconds when contexts are few.

The result is a :class:`~agent_service.agent.model.segments.SegmentModel` (``P(k | c)`` and ``π``),
whose naive-Bayes posterior over a person's counts is exactly this mixture's posterior. Labels
are arbitrary (segment 3 is "the third cluster found", not a simulator's segment 3). A refit
continues the previous fit and K is chosen again by BIC against fresh fits; the winner's
segments are matched to the previous labels (least total variation between context mixes), so
what was learnt per label — value per segment, creatives per segment — keeps its meaning as the
model grows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from agent_service.agent.model.segments import SegmentModel

__all__ = ["MixtureFit", "SegmentLearner", "aligned", "average_fits", "fit_mixture", "segment_model_of", "select_k"]

_SMOOTH = 0.01
"""Dirichlet pseudo-count per (segment, context): keeps log θ finite for an unseen context."""


class MixtureFit(NamedTuple):
    """A fitted mixture."""

    share: np.ndarray
    """float [K] π."""
    mix: np.ndarray
    """float [K, C] θ: each segment's context distribution (rows sum to 1)."""
    loglik: float
    """Log-likelihood of the fitted counts (without the multinomial coefficients, which do not depend on the fit)."""
    people: int
    """N: people fitted (rows with at least one request)."""

    @property
    def k(self) -> int:
        return len(self.share)

    @property
    def bic(self) -> float:
        k, c = self.mix.shape
        return float(-2.0 * self.loglik + (k * (c - 1) + k - 1) * np.log(max(self.people, 1)))

    def model(self, width: int) -> SegmentModel:
        """As the agent's :class:`SegmentModel` of ``width`` segments (columns past K stay zero)."""
        if self.k > width:
            raise ValueError(f"{self.k} segments found, the agent's state has room for {width}")
        joint = self.share[:, None] * self.mix  # [K, C] P(k, c)
        table = np.zeros((self.mix.shape[1], width))
        table[:, :self.k] = (joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-300)).T
        prior = np.zeros(width)
        prior[:self.k] = self.share
        return SegmentModel(table, prior)


def _unique(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(counts, np.float64)
    x = x[x.sum(axis=1) > 0]
    if not len(x):
        return x, np.zeros(0)
    rows, weight = np.unique(x, axis=0, return_counts=True)
    return rows, weight.astype(np.float64)


def _em(x: np.ndarray, w: np.ndarray, share: np.ndarray, mix: np.ndarray, iters: int,
        tol: float) -> tuple[np.ndarray, np.ndarray, float]:
    ll_prev = -np.inf
    ll = -np.inf
    for _ in range(iters):
        logit = np.log(np.maximum(share, 1e-300)) + x @ np.log(mix).T  # [R, K]
        top = logit.max(axis=1, keepdims=True)
        p = np.exp(logit - top)
        norm = p.sum(axis=1, keepdims=True)
        ll = float(w @ (np.log(norm[:, 0]) + top[:, 0]))
        r = p / norm * w[:, None]
        share = r.sum(axis=0) / w.sum()
        mix = r.T @ x + _SMOOTH
        mix /= mix.sum(axis=1, keepdims=True)
        if ll - ll_prev <= tol * abs(ll):
            break
        ll_prev = ll
    return share, mix, ll


def fit_mixture(counts: np.ndarray, k: int, seed: int = 0, restarts: int = 4, iters: int = 300, tol: float = 1e-7,
                start: MixtureFit | None = None) -> MixtureFit:
    """EM for K segments over ``counts`` (float [N, C] requests per context per person).

    :param start: a previous fit with the same K and C to start from (labels stay put); then
        there are no random restarts.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    x, w = _unique(counts)
    if not len(x):
        raise ValueError("no person with a request to fit segments on")
    c = x.shape[1]
    if start is not None:
        if start.mix.shape != (k, c):
            raise ValueError(f"start has shape {start.mix.shape}, expected {(k, c)}")
        share, mix, ll = _em(x, w, start.share.copy(), start.mix.copy(), iters, tol)
        return MixtureFit(share, mix, ll, int(w.sum()))
    rng = np.random.default_rng(seed)
    best: MixtureFit | None = None
    freq = x / x.sum(axis=1, keepdims=True)
    for _ in range(restarts):
        # start each segment at a random person's context mix (weighted by how many people share it), blurred
        pick = rng.choice(len(x), size=k, p=w / w.sum())
        mix0 = 0.5 * freq[pick] + 0.5 * rng.dirichlet(np.ones(c), size=k)
        share, mix, ll = _em(x, w, np.full(k, 1.0 / k), mix0, iters, tol)
        if best is None or ll > best.loglik:
            best = MixtureFit(share, mix, ll, int(w.sum()))
    assert best is not None
    return best


def select_k(counts: np.ndarray, k_max: int, seed: int = 0, restarts: int = 4) -> tuple[MixtureFit, dict[int, float]]:
    """The BIC-best fit over K = 1 … ``k_max``, and every K's BIC."""
    fits = [fit_mixture(counts, k, seed=seed + k, restarts=restarts) for k in range(1, k_max + 1)]
    best = min(fits, key=lambda f: f.bic)
    return best, {f.k: f.bic for f in fits}


def aligned(new: MixtureFit, old: MixtureFit) -> MixtureFit:
    """``new`` with its segments reordered so that each one matched to an old segment (least
    total variation between context mixes) keeps the old label; the others follow. When K
    shrank, the survivors keep the old order."""
    from scipy.optimize import linear_sum_assignment

    cost = np.abs(old.mix[:, None, :] - new.mix[None, :, :]).sum(axis=2)  # [old k, new k]
    olds, news = linear_sum_assignment(cost)
    if new.k >= old.k:
        order = np.empty(new.k, np.int64)
        order[olds] = news
        order[old.k:] = [j for j in range(new.k) if j not in set(news.tolist())]
    else:
        order = news[np.argsort(olds)]
    return new._replace(share=new.share[order], mix=new.mix[order])


def average_fits(fits: list[MixtureFit]) -> MixtureFit:
    """One fit from several fitted on shards of one market (parallel runners): each fit's labels
    are matched to the first's (the assignment of least total variation between segments'
    context mixes), then shares and mixes are averaged. Fits with another K than the first's are
    left out."""
    from scipy.optimize import linear_sum_assignment

    ref = fits[0]
    shares, mixes = [], []
    for f in fits:
        if f.mix.shape != ref.mix.shape:
            continue
        cost = np.abs(ref.mix[:, None, :] - f.mix[None, :, :]).sum(axis=2)  # [ref k, f k]
        _, order = linear_sum_assignment(cost)
        shares.append(f.share[order])
        mixes.append(f.mix[order])
    share, mix = np.mean(shares, axis=0), np.mean(mixes, axis=0)
    return MixtureFit(share / share.sum(), mix / mix.sum(axis=1, keepdims=True), float(np.nan),
                      sum(f.people for f in fits))


def segment_model_of(state: dict[str, object], width: int) -> SegmentModel:
    """The :class:`SegmentModel` of a published fit (``SegmentLearner.state()``).

    :raises ValueError: the fit is malformed (shapes, negative or non-finite numbers).
    """
    share, mix = np.asarray(state["share"], np.float64), np.asarray(state["mix"], np.float64)
    if share.ndim != 1 or mix.ndim != 2 or mix.shape[0] != share.size or not (
            np.isfinite(share).all() and np.isfinite(mix).all()):
        raise ValueError(f"a segment fit needs share [K] and mix [K, C], got {share.shape} and {mix.shape}")
    return MixtureFit(share, mix, float("nan"), 0).model(width)


class SegmentLearner:
    """Learns the segment model from the contexts a bidder sees, per journey key.

    Counts each key's requests per context (as the state store's profile does), gives each
    request the posterior of its key's counts under the current model (the prior alone until
    the first fit), and refits on :meth:`refit` (once per simulated day in the harness): the
    schedule is :meth:`maybe_refit`'s.

    :param width: the agent's segment columns (K ≤ width). :param contexts: C.
    """

    def __init__(self, width: int, contexts: int, seed: int = 0, min_people: int = 200) -> None:
        self.width, self.contexts, self.seed, self.min_people = width, contexts, seed, min_people
        self.fit: MixtureFit | None = None
        self.bics: dict[int, float] = {}
        self.model = SegmentModel.uniform(contexts, width)
        self._counts = np.zeros((0, contexts), np.int32)

    def count(self, key: np.ndarray, context: np.ndarray) -> None:
        """Count requests (keys are row numbers >= 0; contexts outside ``[0, C)`` are ignored)."""
        key, ctx = np.asarray(key, np.int64), np.asarray(context, np.int64)
        if not len(key):
            return
        if int(key.max()) >= len(self._counts):
            grown = np.zeros((max(int(key.max()) + 1, 2 * len(self._counts)), self.contexts), np.int32)
            grown[:len(self._counts)] = self._counts
            self._counts = grown
        ok = (ctx >= 0) & (ctx < self.contexts)
        np.add.at(self._counts, (key[ok], ctx[ok]), 1)

    def set_counts(self, key: int, counts: np.ndarray) -> None:
        """Replace key ``key``'s counts (a service learner reads them whole from the decision log)."""
        if key >= len(self._counts):
            grown = np.zeros((max(key + 1, 2 * len(self._counts)), self.contexts), np.int32)
            grown[:len(self._counts)] = self._counts
            self._counts = grown
        self._counts[key] = np.rint(counts)

    def posterior(self, key: np.ndarray, context: np.ndarray) -> np.ndarray:
        """float [B, width]: each key's posterior over its earlier requests and this one; then
        count the batch (a key twice in a batch sees the counts from before it, as the store would).
        Contexts outside ``[0, C)`` carry no evidence."""
        key, ctx = np.asarray(key, np.int64), np.asarray(context, np.int64)
        if not len(key):
            return np.zeros((0, self.width))
        counts = np.zeros((len(key), self.contexts))
        known = key < len(self._counts)
        counts[known] = self._counts[key[known]]
        ok = (ctx >= 0) & (ctx < self.contexts)
        counts[np.flatnonzero(ok), ctx[ok]] += 1.0
        self.count(key, ctx)
        return self.model.posterior(counts)

    def state(self) -> dict[str, object] | None:
        """The fit (for checkpoints and the runners' average); None before the first fit."""
        if self.fit is None:
            return None
        return {"share": self.fit.share.tolist(), "mix": self.fit.mix.tolist(), "people": self.fit.people,
                "bics": {str(k): v for k, v in self.bics.items()}}

    def load(self, state: dict[str, object] | None) -> None:
        """Serve a fit from :meth:`state` (the people counted so far are kept; a refit starts from it)."""
        if state is None:
            return
        people = state["people"]
        assert isinstance(people, int)
        self.fit = MixtureFit(np.asarray(state["share"], np.float64), np.asarray(state["mix"], np.float64),
                              float("nan"), people)
        bics = state.get("bics") or {}
        assert isinstance(bics, dict)
        self.bics = {int(k): float(v) for k, v in bics.items()}
        self.model = self.fit.model(self.width)

    @property
    def people(self) -> int:
        """Keys with at least one request counted."""
        return int((self._counts.sum(axis=1) > 0).sum())

    def maybe_refit(self, period_ended: bool) -> MixtureFit | None:
        """The refit schedule: a first fit as soon as ``min_people`` people were seen (K then is
        often too small: few requests per person), then one at the end of every period. The new
        fit, or None when none was made."""
        if period_ended or (self.fit is None and self.people >= self.min_people):
            return self.refit()
        return None

    def refit(self) -> MixtureFit | None:
        """Refit on every key's counts so far (None while fewer than ``min_people`` people were
        seen): K is chosen again by BIC among fresh fits and the previous fit refitted from where
        it was, and the winner's segments are matched to the previous labels."""
        people = self._counts[self._counts.sum(axis=1) > 0]
        if len(people) < self.min_people:
            return None
        best, self.bics = select_k(people, min(self.width, 8), seed=self.seed)
        if self.fit is not None:
            warm = fit_mixture(people, self.fit.k, start=self.fit)
            self.bics[warm.k] = min(self.bics[warm.k], warm.bic)
            best = warm if warm.bic <= best.bic else aligned(best, self.fit)
        self.fit = best
        self.model = self.fit.model(self.width)
        return self.fit
