"""Worker statistics in shared memory: one row of int64 counters per worker slot.

Each worker writes only its own row (a copy of its counters, once per tick); the supervisor sums the
rows for /metrics. Single writer per row, no locks; a reader may see a row mid-copy, which shifts
a counter by at most one tick's worth: acceptable for monitoring, and never negative.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

# requests by status class
REQ_1XX, REQ_2XX, REQ_3XX, REQ_4XX, REQ_5XX = range(5)
# upstream errors by reason
UP_CONNECT_REFUSED, UP_CONNECT_TIMEOUT, UP_RESPONSE_TIMEOUT, UP_BAD_RESPONSE, UP_RESET, UP_NO_ENDPOINT = range(5, 11)
UPSTREAM_REASONS = ("connect_refused", "connect_timeout", "response_timeout", "bad_response", "reset", "no_endpoint")
RETRIES, EJECTIONS, CONNECTIONS_OPEN, CONNECTIONS_TOTAL, TABLE_ROUTES_GEN, TABLE_ENDPOINTS_GEN = range(11, 17)
TABLE_ERRORS, ACCESS_LOG_DROPPED, LATENCY_SUM_US = range(17, 20)
CONNECTIONS_REFUSED = 40  # at the per-worker or per-address limit (after the latency buckets)
# latency histogram: cumulative counts are computed by the supervisor from these per-bucket counts
LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_BASE = 20  # LATENCY_BASE + i counts requests with latency <= bucket i (not cumulative); +len: +Inf
# TLS handshakes on the HTTPS listener: completed, and failed by reason (TLS_FAIL_BASE + index)
TLS_HANDSHAKES = 41
TLS_FAIL_BASE = 42  # TLS_FAIL_BASE + i counts failed handshakes of reason TLS_FAIL_REASONS[i]
TLS_FAIL_REASONS = ("timeout", "protocol", "aborted", "other")
ROW_WORDS = 64
assert LATENCY_BASE + len(LATENCY_BUCKETS_S) + 1 <= CONNECTIONS_REFUSED < ROW_WORDS
assert CONNECTIONS_REFUSED < TLS_HANDSHAKES < TLS_FAIL_BASE
assert TLS_FAIL_BASE + len(TLS_FAIL_REASONS) <= ROW_WORDS


class StatsBlock:
    """The stats file: `rows` rows of ROW_WORDS int64 counters."""

    def __init__(self, path: str, rows: int = 0, create: bool = False) -> None:
        self.path = path
        if create:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.ftruncate(fd, rows * ROW_WORDS * 8)
        else:
            fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.rows = np.frombuffer(self.mm, dtype="<i8").reshape(-1, ROW_WORDS)

    def write_row(self, slot: int, values: list[int]) -> None:
        self.rows[slot, : len(values)] = values

    def clear_row(self, slot: int) -> None:
        self.rows[slot, :] = 0

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
