"""DownstreamProtocol: one client connection; feeds ServerConn and drives one Exchange at a time.

Theory of operation: `data_received` feeds the core and runs the request events in order. A head
starts an Exchange; body and end events go to it; a head that arrives while an exchange is still
running (pipelining) waits in `backlog` and is started when the previous response is complete, so
responses leave in request order. A protocol error ends the connection after the responses already
owed (400-class answer, then close). Deadlines are checked by the worker's coarse tick (`on_tick`),
never by a timer per request:
- no exchange: the head deadline (timeout_header_read_s from accept or first byte after idle) or the
  keep-alive idle deadline;
- exchange reading the request body: body idle (timeout_body_idle_s, refreshed by each read);
- exchange waiting on the backend: the exchange's own deadline (connect / response).
Reading is paused for three reasons (a bit each): the backend's write buffer is full, the body is
buffered while connecting, or too many pipelined requests wait.
"""

from __future__ import annotations

import asyncio

from fastingress.table import stats as st
from workers.http1.errors import RemoteProtocolError
from workers.http1.headers import build_local_response, forwarded_block
from workers.http1.server_conn import EV_BODY, EV_END, EV_HEAD, EV_UPGRADE, ServerConn
from workers.http1.states import ConnState
from workers.proxy.context import WorkerContext
from workers.proxy.exchange import DONE, Exchange

PAUSE_UPSTREAM_FULL = 1
PAUSE_PENDING_BODY = 2
PAUSE_PIPELINE = 4
BODY_RATE_GRACE_S = 10.0  # the minimum body rate applies after this long: slow starts are normal
# A connection accepted just before a drain has its request on the way (or in our receive buffer, not read
# yet): closing it would fail that request, so it gets this long to arrive and is answered with close.
DRAIN_REQUEST_GRACE_S = 1.0
MAX_PIPELINED_EVENTS = 64  # ~16 pipelined requests with a head, body and end each; then stop reading
_ERROR_TEXT = {
    400: b"400 Bad Request\n", 405: b"405 Method Not Allowed\n", 408: b"408 Request Timeout\n",
    413: b"413 Content Too Large\n", 414: b"414 URI Too Long\n", 417: b"417 Expectation Failed\n",
    431: b"431 Request Header Fields Too Large\n", 501: b"501 Not Implemented\n",
    505: b"505 HTTP Version Not Supported\n",
}


