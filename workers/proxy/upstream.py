"""UpstreamProtocol: one backend connection; feeds its ClientConn and hands events to the exchange.

When idle it sits in the pool with `exchange = None`; bytes arriving then are unsolicited
(http1-hardening item 20) and close it; a close from the backend removes it from the pool.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from workers.http1.client_conn import ClientConn, PlainHeads
from workers.http1.limits import Limits

if TYPE_CHECKING:
    from workers.proxy.exchange import Exchange
    from workers.proxy.pool import Endpoint, UpstreamPools


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("closed", "conn", "endpoint", "exchange", "idle_since", "pool_state", "pools", "transport", "tunnel")

    def __init__(self, endpoint: Endpoint, pools: UpstreamPools, limits: Limits, heads: PlainHeads | None = None
                 ) -> None:
        self.endpoint = endpoint
        self.pools = pools
        self.pool_state = pools.state(endpoint)  # its endpoint's idle list: release() needs no lookup
        self.conn = ClientConn(limits, heads)
        self.exchange: Exchange | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.tunnel = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()  # unsolicited bytes on an idle connection: never parse them as a response
            return
        if ex.simple:
            ex.upstream_simple(data)
        elif self.tunnel:
            ex.tunnel_from_upstream(data)
        else:
            ex.upstream_data(data)

    def eof_received(self) -> bool | None:
        ex = self.exchange
        if ex is not None and not self.tunnel:
            ex.upstream_eof()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream_lost(self, exc)
        else:
            self.pools.discard(self)

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.down.pause_reading_for(1)

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.down.resume_reading_for(1)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
