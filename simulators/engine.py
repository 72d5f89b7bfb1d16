"""The vectorised world: opportunities in batches, auctions, clicks, journeys, conversions.

``Engine.sample(lane, t0, t1)`` draws the opportunities of an event-time interval of one lane
(an independent world): who arrives (hour-of-day and weekday traffic, segment activity
profiles, per-person activity), on which of their devices, on which page category, with which
channels offered (paid search more likely deeper in the journey), the floor, the competitors'
bids (calibrated log-normal landscape, optionally adaptive) and every uniform the outcome will
use. ``Engine.resolve(opps, actions)`` runs the auctions, the click choice, the conversion draw
and its delay, and updates journeys (interest advances with exposures and relaxes to the
person's baseline without them), touch counts and per-creative fatigue.

Common random numbers: every draw of ``sample`` is made for every row whatever the policy does,
from per-lane generators for traffic, market and outcomes, so two policies run on the same seed
meet the same people, prices and luck (their journeys differ only through what they did).

Slot-synchronous state: all rows of one ``resolve`` call see the journey state as of the call
(a person seen twice in one batch does not see the first ad's effect on the second decision);
the effects of all rows are added at the end. Batches are a time slot of one lane in the
stream world, and one row per lane in the vector environment.

Journey states decay exponentially; they are stored scaled by exp(t/τ) (``_scaled`` arrays) so
that a decay never has to visit every person: level(t) = stored · exp(−t/τ), with t in days
since the lane's origin (rebased every ``_REBASE_DAYS``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from agent_service.units import DAY_MS, HOUR_MS
from simulators.auctions import first_price, gsp_for, second_price, to_ticks
from simulators.batches import Actions, EngineConfig, WorldOpportunities, WorldOutcomes, WorldTruth
from simulators.calibration.schema import Calibration
from simulators.delays import DelayModel
from simulators.model import WorldModel
from simulators.population import Population

__all__ = ["Engine", "JourneyState"]

_REBASE_DAYS = 30.0


class JourneyState(NamedTuple):
    """People's true journey state at given times (ground truth, for evaluation and oracles)."""

    interest: np.ndarray
    """Purchase interest (the journey latent)."""
    stage: np.ndarray
    """int8 stage: 0 awareness, 1 consideration, 2 decision."""
    touches: np.ndarray
    """Decayed count of earlier GAELP touches (drives the conversion touch lift)."""
    fatigue: np.ndarray
    """(n, creatives) decayed earlier exposures per creative (drives the CTR fatigue penalty)."""
    pending: np.ndarray
    """bool: a conversion is on its way (no other one can be decided before it lands)."""


