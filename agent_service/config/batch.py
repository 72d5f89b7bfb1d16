"""Settings of the warehouse's batch writer (:class:`agent_service.warehouse.batch.BatchWriter`);
the service sets them in ``[warehouse]`` (:class:`agent_service.config.WarehouseConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from agent_service.errors import ConfigError

__all__ = ["BatchConfig"]


@dataclass(frozen=True)
class BatchConfig:
    """Batching and retry settings."""

    max_rows: int = 500
    """Rows per request; a table reaching it is flushed at once (BigQuery recommends ~500 per insertAll)."""
    max_delay_s: float = 2.0
    """Longest a buffered row waits before its table is flushed."""
    max_buffered_rows: int = 50_000
    """Backpressure: ``add`` waits while more rows than this are buffered in total."""
    max_attempts: int = 8
    """Attempts per flush before the rows are put back for the next flush."""
    backoff_initial_s: float = 0.2
    """First retry delay cap (seconds)."""
    backoff_max_s: float = 30.0
    """Largest retry delay cap (seconds)."""
    backoff_multiplier: float = 2.0
    """Growth of the delay cap per attempt."""
    recent_ids: int = 100_000
    """Ids remembered per table after a successful write, to drop re-added rows."""
    seed: int | None = None
    """Seed of the jitter (None: random)."""

    def __post_init__(self) -> None:
        checks = [
            (self.max_rows > 0, "warehouse.max_rows", "must be > 0"),
            (self.max_delay_s > 0, "warehouse.max_delay_s", "must be > 0 seconds"),
            (self.max_buffered_rows >= self.max_rows, "warehouse.max_buffered_rows", "must be >= max_rows"),
            (self.max_attempts > 0, "warehouse.max_attempts", "must be > 0"),
            (self.backoff_initial_s >= 0 and self.backoff_max_s >= self.backoff_initial_s,
             "warehouse.backoff_initial_s", "need 0 <= backoff_initial_s <= backoff_max_s"),
            (self.backoff_multiplier >= 1, "warehouse.backoff_multiplier", "must be >= 1"),
            (self.recent_ids >= 0, "warehouse.recent_ids", "must be >= 0"),
        ]
        for ok, key, reason in checks:
            if not ok:
                raise ConfigError(key, reason)
