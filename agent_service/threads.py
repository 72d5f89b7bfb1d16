"""One math thread per process, set before numpy or torch is loaded.

GAELP's matrices are small (a decision batch is tens of rows; an update a few hundred) and its
processes share the machine (a bidder beside stream workers, Ray runners beside the learner).
OpenBLAS and OpenMP default to a thread per core that spin while they wait; measured here on 2
cores, the serving forward pass (``HybridNet.serve_np``: a few tiny matmuls) took 16 ms per call
with OpenBLAS's threads when the other core was busy and well under 1 ms with one thread, and a
training run went from 14.7 s to 8.5 s. The libraries read these variables once, when they load,
so :func:`limit_math_threads` runs at the top of the ``gaelp`` command (and of the tests and
benches); a variable already set by the user wins.
"""

from __future__ import annotations

import os

__all__ = ["MATH_THREAD_VARS", "limit_math_threads"]

MATH_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_math_threads() -> dict[str, str]:
    """Default every math library to one thread; returns the values in force (for Ray workers)."""
    for var in MATH_THREAD_VARS:
        os.environ.setdefault(var, "1")
    return {var: os.environ[var] for var in MATH_THREAD_VARS}
