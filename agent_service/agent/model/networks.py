"""The hybrid agent's networks. Each ``nn.Module`` only maps features to outputs (RLlib's
RLModule rule): sampling lives in :mod:`agent_service.agent.serving.hybrid`, losses and optimisers in
the learners (:mod:`~agent_service.agent.learning.ppo`, :mod:`~agent_service.agent.learning.dqn`).

* :class:`JourneyEncoder` — an LSTM over the person's last L touchpoints (per-touch features
  plus a learned creative embedding) → a journey code ``[B, H]``.
* :class:`HybridNet` — per opportunity: the state vector and the journey code feed
  the policy over creative × channel × target (three factorised heads), the critic (value of
  the journey state) and the click model (logit = creative term + channel term, whose sigmoid
  is the calibrated p̂(click) behind v̂).
* :class:`BidQNet` — per budget slot: pacing features → one Q-value per bid-multiplier action.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = ["BidQNet", "HybridNet", "HybridOut", "JourneyEncoder", "ServedHeads"]

# The cache keys of the serving views are read every batch: C-level getters, not generators.
_DATA_PTR = torch.Tensor.data_ptr
_VERSION = operator.attrgetter("_version")


class JourneyEncoder(nn.Module):
    """LSTM journey encoder.

    :param touch_dim: per-touch features (Ft).
    :param creatives: C; index C is the padding creative (a zero embedding).
    :param embed_dim: creative embedding width.
    :param hidden: LSTM width H.
    """

    def __init__(self, touch_dim: int, creatives: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(creatives + 1, embed_dim, padding_idx=creatives)
        self.lstm = nn.LSTM(touch_dim + embed_dim, hidden, batch_first=True)

    def forward(self, touches: torch.Tensor, creatives: torch.Tensor) -> torch.Tensor:
        """:param touches: [B, L, Ft]. :param creatives: [B, L] int64. Returns [B, H]."""
        x = torch.cat([touches, self.embed(creatives)], dim=-1)
        _, (h, _) = self.lstm(x)
        return h[-1]

    def encode_padded(self, touches: torch.Tensor, creatives: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for left-padded journeys (feature 0 = "present"), at a cost that follows
        the journeys' real length rather than L (the serving path; most bid requests come from
        people with few or no touches).

        Every journey starts with ``L − n`` padding steps, whose input is the same for every row,
        so the LSTM state after them is the same for every row: it is computed once per weight
        version. A row with no touch is that state's final code; the others run only their last
        ``m`` steps (``m`` = the longest real journey among them) from the state after ``L − m``
        padding steps. Equal to :meth:`forward` up to float rounding (tested)."""
        B, L, _ = touches.shape
        n = (touches[:, :, 0] > 0).sum(1)
        m = int(n.max()) if B else 0
        if m == L:  # a full journey in the batch: no padding step to skip
            return self.forward(touches, creatives)
        h_pad, c_pad = self._padding_states(L)
        if m == 0:
            return h_pad[L].expand(B, -1).clone()
        if bool((n > 0).all()):
            rows = None
            t, cr = touches[:, L - m:], creatives[:, L - m:]
        else:
            rows = torch.nonzero(n > 0).squeeze(1)
            t, cr = touches[rows, L - m:], creatives[rows, L - m:]
        k = len(t)
        _, (h, _) = self.lstm(torch.cat([t, self.embed(cr)], dim=-1),
                              (h_pad[L - m].expand(1, k, -1).contiguous(), c_pad[L - m].expand(1, k, -1).contiguous()))
        if rows is None:
            return h[-1]
        code = h_pad[L].expand(B, -1).clone()
        code[rows] = h[-1]
        return code

    def encode_np(self, touches: np.ndarray, creatives: np.ndarray) -> np.ndarray:
        """:meth:`encode_padded` from numpy inputs (the serving path): a batch without any touch
        (most bid requests) costs no torch call at all — every row is the padding state."""
        B, L, _ = touches.shape
        if B and not (touches[:, :, 0] > 0).any():
            self._padding_states(L)
            code: np.ndarray = self.__dict__["_pad_code_np"]
            return np.broadcast_to(code, (B, len(code)))
        with torch.no_grad():
            return self.encode_padded(torch.from_numpy(touches), torch.from_numpy(creatives)).numpy()

    def _padding_states(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """LSTM (h, c) after 0..L padding steps from the zero state, cached until a weight changes
        (``Tensor._version`` counts in-place updates: an optimiser step or ``load_state_dict``)."""
        params = self.__dict__.get("_pad_params")
        if params is None:
            params = self.__dict__["_pad_params"] = tuple(self.parameters())
        key = (L, *map(_VERSION, params), *map(_DATA_PTR, params))  # map: no generator frames, once a batch
        if getattr(self, "_pad_key", None) != key:
            with torch.no_grad():
                pad_in = torch.cat([torch.zeros(self.lstm.input_size - self.embed.embedding_dim),
                                    self.embed.weight[self.embed.num_embeddings - 1]]).view(1, 1, -1)
                hs, cs = [torch.zeros(1, 1, self.lstm.hidden_size)], [torch.zeros(1, 1, self.lstm.hidden_size)]
                for _ in range(L):
                    _, (h, c) = self.lstm(pad_in, (hs[-1], cs[-1]))
                    hs.append(h)
                    cs.append(c)
            self._pad_states = (torch.cat(hs).view(L + 1, -1), torch.cat(cs).view(L + 1, -1))
            self.__dict__["_pad_code_np"] = self._pad_states[0][L].numpy().copy()  # a no-touch row's code
            self._pad_key = key
        return self._pad_states


class HybridOut(NamedTuple):
    """Outputs for B opportunities."""

    creative_logits: torch.Tensor
    """[B, C]"""
    channel_logits: torch.Tensor
    """[B, 3] (unmasked)"""
    target_logits: torch.Tensor
    """[B, K + 1]: a discovered segment's audience, or everyone (last)."""
    value: torch.Tensor
    """[B] critic: value of the journey state (in reward units after normalisation)."""
    click_creative: torch.Tensor
    """[B, C] creative term of the click logit."""
    click_channel: torch.Tensor
    """[B, 3] channel term of the click logit."""


class ServedHeads(NamedTuple):
    """:meth:`HybridNet.serve_np`'s one array cut into its heads (views, no copies): :class:`HybridOut`
    without the critic."""

    creative_logits: np.ndarray
    channel_logits: np.ndarray
    target_logits: np.ndarray
    click_creative: np.ndarray
    click_channel: np.ndarray


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, n_out))


