"""Environment for a local Ray instance, set before ``ray`` is imported (Ray reads it at import)."""

from __future__ import annotations

import os

__all__ = ["prepare_ray_env"]


def prepare_ray_env(address: str | None) -> None:
    """No auth token under the home directory; and, for a local instance (no ``address``), every
    Ray process on loopback — without this Ray binds this host's own IP and 0.0.0.0 (it reads the
    switch, named for Windows and macOS, once at import)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not address:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
