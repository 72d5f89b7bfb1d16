"""Small in-process structures of the memory store (``adapters.memory_store``)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from agent_service.ports.store import Activity

__all__ = ["DueIndex", "Profile"]


class Profile:
    """Context counts and activity of a person, or one device's share of them (what moves)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.activity = Activity()

    def count(self, context: int, t_ms: int, search: bool) -> None:
        self.counts[context] = self.counts.get(context, 0) + 1
        self.activity = self.activity.add(t_ms, search)

    def add(self, share: Profile) -> None:
        for c, n in share.counts.items():
            self.counts[c] = self.counts.get(c, 0) + n
        self.activity = self.activity.merged(share.activity)

    def remove(self, share: Profile) -> bool:
        """Take ``share`` out; False when no request is left (the profile can go)."""
        for c, n in share.counts.items():
            left = self.counts.get(c, 0) - n
            if left > 0:
                self.counts[c] = left
            else:
                self.counts.pop(c, None)
        self.activity = self.activity.without(share.activity)
        return bool(self.counts)


class DueIndex:
    """Ids with a due time: add, list the due ones in time order, remove (like a Redis zset)."""

    def __init__(self) -> None:
        self._time: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._ready: dict[str, None] = {}  # popped from the heap, due, not yet removed

    def add(self, item: str, due_at: int) -> None:
        if self._time.get(item) == due_at:
            return
        self._time[item] = due_at
        self._ready.pop(item, None)
        heapq.heappush(self._heap, (due_at, item))

    def due(self, until: int, limit: int) -> list[str]:
        while self._heap and self._heap[0][0] <= until:
            t, item = heapq.heappop(self._heap)
            if self._time.get(item) == t:  # skip entries superseded or removed
                self._ready[item] = None
        out = [i for i in self._ready if self._time[i] <= until]
        return out[:limit]

    def remove(self, items: Sequence[str]) -> None:
        for item in items:
            self._time.pop(item, None)
            self._ready.pop(item, None)
