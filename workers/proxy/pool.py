"""Per-worker upstream state: endpoint choice (round robin / least request), passive ejection, and
keep-alive pools of idle backend connections per endpoint.

A connection lives on the worker that opened it (Envoy's threading model), so everything here is
plain per-process state, touched only from the worker's event loop: no locks.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.proxy.upstream import UpstreamProtocol

Endpoint = tuple[str, int]


class EndpointState:
    """What this worker knows about one endpoint."""

    __slots__ = ("active", "ejected_until", "failures", "idle")

    def __init__(self) -> None:
        self.idle: list[UpstreamProtocol] = []  # LIFO: the most recently used connection is the warmest
        self.active = 0  # requests in flight (least-request balancing)
        self.failures = 0  # consecutive connect failures
        self.ejected_until = 0.0


class UpstreamPools:
    """Endpoint choice and idle connections for every endpoint this worker talks to."""

    def __init__(self, *, keepalive_max: int, keepalive_idle_s: float, eject_failures: int, eject_s: float,
                 least_request: bool) -> None:
        self.keepalive_max = keepalive_max
        self.keepalive_idle_s = keepalive_idle_s
        self.eject_failures = eject_failures
        self.eject_s = eject_s
        self.least_request = least_request
        self.states: dict[Endpoint, EndpointState] = {}
        self._rr: dict[int, int] = {}  # per upstream index: the next round-robin position
        self._rr_generation = -1
        self.ejections = 0

    def state(self, ep: Endpoint) -> EndpointState:
        st = self.states.get(ep)
        if st is None:
            st = self.states[ep] = EndpointState()
        return st

    def choose(self, upstream: int, generation: int, endpoints: tuple[Endpoint, ...], now: float,
               exclude: tuple[Endpoint, ...] = ()) -> Endpoint | None:
        """Pick an endpoint not in `exclude`, skipping ejected ones unless every one is ejected."""
        n = len(endpoints)
        if n == 1:
            ep = endpoints[0]
            return None if ep in exclude else ep
        if generation != self._rr_generation:
            self._rr.clear()  # indexes of another endpoints generation mean nothing now
            self._rr_generation = generation
        if self.least_request:
            return self._choose_p2c(endpoints, now, exclude)
        start = self._rr.get(upstream, 0)
        fallback = None
        for i in range(n):
            ep = endpoints[(start + i) % n]
            if ep in exclude:
                continue
            st = self.states.get(ep)
            if st is not None and st.ejected_until > now:
                fallback = fallback or ep
                continue
            self._rr[upstream] = start + i + 1
            return ep
        return fallback

    def _choose_p2c(self, endpoints: tuple[Endpoint, ...], now: float,
                    exclude: tuple[Endpoint, ...]) -> Endpoint | None:
        """Power of two choices: two random candidates, the one with fewer requests in flight."""
        usable = [ep for ep in endpoints if ep not in exclude and self.state(ep).ejected_until <= now]
        if not usable:
            usable = [ep for ep in endpoints if ep not in exclude]
            if not usable:
                return None
        if len(usable) == 1:
            return usable[0]
        a, b = random.sample(usable, 2)
        return a if self.state(a).active <= self.state(b).active else b

    def connect_failed(self, ep: Endpoint, now: float) -> None:
        st = self.state(ep)
        st.failures += 1
        if st.failures >= self.eject_failures and st.ejected_until <= now:
            st.ejected_until = now + self.eject_s
            self.ejections += 1

    def connect_succeeded(self, ep: Endpoint) -> None:
        st = self.states.get(ep)
        if st is not None:
            st.failures = 0
            st.ejected_until = 0.0

    def acquire(self, ep: Endpoint) -> UpstreamProtocol | None:
        """A live idle connection to the endpoint, or None."""
        st = self.states.get(ep)
        if st is None:
            return None
        idle = st.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: UpstreamProtocol, now: float) -> None:
        """Return a reusable connection to its endpoint's idle list (or close it when the list is full)."""
        st = conn.pool_state  # EndpointStates are never replaced: the one the connection was made with
        if len(st.idle) >= self.keepalive_max or conn.closed:
            conn.close()
            return
        conn.idle_since = now
        st.idle.append(conn)

    def discard(self, conn: UpstreamProtocol) -> None:
        st = self.states.get(conn.endpoint)
        if st is not None and conn in st.idle:
            st.idle.remove(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than keepalive_idle_s (called from the worker tick)."""
        limit = now - self.keepalive_idle_s
        for st in self.states.values():
            if st.idle and st.idle[0].idle_since < limit:
                keep = [c for c in st.idle if c.idle_since >= limit and not c.closed]
                for c in st.idle:
                    if c.idle_since < limit:
                        c.close()
                st.idle = keep

    def close_all(self) -> None:
        for st in self.states.values():
            for c in st.idle:
                c.close()
            st.idle.clear()

    def idle_count(self) -> int:
        return sum(len(st.idle) for st in self.states.values())
