"""The simulated world GAELP trains and is judged in (``simulators/README.md`` says what a bidder may know of it).

- ``simulators.calibration`` — the calibration file format, its default and loader;
- ``simulators.engine`` — the vectorised engine (people, journeys, auctions, clicks, conversions);
- ``simulators.gym_env`` / ``simulators.vector_env`` — Gymnasium environments over the engine;
- ``simulators.gaelp_world`` — the same world as a stream of wire contracts (``World`` protocol);
- ``simulators.hindsight`` — the hindsight optimum of an episode;
- ``simulators.basic`` — the walking skeleton's small world; ``simulators.ipinyou`` — the log replay.

``build_world`` picks the stream world named by ``simulation.world``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_service.config import SimulationConfig
    from simulators.world import World

__all__ = ["WORLDS", "build_world"]

WORLDS: tuple[str, ...] = ("gaelp", "basic")
"""Names accepted by ``simulation.world``."""


def build_world(sim: SimulationConfig, window_days: float | None = None) -> World:
    """The stream world of a run: ``GaelpWorld`` (calibrated) or ``BasicWorld`` (skeleton).

    :param sim: the ``[simulation]`` settings (``world``, ``calibration``, seed, size).
    :param window_days: the service's ``join.window_days``, which ``BasicWorld`` labels its
        conversions by (None: its default); the calibrated world has a window of its own.
    """
    name = getattr(sim, "world", "gaelp")
    if name == "basic":
        from simulators.basic import BasicWorld, BasicWorldParams

        return BasicWorld(sim, BasicWorldParams() if window_days is None else BasicWorldParams(window_days=window_days))
    if name == "gaelp":
        from simulators.calibration import load_calibration
        from simulators.gaelp_world import GaelpWorld

        return GaelpWorld(sim, load_calibration(getattr(sim, "calibration", "") or None))
    from agent_service.errors import ConfigError

    raise ConfigError("simulation.world", f"unknown world {name!r}; one of {WORLDS}")
