"""The learner's decision table: a keyed ring of logged decisions whose reward parts are updated in place."""

from __future__ import annotations

import numpy as np

from agent_service.agent.learning.buffers import DecisionRows, DecisionTable, zero_rewards


def _rows(ids: np.ndarray) -> DecisionRows:
    n = len(ids)
    return DecisionRows(np.tile(ids[:, None], (1, 3)).astype(np.float32), np.zeros((n, 2, 4), np.float32),
                        np.zeros((n, 2), np.int64), np.ones((n, 3), bool), ids % 5, ids % 3, ids % 2,
                        np.full(n, -1.0, np.float32), ids // 4, ids * 1000, ids % 2 == 0, ids % 4 == 0,
                        *zero_rewards(n))


def test_the_ring_keeps_the_newest_rows_oldest_first_and_ignores_redeliveries() -> None:
    table = DecisionTable(capacity=5)
    table.add([f"d{i}" for i in range(4)], _rows(np.arange(4)))
    table.add(["d2", "d3"], _rows(np.array([99, 99])))  # redelivered: unchanged
    table.add([f"d{i}" for i in range(4, 8)], _rows(np.arange(4, 8)))
    assert len(table) == 5 and not table.has("d2") and table.has("d3")
    held = table.rows()
    assert held.time_ms.tolist() == [3000, 4000, 5000, 6000, 7000]
    assert table.update(["d5", "d0"], "attribution", np.array([2.5, 9.0], np.float32), add=True) == 1


def test_a_column_reads_what_the_rows_hold() -> None:
    table = DecisionTable(capacity=8)
    table.add([f"d{i}" for i in range(11)], _rows(np.arange(11)))  # more than fit: the newest 8 kept
    assert not table.has("d2") and table.has("d3")
    table.update(["d9"], "clicked", np.array([True]))
    slots = table.recent(len(table))
    rows = table.rows(slots)
    for field in ("state", "channel", "clicked", "time_ms", "final"):
        assert np.array_equal(table.column(field, slots), getattr(rows, field))
    some = table.slots(["d9", "d5", "d10"])
    assert table.column("time_ms", some).tolist() == [9000, 5000, 10000]
    assert table.column("clicked", some).tolist() == [True, False, False]
