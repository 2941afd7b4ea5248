"""WorkerContext: the per-worker state every connection shares (settings, table view, pools, clock, stats)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from typing import TYPE_CHECKING

from fastingress.settings import Settings
from fastingress.table.lookup import TableView
from workers.http1.client_conn import PLAIN_HEADS_MAX, PlainHeads
from workers.http1.limits import Limits
from workers.http1.simple import HSTS_NAME, FieldHeads
from workers.proxy.pool import UpstreamPools
from workers.stats import WorkerStats

if TYPE_CHECKING:
    from workers.accesslog import AccessLog
    from workers.proxy.downstream import DownstreamProtocol


class WorkerContext:
    """Shared by all connections of one worker; touched only from its event loop."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop, view: TableView | None,
                 stats: WorkerStats, access_log: AccessLog | None, worker_id: int) -> None:
        self.settings = settings
        self.loop = loop
        self.view = view  # replaced (one reference) on every table swap; requests read it once
        self.stats = stats
        self.access_log = access_log
        self.worker_id = worker_id
        self.limits = Limits(body_bytes=settings.limit_body_bytes)
        self.plain_heads = PlainHeads()  # response heads the fast lane accepted, for every backend (ClientConn)
        self.pools = UpstreamPools(
            keepalive_max=settings.upstream_keepalive_max, keepalive_idle_s=settings.upstream_keepalive_idle_s,
            eject_failures=settings.eject_consecutive_failures, eject_s=settings.eject_duration_s,
            least_request=settings.lb_algorithm == "least_request")
        self.now = loop.time()  # coarse clock, refreshed by the tick and on each accept
        self.connections: set[DownstreamProtocol] = set()
        self.draining = False
        self.handshakes = 0  # TLS handshakes under way: not connections yet, but a drain waits for them
        self._trusted = [ipaddress.ip_network(p.strip(), strict=False)
                         for p in settings.trusted_proxies.split(",") if p.strip()]
        self._trusted_cache: dict[str, bool] = {}
        self._rid_prefix = os.urandom(8).hex().encode()
        self._rid = 0
        # connections per client address, only when a per-address limit is set (no cost otherwise)
        self.per_ip: dict[str, int] | None = {} if settings.limit_connections_per_ip > 0 else None
        self.http_port = b"%d" % settings.http_port
        self.https_port = b"%d" % settings.https_port
        # added to HTTPS responses of hosts with their own certificate (route flag), unless the backend sent one
        self.hsts_field = (b"Strict-Transport-Security: max-age=%d%s\r\n" % (
            settings.hsts_max_age_s, b"; includeSubDomains" if settings.hsts_include_subdomains else b"")
            if settings.hsts else b"")
        # fast-lane heads with that field added, by the backend's head (the same bound as plain_heads)
        self.hsts_heads = FieldHeads(self.hsts_field, HSTS_NAME, PLAIN_HEADS_MAX)

    def is_trusted(self, peer: str) -> bool:
        """Whether X-Forwarded-* from this peer are kept (cached per address)."""
        if not self._trusted:
            return False
        hit = self._trusted_cache.get(peer)
        if hit is None:
            try:
                addr = ipaddress.ip_address(peer)
                hit = any(addr in net for net in self._trusted)
            except ValueError:
                hit = False
            if len(self._trusted_cache) > 4096:
                self._trusted_cache.clear()
            self._trusted_cache[peer] = hit
        return hit

    def admit_peer(self, peer: str) -> bool:
        """Count a new connection from `peer`; False when it is over the per-address limit (then counted too)."""
        assert self.per_ip is not None
        n = self.per_ip.get(peer, 0) + 1
        self.per_ip[peer] = n
        return n <= self.settings.limit_connections_per_ip

    def release_peer(self, peer: str) -> None:
        assert self.per_ip is not None
        n = self.per_ip.get(peer, 0) - 1
        if n > 0:
            self.per_ip[peer] = n
        else:
            self.per_ip.pop(peer, None)

    def request_id(self) -> bytes:
        """32 hex digits, unique per worker run: a random prefix and a counter (no syscall per request)."""
        self._rid += 1
        return b"%s%016x" % (self._rid_prefix, self._rid)