class DownstreamProtocol(asyncio.Protocol):
    __slots__ = ("_in_run", "_paused", "backlog", "body_start", "closing", "conn", "created", "ctx", "deadline",
                 "error", "exchange", "fwd_block", "idle", "middle", "middle_fields", "middle_host", "peer",
                 "peer_bytes", "requests", "tls", "transport", "trusted", "tunnel")

    def __init__(self, ctx: WorkerContext, tls: bool = False) -> None:
        self.ctx = ctx
        self.tls = tls
        self.conn = ServerConn(ctx.limits)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.backlog: list[tuple[int, object]] = []
        self.requests = 0
        self.deadline = 0.0
        self.idle = False
        self.closing = False
        self.tunnel = False
        self.error: RemoteProtocolError | None = None
        self.peer = ""
        self.peer_bytes = b""
        self.trusted = False
        self._paused = 0
        self._in_run = False
        self.created = 0.0
        self.body_start = 0.0
        self.fwd_block = b""
        # the middle of this connection's plain upstream heads (headers.plain_request_middle), for the field
        # lines and Host value it was built from (the same objects while the client repeats its field lines)
        self.middle = b""
        self.middle_fields = b""
        self.middle_host = b""

    # --- asyncio callbacks ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        ctx = self.ctx
        ctx.now = now = ctx.loop.time()
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.peer_bytes = self.peer.encode()
        self.trusted = ctx.is_trusted(self.peer)
        self.fwd_block = forwarded_block(self.peer_bytes, b"https" if self.tls else b"http",
                                         ctx.https_port if self.tls else ctx.http_port)
        self.deadline = now + ctx.settings.timeout_header_read_s
        self.created = now
        ctx.stats.add(st.CONNECTIONS_TOTAL)
        if len(ctx.connections) >= ctx.settings.limit_connections_per_worker:
            ctx.stats.add(st.CONNECTIONS_REFUSED)
            self.transport.abort()  # type: ignore[union-attr]  # at capacity, as nginx when worker_connections run out
            return
        ctx.connections.add(self)
        if ctx.per_ip is not None and not ctx.admit_peer(self.peer):
            ctx.stats.add(st.CONNECTIONS_REFUSED)
            self.write(build_local_response(503, b"503 Service Unavailable: too many connections from your address\n",
                                            False))
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            ex = self.exchange
            if ex is not None:
                ex.tunnel_from_client(data)
            return
        if self.exchange is None and not self.backlog and not self.closing:
            head = self.conn.feed_simple(data)  # hot path: one plain GET head in this read (simple.py)
            if head is not None:
                self.idle = False
                self.requests += 1
                ex = self.exchange = Exchange(self, head)
                ex.req_done = True  # no body
                ex.start()
                return
        ctx = self.ctx
        if self.idle:
            self.idle = False
            self.deadline = ctx.now + ctx.settings.timeout_header_read_s
        events, error = self.conn.feed(data)
        if events:
            if self.backlog:
                self.backlog.extend(events)
            else:
                self._run(events)
            if len(self.backlog) > MAX_PIPELINED_EVENTS:
                self.pause_reading_for(PAUSE_PIPELINE)
        ex = self.exchange
        if ex is not None and not ex.req_done:
            self.deadline = ctx.now + ctx.settings.timeout_body_idle_s
        if error is not None:
            self._protocol_error(error)

    def eof_received(self) -> bool | None:
        ex = self.exchange
        if ex is not None and ex.req_done and not self.tunnel:
            self.closing = True  # half-close: finish the response, then close
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        ctx = self.ctx
        if self in ctx.connections:
            ctx.connections.discard(self)
            if ctx.per_ip is not None:
                ctx.release_peer(self.peer)
        self.closing = True
        self.backlog = []
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            if self.tunnel:
                ex.tunnel_closed()
            elif ex.state != DONE:
                ex.client_aborted()

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None and ex.up is not None and ex.up.transport is not None:
            ex.up.transport.pause_reading()

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None and ex.up is not None and ex.up.transport is not None:
            ex.up.transport.resume_reading()

    # --- request events ---
    def _run(self, events: list[tuple[int, object]]) -> None:
        self._in_run = True
        try:
            for i, (kind, payload) in enumerate(events):
                ex = self.exchange
                if kind == EV_HEAD:
                    if ex is not None or self.closing:
                        if not self.closing:
                            self.backlog = events[i:]  # pipelined: waits for the current response
                        return
                    self.requests += 1
                    ex = self.exchange = Exchange(self, payload)  # type: ignore[arg-type]
                    self.body_start = self.ctx.now
                    self.deadline = self.ctx.now + self.ctx.settings.timeout_body_idle_s
                    ex.start()
                elif ex is None:
                    continue  # the rest of a request already answered and closed
                elif kind == EV_BODY:
                    ex.client_body(payload)  # type: ignore[arg-type]
                elif kind == EV_END:
                    ex.client_end()
                elif kind == EV_UPGRADE:
                    ex.client_upgrade(payload)  # type: ignore[arg-type]
        finally:
            self._in_run = False

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        """The response is complete: next pipelined request, keep-alive idle, or close."""
        if self.exchange is ex:
            self.exchange = None
        if not keep_alive or self.closing:
            return self.close()
        ctx = self.ctx
        self.idle = True
        self.deadline = ctx.now + ctx.settings.timeout_keepalive_idle_s
        if ex.head.upgrade and self.conn.upgrade_pending:  # the backend refused it: what followed is HTTP again
            events, error = self.conn.resume()
            self.backlog = events + self.backlog
            if error is not None:
                self.error = error
        if self._in_run:
            return  # the running loop continues with the next event
        if self.backlog:
            backlog, self.backlog = self.backlog, []
            self.idle = False
            self._run(backlog)
        if self._paused and len(self.backlog) <= MAX_PIPELINED_EVENTS:
            self.resume_reading_for(PAUSE_PIPELINE)
        if self.exchange is None and self.error is not None:
            self._send_error(self.error)

    def _protocol_error(self, error: RemoteProtocolError) -> None:
        ex = self.exchange
        if ex is None and not self.backlog:
            return self._send_error(error)
        if ex is not None and not ex.req_done:
            # the request in progress is broken: its backend request is aborted, never completed
            self.exchange = None
            started = ex.resp_started
            ex.client_aborted()
            if started:
                return self.abort()
            return self._send_error(error)
        self.error = error  # answered after the responses already owed

    def _send_error(self, error: RemoteProtocolError) -> None:
        status = error.status_hint or 400
        self.write(build_local_response(status, _ERROR_TEXT.get(status, b"%d\n" % status), False))
        self.ctx.stats.request(status, 0.0)
        log = self.ctx.access_log
        if log is not None:
            log.write({"worker": self.ctx.worker_id, "remote": self.peer, "status": status, "error": str(error)})
        self.close()

    # --- timeouts, from the worker tick ---
    def on_tick(self, now: float) -> None:
        ex = self.exchange
        settings = self.ctx.settings
        if ex is not None:
            if not ex.req_done and not self.tunnel:
                if now > self.deadline:
                    return self._protocol_error(RemoteProtocolError("request body timed out", 408))
                elapsed = now - self.body_start
                min_bytes = settings.limit_body_min_rate_bytes_s * elapsed
                if elapsed > BODY_RATE_GRACE_S and self.conn.body_received < min_bytes:
                    return self._protocol_error(RemoteProtocolError("request body too slow", 408))
            if ex.deadline and now > ex.deadline:
                ex.on_timeout()
        elif now > self.deadline:
            if self.idle or (self.requests == 0 and self.conn.state is ConnState.IDLE):
                self.close()  # nothing was asked: just close the idle connection
            else:
                self._send_error(RemoteProtocolError("request head timed out", 408))
        if now - self.created > settings.timeout_connection_lifetime_s and not self.closing:
            # old enough: closed now if idle, else its current (or next) response is its last one and
            # says so (Connection: close), as if it had used up its requests per connection
            if self.exchange is None and self.idle:
                self.close()
            else:
                self.requests = max(self.requests, settings.limit_requests_per_connection)

    def drain(self) -> None:
        """Graceful shutdown: a keep-alive connection between requests closes now; a busy one after its
        response. A new connection, or one mid-head, may still complete its request within
        DRAIN_REQUEST_GRACE_S (then the head timeout closes it); the response carries Connection: close."""
        if self.exchange is not None:
            self.closing = True
        elif self.idle:
            self.close()
        else:
            self.deadline = min(self.deadline, self.ctx.now + DRAIN_REQUEST_GRACE_S)

    # --- helpers for the exchange ---
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def start_tunnel(self) -> bytes:
        """The backend switched protocols: relay bytes from now on; returns the client's bytes received so far."""
        self.tunnel = True
        self.deadline = 0.0
        return self.conn.start_tunnel()

    def pause_reading_for(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading_for(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