class Engine:
    """See the module docstring.

    :param cal: the calibration.
    :param cfg: run settings (people, traffic volume, lanes, seed, start time).
    """

    def __init__(self, cal: Calibration, cfg: EngineConfig | None = None) -> None:
        cfg = cfg or EngineConfig()
        self.cal = cal
        self.cfg = cfg
        self.model = m = WorldModel(cal)
        lanes = cfg.lanes
        root = np.random.SeedSequence(cfg.seed)
        pop_seq, aux_seq, *lane_seqs = root.spawn(2 + 3 * lanes)
        self.pop = Population(cal, cfg.persons, lanes, np.random.default_rng(pop_seq))
        self._traffic = [np.random.default_rng(s) for s in lane_seqs[0::3]]
        self._market = [np.random.default_rng(s) for s in lane_seqs[1::3]]
        self._outcome = [np.random.default_rng(s) for s in lane_seqs[2::3]]
        self._aux = np.random.default_rng(aux_seq)  # tie-breaks
        self.delays = DelayModel(cal.delay)
        total = cfg.persons * lanes
        self.origin = np.full(lanes, cfg.start_ms, dtype=np.int64)
        """Per lane: event time at which the scaled journey arrays are referenced."""
        self.interest_scaled = self.pop.initial - self.pop.baseline
        """(interest − baseline) · exp(t/τ_interest) per person."""
        self.touch_scaled = np.zeros(total)
        """Decayed count of touches · exp(t/τ_touch) per person."""
        self.fatigue_scaled = np.zeros((total, m.n_creatives), dtype=np.float32)
        """Decayed exposures per person × creative · exp(t/τ_fatigue) (float32: lanes × people × creatives)."""
        self.conv_until = np.zeros(total, dtype=np.int64)
        """Event time of a person's pending conversion (0: none). No second one before it lands."""
        self.k_social = cal.channels.social.competitors
        self.k_search = cal.channels.paid_search.competitors
        self.comp_log_mult = np.zeros((lanes, 3, max(self.k_social, self.k_search, 1)))
        """Adaptive competitors' log bid multipliers per lane, channel, competitor."""
        self.organic_cap = int(round(cal.channels.organic.reach_share * cfg.opportunities_per_day))
        """Organic placements available per lane per day."""
        self._organic_day = np.full(lanes, -1, dtype=np.int64)
        self._organic_used = np.zeros(lanes, dtype=np.int64)

    # ----------------------------------------------------------------------------------------
    # Journey state
    # ----------------------------------------------------------------------------------------
    def _days(self, person: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.asarray((t - self.origin[person // self.cfg.persons]) / DAY_MS)

    def interest(self, person: np.ndarray, t: np.ndarray) -> np.ndarray:
        """True purchase interest of people at times ``t`` (read-only; a landed conversion resets it).

        :param person: global person indices.
        :param t: event times, ms.
        """
        m, b = self.model, self.pop.baseline[person]
        z = b + self.interest_scaled[person] * np.exp(-self._days(person, t) / m.tau_interest)
        cu = self.conv_until[person]
        reset = (cu > 0) & (t >= cu)
        if reset.any():
            post = self.cal.journey.post_conversion
            z[reset] = b[reset] + (post - b[reset]) * np.exp(-(t[reset] - cu[reset]) / DAY_MS / m.tau_interest)
        return np.asarray(z)

    def journey_state(self, person: np.ndarray, t: np.ndarray) -> JourneyState:
        """The true journey state of people at times ``t`` (ground truth; read-only).

        :param person: global person indices.
        :param t: event times, ms (not before the people's last resolved opportunity).
        """
        m = self.model
        days = self._days(person, t)
        interest = self.interest(person, t)
        cu = self.conv_until[person]
        landed = (cu > 0) & (t >= cu)
        touches = np.where(landed, 0.0, self.touch_scaled[person] * np.exp(-days / m.tau_touch))
        fatigue = self.fatigue_scaled[person] * np.exp(-days / m.tau_fatigue)[:, None]
        return JourneyState(interest, m.stage_of(interest), touches, fatigue, (cu > 0) & (t < cu))

    def _apply_resets(self, person: np.ndarray, t: np.ndarray) -> None:
        cu = self.conv_until[person]
        reset = (cu > 0) & (t >= cu)
        if not reset.any():
            return
        p = person[reset]
        b = self.pop.baseline[p]
        days = self._days(p, cu[reset])
        self.interest_scaled[p] = (self.cal.journey.post_conversion - b) * np.exp(days / self.model.tau_interest)
        self.touch_scaled[p] = 0.0
        self.conv_until[p] = 0

    def _rebase(self, lane: int, t: int) -> None:
        """Move a lane's reference time to ``t`` so the scaled arrays stay small."""
        shift = (t - int(self.origin[lane])) / DAY_MS
        if shift < _REBASE_DAYS:
            return
        sl = slice(lane * self.cfg.persons, (lane + 1) * self.cfg.persons)
        m = self.model
        self.interest_scaled[sl] *= np.exp(-shift / m.tau_interest)
        self.touch_scaled[sl] *= np.exp(-shift / m.tau_touch)
        self.fatigue_scaled[sl] *= np.float32(np.exp(-shift / m.tau_fatigue))
        self.origin[lane] = t

    # ----------------------------------------------------------------------------------------
    # Opportunities
    # ----------------------------------------------------------------------------------------
    def sample(self, lane: int, t0: int, t1: int) -> WorldOpportunities:
        """The opportunities of ``lane`` with event times in [t0, t1), in time order.

        :param lane: which world.
        :param t0: start, ms since the epoch.
        :param t1: end (exclusive).
        """
        self._rebase(lane, t0)
        m, pop, cal = self.model, self.pop, self.cal
        rng, mkt, out = self._traffic[lane], self._market[lane], self._outcome[lane]
        times = []
        a = t0
        while a < t1:  # hour by hour: the rate changes on the hour
            b = min(t1, (a // HOUR_MS + 1) * HOUR_MS)
            h, dow = (a % DAY_MS) // HOUR_MS, ((a // DAY_MS) + 3) % 7
            lam = self.cfg.opportunities_per_day * m.traffic_hour[h] * m.traffic_day[dow] * (b - a) / HOUR_MS
            times.append(np.sort(rng.integers(a, b, size=int(rng.poisson(lam)), dtype=np.int64)))
            a = b
        t = np.concatenate(times) if times else np.zeros(0, dtype=np.int64)
        n = t.size
        hour = ((t % DAY_MS) // HOUR_MS).astype(np.int64)
        # who: segment by the hour's activity mix, then a person of that segment by activity
        w = m.seg_share[None, :] * m.seg_hour[:, hour].T * (pop.block_weight[lane] > 0)[None, :]
        cum = np.cumsum(w, axis=1)
        u = rng.random((n, 5))
        seg = (u[:, 0:1] * cum[:, -1:] >= cum).sum(axis=1).astype(np.int8)
        person = pop.sample_people(lane, seg, u[:, 1])
        device = pop.dev_start[person] + (u[:, 2] * pop.n_dev[person]).astype(np.int32)
        stage = m.stage_of(self.interest(person, t))
        ncat = len(cal.traffic.categories)
        other = (u[:, 4] * ncat).astype(np.int8)
        category = np.where(u[:, 3] < cal.traffic.context_signal, m.seg_category[seg], other).astype(np.int8)
        offered = rng.random((n, 3)) < m.offer[:, stage].T
        offered[:, 2] |= ~offered.any(axis=1)  # every opportunity offers at least social
        # market: floors and competing bids (median · hour · adaptive multiplier · log-normal)
        floor = to_ticks(cal.traffic.floor_cpm * np.exp(cal.traffic.floor_sigma * mkt.standard_normal(n)))
        comp_social = self._competitors(mkt, lane, 2, hour, self.k_social)
        comp_search = self._competitors(mkt, lane, 1, hour, self.k_search)
        # outcomes' luck, drawn for every row
        uo = out.random((n, 3))
        return WorldOpportunities(
            lane=np.full(n, lane, dtype=np.int16), t=t, person=person, device=device.astype(np.int32),
            segment=seg, stage=stage, category=category, devtype=pop.dev_type[device],
            logged=pop.dev_logged[device], arm=pop.dev_arm[device], offered=offered, floor=floor,
            comp_social=comp_social, comp_search=comp_search, u_click=uo[:, 0], u_conv=uo[:, 1],
            z_value=out.standard_normal(n), delay_days=self.delays.sample(out, n), u_device=uo[:, 2])

    def _competitors(self, rng: np.random.Generator, lane: int, ch: int, hour: np.ndarray, k: int) -> np.ndarray:
        c = self.model.channels[ch]
        z = rng.standard_normal((hour.size, k), dtype=np.float32)
        log_median = np.log(c.competitor_cpm * self.model.comp_hour[ch, hour])[:, None] + self.comp_log_mult[lane, ch, :k]
        return to_ticks(np.exp(log_median + c.competitor_sigma * z))

    # ----------------------------------------------------------------------------------------
    # Resolution
    # ----------------------------------------------------------------------------------------
    def resolve(self, opps: WorldOpportunities, acts: Actions) -> tuple[WorldOutcomes, WorldTruth]:
        """Run the auctions and people's responses for ``acts`` on ``opps``; update journeys.

        :param opps: opportunities from ``sample`` (rows of one lane in time order, or one row per lane).
        :param acts: the agent's actions, one per row.
        """
        m, pop, cal = self.model, self.pop, self.cal
        n = opps.t.size
        p, t, seg = opps.person, opps.t, opps.segment.astype(np.int64)
        self._apply_resets(p, t)
        days = self._days(p, t)
        stage = m.stage_of(self.interest(p, t)).astype(np.int64)
        ch = acts.channel.astype(np.int64)
        cr = np.clip(acts.creative.astype(np.int64), 0, m.n_creatives - 1)
        rows = np.arange(n)
        target = acts.target.astype(np.int64)
        aud_ok = (~np.bool_(self.cfg.enforce_targeting)) | (target >= m.k) | (pop.audience[p] == target)
        eligible = acts.active & opps.offered[rows, ch] & aud_ok
        won = np.zeros(n, dtype=bool)
        price = np.zeros(n, dtype=np.int32)
        position = np.zeros(n, dtype=np.int16)
        self._auction_social(opps, acts, np.flatnonzero(eligible & (ch == 2)), won, price, position)
        idx = np.flatnonzero(eligible & (ch == 1))
        if idx.size:
            pl = gsp_for(acts.bid[idx].astype(np.int32), np.ascontiguousarray(opps.comp_search[idx].T),
                         opps.floor[idx], int(m.positions[1]), self._aux)
            won[idx], price[idx], position[idx] = pl.position > 0, pl.price, pl.position
        self._organic(opps, np.flatnonzero(eligible & (ch == 0)), won, position)
        if cal.competitors.adaptive:
            self._adapt(opps, acts, eligible, ch)
        # people's responses
        fatigue = self.fatigue_scaled[p, cr] * np.exp(-days / m.tau_fatigue)
        touches = self.touch_scaled[p] * np.exp(-days / m.tau_touch)
        hour = (t % DAY_MS) // HOUR_MS
        p_click = m.p_click(ch, seg, stage, cr, fatigue, position)
        p_conv, p_view = m.p_conv(ch, seg, stage, hour, touches)
        pending = self.conv_until[p] > t
        p_conv = np.where(pending, 0.0, p_conv)
        p_view = np.where(pending, 0.0, p_view)
        click = won & (opps.u_click < p_click)
        conv = won & (opps.u_conv < np.where(click, p_conv, p_view))
        ci = np.flatnonzero(conv)
        if ci.size > 1:  # one pending conversion per person, even within a batch
            _, first = np.unique(p[ci], return_index=True)
            conv[:] = False
            conv[ci[first]] = True
        conv_time = np.where(conv, t + np.rint(opps.delay_days * DAY_MS).astype(np.int64), -1)
        conv_value = np.where(conv, m.value_micros(seg, opps.z_value), 0)
        conv_device = np.where(conv, pop.dev_start[p] + (opps.u_device * pop.n_dev[p]).astype(np.int32), -1)
        in_window = conv & (opps.delay_days <= cal.conversion.window_days)
        self.conv_until[p[conv]] = conv_time[conv]
        # journeys advance with exposures
        si = np.flatnonzero(won)
        if si.size:
            ps, ds = p[si], days[si]
            gain = m.interest_gain(seg[si], cr[si], click[si])
            flat = ps * m.n_creatives + cr[si]
            if np.unique(ps).size == ps.size:  # no repeats (the environments): plain fancy-index adds
                self.interest_scaled[ps] += gain * np.exp(ds / m.tau_interest)
                self.touch_scaled[ps] += np.exp(ds / m.tau_touch)
                self.fatigue_scaled.reshape(-1)[flat] += np.exp(ds / m.tau_fatigue).astype(np.float32)
            else:
                np.add.at(self.interest_scaled, ps, gain * np.exp(ds / m.tau_interest))
                np.add.at(self.touch_scaled, ps, np.exp(ds / m.tau_touch))
                np.add.at(self.fatigue_scaled.reshape(-1), flat, np.exp(ds / m.tau_fatigue).astype(np.float32))
        outcomes = WorldOutcomes(eligible=eligible, won=won, price=price, position=position, click=click, conv=conv,
                            conv_time=conv_time, conv_value=conv_value, conv_device=conv_device.astype(np.int32),
                            in_window=in_window)
        truth = WorldTruth(person=p, segment=opps.segment, stage=stage.astype(np.int8), p_click=p_click, p_conv=p_conv,
                      p_view=p_view, expected_value=m.expected_value(p_click, p_conv, p_view, seg))
        return outcomes, truth

    def _auction_social(self, opps: WorldOpportunities, acts: Actions, idx: np.ndarray, won: np.ndarray,
                        price: np.ndarray, position: np.ndarray) -> None:
        if not idx.size:
            return
        bids = np.empty((1 + self.k_social, idx.size), dtype=np.int32)
        bids[0] = acts.bid[idx]
        bids[1:] = opps.comp_social[idx].T
        auction = first_price if self.cal.channels.social.auction == "first_price" else second_price
        alloc = auction(bids, opps.floor[idx], self._aux)
        ours = alloc.winner == 0
        won[idx], price[idx], position[idx] = ours, np.where(ours, alloc.price, 0), ours

    def _organic(self, opps: WorldOpportunities, idx: np.ndarray, won: np.ndarray, position: np.ndarray) -> None:
        """Organic placements: free, up to ``organic_cap`` per lane per day, first come first served."""
        if not idx.size:
            return
        lane = opps.lane[idx].astype(np.int64)
        day = (opps.t[idx] - self.cfg.start_ms) // DAY_MS
        if np.unique(lane).size == lane.size:  # one row per lane (the environments): no loop
            new_day = self._organic_day[lane] != day
            self._organic_day[lane] = day
            self._organic_used[lane] = np.where(new_day, 0, self._organic_used[lane])
            ok = self._organic_used[lane] < self.organic_cap
            won[idx[ok]] = True
            position[idx[ok]] = 1
            self._organic_used[lane] += ok
            return
        for ln in np.unique(lane):
            rows, dd = idx[lane == ln], day[lane == ln]
            for d in np.unique(dd):
                r = rows[dd == d]
                if self._organic_day[ln] != d:
                    self._organic_day[ln], self._organic_used[ln] = d, 0
                k = int(max(0, min(r.size, self.organic_cap - self._organic_used[ln])))
                won[r[:k]] = True
                position[r[:k]] = 1
                self._organic_used[ln] += k

    def _adapt(self, opps: WorldOpportunities, acts: Actions, eligible: np.ndarray, ch: np.ndarray) -> None:
        """Adaptive competitors: log-multiplier += rate/1000 · (target win rate − won) per auction they enter."""
        c = self.cal.competitors
        step = c.adapt_rate / 1000.0
        lane = opps.lane.astype(np.int64)
        for chan, comp, k in ((2, opps.comp_social, self.k_social), (1, opps.comp_search, self.k_search)):
            rows = np.flatnonzero(opps.offered[:, chan])
            if not rows.size:
                continue
            ours = np.where(eligible[rows] & (ch[rows] == chan), acts.bid[rows], 0)
            allb = np.concatenate([ours[:, None], comp[rows]], axis=1)
            winner = allb.argmax(axis=1) - 1  # -1: GAELP won the top slot
            entered = np.bincount(lane[rows], minlength=self.cfg.lanes).astype(np.float64)
            wins = np.zeros((self.cfg.lanes, k))
            hit = winner >= 0
            np.add.at(wins, (lane[rows][hit], winner[hit]), 1.0)
            delta = step * (c.target_win_rate * entered[:, None] - wins)
            lim = np.log(c.max_mult)
            self.comp_log_mult[:, chan, :k] = np.clip(self.comp_log_mult[:, chan, :k] + delta, -lim, lim)
