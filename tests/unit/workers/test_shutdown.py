"""workers.main.shutdown: how long a drain waits for TLS handshakes under way."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from fastingress.settings import Settings
from workers.main import shutdown


def _ctx(loop: asyncio.AbstractEventLoop, handshakes: int) -> Any:
    return SimpleNamespace(loop=loop, connections=set(), handshakes=handshakes, now=0.0,
                           pools=SimpleNamespace(close_all=lambda: None))


def _timed(drain: bool, handshakes: int, settings: Settings) -> float:
    loop = asyncio.new_event_loop()
    try:
        started = time.monotonic()
        loop.run_until_complete(shutdown([], _ctx(loop, handshakes), settings, drain=drain))
        return time.monotonic() - started
    finally:
        loop.close()


def test_a_handshake_that_never_completes_holds_the_drain_only_for_the_handshake_timeout() -> None:
    # uvloop may drop a connection it could not set up without completing the handshake's waiter
    settings = Settings(drain_timeout_s=30.0, tls_handshake_timeout_s=0.3)
    took = _timed(True, 1, settings)
    assert 0.3 <= took < 2.0


def test_nothing_under_way_ends_the_drain_at_once_and_a_fast_stop_waits_for_nothing() -> None:
    settings = Settings(drain_timeout_s=30.0, tls_handshake_timeout_s=10.0)
    assert _timed(True, 0, settings) < 0.5
    assert _timed(False, 3, settings) < 0.5
