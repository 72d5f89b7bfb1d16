"""Per-arm results of creative experiments in the ``experiment_arms`` table (schema in
:mod:`~agent_service.warehouse.schema`): written as batches of sums, read back as each arm's totals.

A row holds one arm's sums over a batch of persons (:class:`~agent_service.experiments.sequential.RatioStats`
of value over spend, plus first exposures). The sums merge exactly, so an arm's totals are ``SUM`` over its
rows whichever writer added them, and the row id (experiment, arm, batch) makes a retried batch count once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_service.errors import ConfigError
from agent_service.experiments.sequential import RatioStats
from agent_service.warehouse.port import InsertOutcome, Warehouse
from agent_service.warehouse.schema import TABLES

__all__ = ["TABLE", "ArmRatioTotals", "arm_rows", "read_arm_totals", "write_arm_batch"]

TABLE = "experiment_arms"


@dataclass(frozen=True, slots=True)
class ArmRatioTotals:
    """One arm's totals over every batch written."""

    exposed: int
    """Persons first exposed to the arm."""
    stats: RatioStats
    """Per-person sums of conversion value (x) over spend (y)."""


def arm_rows(experiment_id: str, batch_id: str, at_ms: int, stats: Mapping[str, RatioStats],
             exposed: Mapping[str, int]) -> list[dict[str, Any]]:
    """Validated rows of one batch, one per arm named in ``stats`` or ``exposed``.

    :param experiment_id: the experiment.
    :param batch_id: unique per batch of this writer (e.g. the window's end and the worker id).
    :param at_ms: event time the batch was closed.
    :param stats: per arm, the sums over the persons whose window closed in the batch.
    :param exposed: per arm, first exposures in the batch.
    """
    schema = TABLES[TABLE]
    rows = []
    for arm in sorted(stats.keys() | exposed.keys()):
        s = stats.get(arm, RatioStats())
        rows.append(schema.validate({
            "row_id": f"{experiment_id}:{arm}:{batch_id}", "event_time": at_ms, "experiment": experiment_id,
            "arm": arm, "exposed": exposed.get(arm, 0), "persons": s.n, "converting": s.n_pos, "value": s.sum_x,
            "spend": s.sum_y, "value_sq": s.sum_xx, "spend_sq": s.sum_yy, "value_spend": s.sum_xy}))
    return rows


async def write_arm_batch(warehouse: Warehouse, experiment_id: str, batch_id: str, at_ms: int,
                          stats: Mapping[str, RatioStats], exposed: Mapping[str, int]) -> InsertOutcome:
    """Insert one batch (:func:`arm_rows`); a batch id already stored is skipped."""
    return await warehouse.insert(TABLE, arm_rows(experiment_id, batch_id, at_ms, stats, exposed))


def read_arm_totals(path: str | Path) -> dict[str, dict[str, ArmRatioTotals]]:
    """Every experiment's per-arm totals from a DuckDB warehouse file: experiment → arm → totals.

    :param path: the DuckDB file (opened read-only).
    """
    import duckdb

    if not Path(path).exists():
        raise ConfigError("--warehouse", f"{path} does not exist")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise ConfigError("--warehouse", f"cannot open {path} as DuckDB: {exc}") from exc
    try:
        known = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if TABLE not in known:
            raise ConfigError("--warehouse", f"{path} has no {TABLE} table: no experiment results were written "
                              "to it")
        rows = con.execute(
            f"""SELECT experiment, arm, sum(exposed), sum(persons), sum(converting), sum(value), sum(spend),
                       sum(value_sq), sum(spend_sq), sum(value_spend)
                FROM {TABLE} GROUP BY experiment, arm""").fetchall()
    finally:
        con.close()
    out: dict[str, dict[str, ArmRatioTotals]] = {}
    for exp, arm, exposed, n, n_pos, sx, sy, sxx, syy, sxy in rows:
        stats = RatioStats(int(n), float(sx), float(sy), float(sxx), float(syy), float(sxy), int(n_pos))
        out.setdefault(exp, {})[arm] = ArmRatioTotals(int(exposed), stats)
    return out
