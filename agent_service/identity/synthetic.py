"""A seeded synthetic identity world with ground truth (tests and benches only).

Stands in for the simulator's persons (1–3 devices each) until it is hooked up: the
simulator only has to provide the same two things, a ``truth`` mapping device → person and
a stream of :class:`~agent_service.identity.model.GraphLink`, to be scored with
:func:`~agent_service.identity.model.evaluate_identity`.

The world: persons live in households of 1–4 people sharing a home IP. Each device of a
person logs in with probability ``login_rate`` (a deterministic link to the person's user
key). Devices of the same person seen on the home IP produce IP + user-agent and
co-occurrence links with high scores; devices of housemates produce such links too, with
lower scores (some above the threshold: the false merges that cost precision). A few
carrier-NAT IPs are shared by many unrelated devices and produce a burst of plausible-looking
links, which only the IP fan-out cap stops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent_service.identity.model import GraphLink

__all__ = ["IdentityWorld", "generate_identity_world"]


@dataclass(frozen=True)
class IdentityWorld:
    """Ground truth and the links observed, in arrival order."""

    truth: dict[str, str]
    """Device id → true person id."""
    links: list[GraphLink]
    """Identity links, shuffled (arrival order)."""


def generate_identity_world(
    n_persons: int,
    seed: int = 0,
    *,
    login_rate: float = 0.3,
    same_person_link_rate: float = 0.8,
    housemate_link_rate: float = 0.3,
    nat_ips: int = 3,
    nat_devices: int = 60,
) -> IdentityWorld:
    """A seeded world of ``n_persons`` persons with 1–3 devices each.

    :param n_persons: number of persons.
    :param seed: seed of every draw.
    :param login_rate: probability that a device logs in (deterministic link).
    :param same_person_link_rate: probability of a probabilistic link per same-person device pair.
    :param housemate_link_rate: probability of a (false) link per housemate device pair.
    :param nat_ips: carrier-NAT IPs shared by many unrelated devices.
    :param nat_devices: devices per carrier-NAT IP.
    """
    rng = np.random.default_rng(seed)
    truth: dict[str, str] = {}
    devices_of: list[list[str]] = []
    for p in range(n_persons):
        k = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
        devs = [f"dev{p}-{j}" for j in range(k)]
        for d in devs:
            truth[d] = f"person{p}"
        devices_of.append(devs)
    links: list[GraphLink] = []
    n = 0

    def add(device: str, other: str, kind: str, score: float = 1.0, ip: str = "") -> None:
        nonlocal n
        links.append(GraphLink(f"l{n}", device, other, kind, round(float(score), 4), ip, n))
        n += 1

    order = rng.permutation(n_persons)
    p = 0
    household = 0
    while p < n_persons:
        size = int(rng.integers(1, 5))
        members = [int(x) for x in order[p:p + size]]
        p += size
        ip = f"10.{household // 65536}.{(household // 256) % 256}.{household % 256}"
        household += 1
        for person in members:
            devs = devices_of[person]
            for d in devs:
                if rng.random() < login_rate:
                    add(d, f"user{person}", "login")
            for i in range(len(devs)):
                for j in range(i + 1, len(devs)):
                    if rng.random() < same_person_link_rate:
                        kind = "ip_ua" if rng.random() < 0.6 else "co_occurrence"
                        add(devs[i], devs[j], kind, rng.beta(8, 2), ip)
        for a_i in range(len(members)):
            for b_i in range(a_i + 1, len(members)):
                for da in devices_of[members[a_i]]:
                    for db in devices_of[members[b_i]]:
                        if rng.random() < housemate_link_rate:
                            add(da, db, "ip_ua", rng.beta(3, 3), ip)
    all_devices = list(truth)
    for k in range(nat_ips):
        ip = f"100.64.0.{k}"
        crowd = [all_devices[int(i)] for i in rng.choice(len(all_devices), size=min(nat_devices, len(all_devices)),
                                                         replace=False)]
        for i in range(len(crowd) - 1):
            add(crowd[i], crowd[i + 1], "ip_ua", rng.beta(9, 1), ip)
    perm = rng.permutation(len(links))
    return IdentityWorld(truth, [links[int(i)] for i in perm])
