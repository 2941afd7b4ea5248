"""`SpeedProbe`: how fast this machine is right now, so rounds measured in a slow spell can be repeated.

Why: on a shared VM the whole machine sometimes runs 20-40% slower for minutes (runs C and D in
docs/performance.md: every fastingress round of one scenario fell in such a spell while nginx's did
not), which no number of interleaved rounds averages out. The hypervisor reports no steal time
here (/proc/stat's steal column stays flat through those spells), so the harness measures speed
itself: a fixed CPU-bound job (SHA-256 over 1 MiB, best of three, ~10 ms) right before and right
after each round. A round whose slower probe is below `DISTURBED_BELOW` of the fastest probe of the
run is measured again, up to `MAX_ATTEMPTS` times; every round records its `machine_speed` (the
ratio) and `attempts`, so a reader sees what was kept.

The probe runs in the harness process between rounds, when the servers are idle: it measures the
machine, not the servers. Given a `cpu`, it samples pinned to that CPU; the harness passes the one the
proxy under test is pinned to. Unpinned, the probe ran wherever the scheduler put it and reported
0.95-0.99 in rounds where a proxy ran at half speed; pinned, it at least measures the core the proxy
runs on. The caller's affinity is restored after each sample. This module knows nothing of the
harness's CPU layout (harness.py imports it, not the other way round).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DISTURBED_BELOW", "MAX_ATTEMPTS", "RETRY_PAUSE_S", "SpeedProbe", "pinned"]

DISTURBED_BELOW = 0.85  # a round whose machine speed is below 85% of the run's best is repeated
MAX_ATTEMPTS = 3  # then the last attempt is kept (and marked by its machine_speed)
RETRY_PAUSE_S = 2.0  # slow spells last seconds to minutes: give it a moment before the next attempt
_BLOCK = bytes(1 << 20)


class SpeedProbe:
    """Machine speed in MiB/s of SHA-256 (on CPU `cpu` if given), and the best seen so far as the reference."""

    def __init__(self, repeats: int = 3, blocks: int = 4, cpu: int | None = None) -> None:
        self.repeats, self.blocks, self.cpu = repeats, blocks, cpu
        self.reference = 0.0

    def sample(self) -> float:
        """MiB/s of the fastest of `repeats` runs over `blocks` MiB; raises the reference when faster."""
        with pinned(self.cpu):
            seconds = self.time_blocks()
        speed = self.blocks / seconds
        self.reference = max(self.reference, speed)
        return speed

    def time_blocks(self) -> float:
        """Seconds of the fastest of `repeats` runs of SHA-256 over `blocks` MiB, on the calling thread."""
        best = float("inf")
        for _ in range(self.repeats):
            started = time.perf_counter()
            for _ in range(self.blocks):
                hashlib.sha256(_BLOCK).digest()
            best = min(best, time.perf_counter() - started)
        return best

    def calibrate(self, samples: int = 5) -> None:
        for _ in range(samples):
            self.sample()

    def relative(self, speed: float) -> float:
        """`speed` as a fraction of the best seen (1.0: as fast as this machine gets)."""
        return speed / self.reference if self.reference else 1.0


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """The calling thread on `cpu` alone for the block (None: left where it is), its affinity restored after."""
    if cpu is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)
