"""Pickling ring buffers by what they hold, not by their preallocated capacity.

A learner snapshot (``OnlineLearner.snapshot``) pickles its buffers; a buffer that has not
wrapped yet holds ``filled`` rows at slots ``0 .. filled-1``, so only those are written and the
rest is padded back on load (a fresh 300k-row decision table is hundreds of MB of zeros).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["padded", "restore_trimmed", "trimmed_state"]


def padded(col: np.ndarray, capacity: int) -> np.ndarray:
    """``col`` grown with zero rows to ``capacity`` rows."""
    if len(col) >= capacity:
        return col
    full = np.zeros((capacity, *col.shape[1:]), col.dtype)
    full[:len(col)] = col
    return full


def trimmed_state(obj: object, filled: int, capacity: int, arrays: Sequence[str]) -> dict[str, object]:
    """``obj.__dict__`` with its ``arrays`` (numpy arrays or lists) cut to the ``filled`` slots when
    the buffer has not wrapped; :func:`restore_trimmed` pads them back."""
    state = dict(vars(obj))
    if filled < capacity:
        for name in arrays:
            if state.get(name) is not None:
                state[name] = state[name][:filled]  # type: ignore[index]
    state["_trimmed_capacity"] = capacity
    return state


def restore_trimmed(obj: object, state: dict[str, object], arrays: Sequence[str]) -> None:
    """The inverse of :func:`trimmed_state`: pads the arrays back and sets ``obj.__dict__``."""
    capacity = int(state.pop("_trimmed_capacity"))  # type: ignore[call-overload]
    for name in arrays:
        value = state.get(name)
        if isinstance(value, np.ndarray):
            state[name] = padded(value, capacity)
        elif isinstance(value, list) and len(value) < capacity:
            state[name] = value + [None] * (capacity - len(value))
    vars(obj).update(state)
