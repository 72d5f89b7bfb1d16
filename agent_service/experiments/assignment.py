"""Stable hashed assignment of persons to arms.

A person's bucket is a uniform number in [0, 1) from BLAKE2b over the experiment's salt and the person's
canonical id (after identity resolution, so all of one person's devices land together). It is the same in
every process and every run — unlike Python's ``hash()``, which is salted per process — and independent
across salts, so two experiments split persons independently of each other.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

__all__ = ["bucket", "pick_arm"]

_SCALE = float(2**64)


def bucket(person_id: str, salt: str) -> float:
    """Uniform position of ``person_id`` in [0, 1) for the experiment salted ``salt``.

    :param person_id: canonical person id.
    :param salt: experiment id (with a prefix naming the kind of experiment).
    """
    # The NUL separator keeps ("ab", "c") and ("a", "bc") apart.
    h = hashlib.blake2b(f"{salt}\x00{person_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / _SCALE


def pick_arm(position: float, shares: Sequence[float]) -> int:
    """Index of the arm whose slice of [0, 1) holds ``position``; slices follow ``shares`` in order.

    :param position: a bucket in [0, 1).
    :param shares: non-negative shares summing to 1 (an arm of share 0 is never picked).
    """
    edges = list(accumulate(shares))
    i = bisect_right(edges, position)  # skips zero-width slices
    if i < len(shares):
        return i
    # The last edge summed a hair below 1: the position belongs to the last arm that has a share.
    return max(j for j, s in enumerate(shares) if s > 0)