class HybridNet(nn.Module):
    """Per-opportunity network: encoder, policy heads, critic and click model.

    :param state_dim: columns of the state fed to the network (``StateSpec.net_dim``).
    :param touch_dim: per-touch features.
    :param creatives: C. :param channels: 3. :param targets: K + 1 (segments, then everyone).
    :param lstm_hidden: H. :param embed_dim: creative embedding width. :param hidden: MLP width.
    :param segment_at: first state column of the segment posterior (K columns).
    :param exposure_at: first state column of the per-creative exposures (C columns); -1: no wide part.
    """

    def __init__(self, state_dim: int, touch_dim: int, creatives: int, channels: int, targets: int,
                 lstm_hidden: int, embed_dim: int, hidden: int, segment_at: int = 0, exposure_at: int = -1) -> None:
        super().__init__()
        self.dims = (state_dim, touch_dim, creatives, channels, targets, lstm_hidden, embed_dim, hidden, segment_at,
                     exposure_at)
        self.segments = targets - 1
        self.segment_at, self.exposure_at = segment_at, exposure_at
        self.state_dim = state_dim
        self.encoder = JourneyEncoder(touch_dim, creatives, embed_dim, lstm_hidden)
        n_in = state_dim + lstm_hidden
        self.actor = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.creative = nn.Linear(hidden, creatives)
        self.channel = nn.Linear(hidden, channels)
        self.target = nn.Linear(hidden, targets)
        for head in (self.creative, self.channel, self.target):
            nn.init.zeros_(head.weight)  # start uniform: every action explored equally ...
            nn.init.zeros_(head.bias)
        with torch.no_grad():  # ... but targeting starts broad, as a new campaign does (last = everyone)
            self.target.bias[-1] = float(torch.log(torch.tensor(9.0 * (targets - 1))))
        self.critic = _mlp(n_in, hidden, 1)
        wide = exposure_at >= 0
        self.click = _mlp(n_in, hidden, channels if wide else creatives + channels)
        last = self.click[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.bias.fill_(-4.0)  # start near a 2% CTR
        if wide:  # creatives enter the click model only through its wide part (few clicks, few parameters)
            self.appeal = nn.Parameter(torch.zeros(self.segments, creatives))
            self.creative_bias = nn.Parameter(torch.zeros(creatives))
            self.fatigue = nn.Parameter(torch.full((1,), 0.5))

    def forward(self, state: torch.Tensor, touches: torch.Tensor, touch_creatives: torch.Tensor) -> HybridOut:
        """:param state: [B, >= state_dim] (extra log columns are ignored)."""
        code = self.encoder(touches, touch_creatives)
        x = torch.cat([state[:, :self.state_dim], code], dim=-1)
        h = self.actor(x)
        click = self._click(state, x)
        c = self.creative.out_features
        return HybridOut(self.creative(h), self.channel(h), self.target(h), self.critic(x).squeeze(-1),
                         click[:, :c], click[:, c:])

    def serve_np(self, state: np.ndarray, touches: np.ndarray, touch_creatives: np.ndarray) -> np.ndarray:
        """The serving path's outputs in one array, without the critic (not needed to act):
        ``[B, C + 3 + (K + 1) + C + 3]`` = creative, channel, target logits, then the click
        model's creative and channel terms — :meth:`forward`'s heads in numpy on views of the
        weights (float32), the journey code from :meth:`JourneyEncoder.encode_np`. A decision batch has a few
        rows, where torch's per-operator dispatch (~10 µs) outweighs the arithmetic and numpy's
        costs ~1–2 µs; only an LSTM over real touches still runs in torch. The views share the
        parameters' memory, so in-place updates (optimiser steps, ``load_state_dict``) show at
        once. Equal to :meth:`forward` up to float rounding (tested)."""
        w = self._weights_np()
        code = self.encoder.encode_np(touches, touch_creatives)
        x = np.concatenate([state[:, :self.state_dim], code], axis=1)
        h = np.tanh(np.tanh(x @ w["a0"].T + w["a0b"]) @ w["a1"].T + w["a1b"])
        deep = np.tanh(np.tanh(x @ w["c0"].T + w["c0b"]) @ w["c1"].T + w["c1b"]) @ w["c2"].T + w["c2b"]
        parts = [h @ w["hc"].T + w["hcb"], h @ w["hch"].T + w["hchb"], h @ w["ht"].T + w["htb"]]
        if self.exposure_at >= 0:
            c = w["appeal"].shape[1]
            seg = state[:, self.segment_at:self.segment_at + self.segments]
            exposures = state[:, self.exposure_at:self.exposure_at + c]
            parts.append(w["creative_bias"] + seg @ w["appeal"] - np.logaddexp(0.0, w["fatigue"]) * exposures)
        parts.append(deep)
        return np.concatenate(parts, axis=1)

    def heads(self, served: np.ndarray) -> ServedHeads:
        """:meth:`serve_np`'s array (or a copy of it in another dtype) as named views of its heads."""
        c, ch, t = self.creative.out_features, self.channel.out_features, self.target.out_features
        a, b, k = c + ch, c + ch + t, c + ch + t + c
        return ServedHeads(served[:, :c], served[:, c:a], served[:, a:b], served[:, b:k], served[:, k:])

    def _weights_np(self) -> dict[str, np.ndarray]:
        """numpy views of the serving weights, rebuilt only if a parameter's storage changed."""
        params = self.__dict__.get("_np_params")
        if params is None:
            params = self.__dict__["_np_params"] = tuple(self.parameters())
        key = tuple(map(_DATA_PTR, params))
        if self.__dict__.get("_np_key") != key:
            mods = {"a0": self.actor[0], "a1": self.actor[2], "c0": self.click[0], "c1": self.click[2],
                    "c2": self.click[4], "hc": self.creative, "hch": self.channel, "ht": self.target}
            views: dict[str, np.ndarray] = {}
            for name, m in mods.items():
                assert isinstance(m, nn.Linear)
                views[name], views[name + "b"] = m.weight.detach().numpy(), m.bias.detach().numpy()
            if self.exposure_at >= 0:
                for name in ("appeal", "creative_bias", "fatigue"):
                    views[name] = getattr(self, name).detach().numpy()
            self.__dict__["_np_views"], self.__dict__["_np_key"] = views, key
        return self.__dict__["_np_views"]  # type: ignore[no-any-return]

    def _click(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Click logits' creative [B, C] and channel [B, 3] terms. The channel term is deep (an MLP
        over the state and the journey code: who this is, where in the journey, which channel);
        the creative term is wide — ``b_c + segment posterior · appeal[K, c] − softplus(f) ·
        exposures_c`` — so segment × creative appeal and fatigue are learned from few clicks
        without a per-creative MLP output to overfit them."""
        deep = self.click(x)
        if self.exposure_at < 0:
            return deep
        c = self.appeal.shape[1]
        seg = state[:, self.segment_at:self.segment_at + self.segments]
        exposures = state[:, self.exposure_at:self.exposure_at + c]
        wide = self.creative_bias + seg @ self.appeal - nn.functional.softplus(self.fatigue) * exposures
        return torch.cat([wide, deep], dim=-1)


class BidQNet(nn.Module):
    """MLP: pacing features [B, P] → Q-values [B, A].

    :param n_features: P. :param n_actions: A. :param hidden: width.
    """

    def __init__(self, n_features: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
