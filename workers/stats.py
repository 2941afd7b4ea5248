"""A worker's counters as a plain Python list (cheap increments on the hot path), copied to the
shared stats block once per tick."""

from __future__ import annotations

import bisect

from fastingress.table import stats as s


class WorkerStats:
    __slots__ = ("block", "counters", "slot")

    def __init__(self, block: s.StatsBlock | None, slot: int) -> None:
        self.block = block
        self.slot = slot
        self.counters = [0] * s.ROW_WORDS

    def request(self, status: int, latency_s: float) -> None:
        c = self.counters
        c[min(max(status // 100, 1), 5) - 1] += 1
        c[s.LATENCY_SUM_US] += int(latency_s * 1e6)
        c[s.LATENCY_BASE + bisect.bisect_left(s.LATENCY_BUCKETS_S, latency_s)] += 1

    def add(self, index: int, n: int = 1) -> None:
        self.counters[index] += n

    def flush(self) -> None:
        if self.block is not None:
            self.block.write_row(self.slot, self.counters)
