"""`wait_until`: poll a condition with a deadline (tests never sleep where a condition can be polled)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], what: str, timeout_s: float = 10.0, poll_s: float = 0.005) -> Any:
    """The first truthy value of `predicate()`; AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(poll_s)
    return value
