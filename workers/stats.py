"""A worker's counters as a plain Python list (cheap increments on the hot path), copied to the
shared stats block once per tick."""

from __future__ import annotations

import bisect

from fastingress.table import stats as s

_CLASS_ROW = (0, 0, 1, 2, 3, 4)  # status // 100 -> the 1xx..5xx counter (0xx counted as 1xx)
_LATENCY_SUM_US = s.LATENCY_SUM_US
_LATENCY_BASE = s.LATENCY_BASE
_BUCKETS = s.LATENCY_BUCKETS_S
_bisect_left = bisect.bisect_left


class WorkerStats:
    __slots__ = ("block", "counters", "slot")

    def __init__(self, block: s.StatsBlock | None, slot: int) -> None:
        self.block = block
        self.slot = slot
        self.counters = [0] * s.ROW_WORDS

    def request(self, status: int, latency_s: float) -> None:
        # hot path: once per request; module constants bound at import, no min/max calls
        c = self.counters
        c[_CLASS_ROW[status // 100] if status < 600 else 4] += 1
        c[_LATENCY_SUM_US] += int(latency_s * 1e6)
        c[_LATENCY_BASE + _bisect_left(_BUCKETS, latency_s)] += 1

    def add(self, index: int, n: int = 1) -> None:
        self.counters[index] += n

    def flush(self) -> None:
        if self.block is not None:
            self.block.write_row(self.slot, self.counters)
