"""The agent's tests run torch single-threaded (small networks; the service does the same)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
