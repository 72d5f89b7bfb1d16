"""One discovery run: warehouse in, findings and a calibration out (each step's method and check
are in its module's docstring)."""

from __future__ import annotations

from pathlib import Path

from agent_service.discovery.channels import discover_channels
from agent_service.discovery.data import load_observations
from agent_service.discovery.delays import discover_delays
from agent_service.discovery.journeys import discover_journeys
from agent_service.discovery.population import discover_population
from agent_service.discovery.segments import discover_segments
from agent_service.discovery.temporal import discover_temporal
from agent_service.discovery.writer import Findings, build_calibration
from simulators.calibration.schema import Calibration

__all__ = ["discover"]


def discover(warehouse: str | Path, prior: Calibration, k_max: int = 6, seed: int = 0,
             max_delay_days: float = 45.0, name: str = "discovered") -> tuple[Findings, Calibration]:
    """Learn the world from the GA4 tables of ``warehouse``.

    :param warehouse: DuckDB file written by ``gaelp ingest ga4``.
    :param prior: calibration whose unidentified numbers are kept.
    :param k_max: most segments tried (K is chosen by BIC).
    :param seed: seed of the mixture's restarts.
    :param max_delay_days: longest click-to-conversion delay considered.
    :param name: ``meta.name`` of the calibration written.
    """
    obs = load_observations(warehouse)
    segments = discover_segments(obs, k_max=k_max, seed=seed)
    delays = discover_delays(obs, max_days=max_delay_days)
    findings = Findings(segments=segments, temporal=discover_temporal(obs), delays=delays,
                        channels=discover_channels(obs, delays, segments.resp),
                        population=discover_population(obs), journeys=discover_journeys(obs),
                        origin=str(warehouse))
    return findings, build_calibration(findings, prior, name=name)
