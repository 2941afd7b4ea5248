"""One request/response across both sides: routing, endpoint choice, retries, flow control, errors.

Theory of operation: the downstream Protocol creates an Exchange per request head and feeds it the
client's body events; the Exchange reads the table view once (`ctx.view`), answers locally (404,
308, 503) or picks an endpoint, takes an idle pooled connection or opens one, and relays both ways:
client body -> backend, backend events -> client, one `transport.write` per event batch. Flow
control is coupled: a side whose write buffer fills pauses reading on the other side.

States: ROUTING -> CONNECTING -> SENT -> RESPONDING -> DONE, plus DISCARD (answered locally, the
request body is still being read and dropped) and TUNNEL (WebSocket after the backend's 101).

Failures map to statuses in one place, FAILURES below. Retries: one, on another endpoint when
possible, for connect failures (nothing was sent) and for idempotent requests without a body that
got no response byte.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fastingress.table import stats as st
from fastingress.table.lookup import NO_ROUTE
from workers.http1.client_conn import ResponseHead
from workers.http1.headers import (
    CONTINUE_100,
    LAST_CHUNK,
    build_client_response,
    build_local_response,
    build_upstream_request,
    chunk,
    plain_request_middle,
    plain_upstream_request,
    response_framing,
)
from workers.http1.request_head import RequestHead
from workers.http1.server_conn import EV_BODY, EV_END, EV_HEAD, EV_UPGRADE
from workers.http1.simple import HSTS_NAME, closing_head
from workers.proxy.upstream import UpstreamProtocol

if TYPE_CHECKING:
    from workers.proxy.downstream import DownstreamProtocol
    from workers.proxy.pool import Endpoint

ROUTING, CONNECTING, SENT, RESPONDING, DONE, DISCARD, TUNNEL = range(7)
PENDING_HIGH_BYTES = 256 * 1024  # body buffered while connecting; above it the client is paused
_perf_counter = time.perf_counter
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})

# the one table of failures: reason -> (status, body, upstream-error metric or -1)
FAILURES: dict[str, tuple[int, bytes, int]] = {
    "no_route": (404, b"404 Not Found: no rule matches this host and path\n", -1),
    "no_backend": (503, b"503 Service Unavailable: the route has no Service backend\n", st.UP_NO_ENDPOINT),
    "service_error": (503, b"503 Service Unavailable: the backend Service or port does not exist\n",
                      st.UP_NO_ENDPOINT),
    "no_endpoint": (503, b"503 Service Unavailable: no ready endpoint\n", st.UP_NO_ENDPOINT),
    "connect_refused": (502, b"502 Bad Gateway: could not connect to the backend\n", st.UP_CONNECT_REFUSED),
    "connect_timeout": (504, b"504 Gateway Timeout: connecting to the backend timed out\n",
                        st.UP_CONNECT_TIMEOUT),
    "response_timeout": (504, b"504 Gateway Timeout: the backend did not answer in time\n",
                         st.UP_RESPONSE_TIMEOUT),
    "bad_response": (502, b"502 Bad Gateway: invalid response from the backend\n", st.UP_BAD_RESPONSE),
    "reset": (502, b"502 Bad Gateway: the backend closed the connection\n", st.UP_RESET),
}


class Exchange:
    """One request and its response; see the module docstring."""

    __slots__ = ("_task", "attempts", "body_sent", "bytes_out", "client_keep_alive", "ctx", "deadline", "down",
                 "early", "endpoint", "endpoints", "extra", "generation", "head", "mode", "pending", "pending_size",
                 "req_done", "request_bytes", "request_id", "resp_started", "route_ingress", "simple", "state",
                 "status", "t0", "tried", "up", "upgrade_tail", "upstream", "upstream_name")

    def __init__(self, down: DownstreamProtocol, head: RequestHead) -> None:
        self.down = down
        self.ctx = ctx = down.ctx
        self.head = head
        self.t0 = _perf_counter()
        self.state = ROUTING
        self.up: UpstreamProtocol | None = None
        self.endpoint: Endpoint | None = None
        self.tried: tuple[Endpoint, ...] = ()
        self.attempts = 0
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.req_done = False
        self.body_sent = False
        self.resp_started = False
        self.early = False
        self.mode = 0
        self.client_keep_alive = head.keep_alive
        self.status = 0
        self.bytes_out = 0
        self.deadline = 0.0
        self.upstream = -1
        self.upstream_name = ""
        self.route_ingress = ""
        # a plain head has no X-Request-ID (simple.py sends those down the full path)
        self.request_id = (ctx.request_id() if head.raw_fields
                           else head.forwarded.get(b"x-request-id") or ctx.request_id())
        self.upgrade_tail: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        self.endpoints: tuple[Endpoint, ...] = ()
        self.generation = 0
        self.request_bytes = b""
        self.simple = False  # a plain GET on the fast lane (simple.py); False again if its response is not plain
        self.extra = b""  # fields this proxy adds to the response head (HSTS)

    # --- routing ---
    def start(self) -> None:
        view = self.ctx.view  # hot path: the table is read once per request
        head = self.head
        if view is None:
            return self.respond_local(503, b"503 Service Unavailable: no route table yet\n")
        index = view.routes.match(head.host, head.path)
        if index == NO_ROUTE:
            return self.fail("no_route")
        target = view.targets.get(index) or view.target(index)
        route = target.route
        self.route_ingress = route.ingress
        if self.down.tls:
            if route.hsts:
                self.extra = self.ctx.hsts_field
        elif route.redirect_https:
            return self.redirect_https()
        entry = target.upstream
        if entry is None:
            return self.fail("no_backend")
        self.upstream = route.upstream
        self.upstream_name = entry.name
        if entry.error:
            return self.fail("service_error")
        self.endpoints = target.endpoints
        self.generation = target.generation
        if not self.endpoints:
            if not entry.external_name:
                return self.fail("no_endpoint")
            # an ExternalName Service: its DNS name, resolved when connecting (getaddrinfo off the loop)
            self.endpoints = ((entry.external_name, entry.port),)
        down = self.down
        fields = head.raw_fields
        if fields:  # hot path: a plain GET, the middle of its upstream head kept per connection
            middle = down.middle
            if fields is not down.middle_fields or head.host_header is not down.middle_host:
                middle = down.middle = plain_request_middle(fields, down.fwd_block, head.host_header)
                down.middle_fields = fields
                down.middle_host = head.host_header
            self.request_bytes = plain_upstream_request(head, middle, self.request_id)
        else:
            self.request_bytes = build_upstream_request(
                head, down.peer_bytes, b"https" if down.tls else b"http",
                self.ctx.https_port if down.tls else self.ctx.http_port, self.request_id, down.trusted, down.fwd_block)
        self.connect()

    def redirect_https(self) -> None:
        port = self.ctx.settings.redirect_https_port
        host = self.head.host + (b"" if port == 443 else b":%d" % port)
        location = b"Location: https://" + host + self.head.path + self.head.query + b"\r\n"
        self.respond_local(308, b"308 Permanent Redirect\n", location)

    # --- connecting ---
    def connect(self) -> None:
        ctx = self.ctx
        ep = ctx.pools.choose(self.upstream, self.generation, self.endpoints, ctx.now, self.tried)
        if ep is None:
            return self.fail("connect_refused")
        self.endpoint = ep
        self.tried += (ep,)
        conn = ctx.pools.acquire(ep)
        if conn is not None:
            return self.attach(conn)
        self.state = CONNECTING
        self.deadline = ctx.now + ctx.settings.timeout_upstream_connect_s
        self._task = ctx.loop.create_task(self._open(ep))

    async def _open(self, ep: Endpoint) -> None:
        ctx = self.ctx
        try:
            _, proto = await ctx.loop.create_connection(
                lambda: UpstreamProtocol(ep, ctx.pools, ctx.limits, ctx.plain_heads), ep[0], ep[1])
        except OSError:
            self._task = None
            if self.state == CONNECTING:
                self.connect_failed("connect_refused")
            return
        self._task = None
        ctx.pools.connect_succeeded(ep)
        if self.state != CONNECTING:
            ctx.pools.release(proto, ctx.now)  # the client went away meanwhile: keep the fresh connection
            return
        self.attach(proto)

    def connect_failed(self, reason: str) -> None:
        ctx = self.ctx
        if self.endpoint is not None:
            ctx.pools.connect_failed(self.endpoint, ctx.now)
        if self.attempts < 1 and len(self.tried) < len(self.endpoints):
            self.attempts += 1
            ctx.stats.add(st.RETRIES)
            return self.connect()
        self.fail(reason)

    def attach(self, up: UpstreamProtocol) -> None:
        ctx = self.ctx
        self.up = up
        up.exchange = self
        if self.head.raw_fields:
            self.simple = True  # the response is recognised on its first read (upstream_simple)
        else:
            up.conn.expect(self.head.method)
        if ctx.pools.least_request:  # requests in flight per endpoint matter only to least-request
            ctx.pools.state(up.endpoint).active += 1
        self.state = SENT
        self.deadline = ctx.now + ctx.settings.timeout_upstream_response_s
        if self.pending:
            data = self.request_bytes + b"".join(self.pending)
            self.body_sent = True
            self.pending = []
            if self.pending_size > PENDING_HIGH_BYTES:
                self.down.resume_reading_for(2)
            self.pending_size = 0
        else:
            data = self.request_bytes
        assert up.transport is not None
        up.transport.write(data)

    # --- client side events ---
    def client_body(self, data: bytes) -> None:
        if self.head.chunked:
            data = chunk(data)
        state = self.state
        if state in (SENT, RESPONDING):
            up = self.up
            assert up is not None and up.transport is not None
            up.transport.write(data)
            self.body_sent = True
        elif state in (ROUTING, CONNECTING):
            self.pending.append(data)
            before = self.pending_size
            self.pending_size += len(data)
            if before <= PENDING_HIGH_BYTES < self.pending_size:
                self.down.pause_reading_for(2)
        # DISCARD / DONE: the body is dropped

    def client_end(self) -> None:
        self.req_done = True
        if self.head.chunked:
            self.client_body_raw(LAST_CHUNK)
        if self.state == DISCARD:
            self.finish()

    def client_body_raw(self, data: bytes) -> None:
        state = self.state
        if state in (SENT, RESPONDING):
            up = self.up
            assert up is not None and up.transport is not None
            up.transport.write(data)
        elif state in (ROUTING, CONNECTING):
            self.pending.append(data)

    def client_upgrade(self, tail: bytes) -> None:
        self.upgrade_tail = tail
        self.req_done = True

    def client_aborted(self) -> None:
        """The client vanished or broke the protocol mid-request: never complete the upstream request."""
        if self._task is not None:
            self._task.cancel()
        up = self.up
        if up is not None:
            self.up = None
            up.exchange = None
            up.abort()  # hardening item 17: never send a terminating chunk, never reuse
        self.state = DONE
        self.log()

    # --- backend side events ---
    def upstream_data(self, data: bytes) -> None:
        up = self.up
        assert up is not None
        events, error = up.conn.feed(data)
        self.relay(events, error)

    def upstream_simple(self, data: bytes) -> None:
        """Backend bytes for a plain GET (hot path): a plain response is relayed with its head as received,
        counted by its Content-Length; anything else goes to the full path from its first byte.

        The backend's `Connection: keep-alive` (the only hop-by-hop field a plain head may have) is the
        field this proxy would send on a keep-alive client connection, so it is left in place: no copy
        of the response. When the client connection ends, that line is replaced by `Connection: close`.
        """
        up = self.up
        assert up is not None
        conn = up.conn
        if self.state == SENT:
            found = conn.feed_simple(data)
            if found is None:
                self.simple = False
                conn.expect(b"GET")
                return self.upstream_data(data)
            ctx = self.ctx
            keep = not ctx.draining and self.down.requests < ctx.settings.limit_requests_per_connection
            self.client_keep_alive = keep
            self.status = found[0]
            self.state = RESPONDING
            self.resp_started = True
            self.mode = 1
            remaining = conn.remaining
            if remaining < 0:
                data = data[: len(data) + remaining]  # surplus after the body: dropped, connection not reused
            head_end = found[1]
            if self.extra:
                size = len(data)
                data = ctx.hsts_heads.add(conn.head_key, data, head_end)
                head_end += len(data) - size
            if not keep:  # else the backend's `Connection: keep-alive`, if any, says what ours would: kept
                data = closing_head(data, head_end)
        else:
            n = conn.feed_simple_body(data)
            if n < len(data):
                data = data[:n]
            remaining = conn.remaining
        self.bytes_out += len(data)
        transport = self.down.transport  # DownstreamProtocol.write, inlined (hot path)
        if transport is not None and not transport.is_closing():
            transport.write(data)
        if remaining <= 0:
            return self.response_complete()
        self.deadline = self.ctx.now + self.ctx.settings.timeout_upstream_response_s

    def upstream_eof(self) -> None:
        up = self.up
        if up is None:
            return
        if self.simple and self.state == RESPONDING:
            return self.upstream_failed("bad_response")  # the backend closed inside a counted body
        if self.state == SENT and not up.conn.in_message:
            return self.upstream_lost(up, None)  # closed before any response byte: maybe retried
        events, error = up.conn.eof()
        self.relay(events, error)

    def relay(self, events: list[tuple[int, object]], error: Exception | None) -> None:
        """Backend events -> one write to the client (hot path)."""
        out: list[bytes] = []
        ended = False
        tail: bytes | None = None
        mode = self.mode
        for kind, payload in events:
            if kind == EV_BODY:
                if mode == 2:
                    out.append(chunk(payload))  # type: ignore[arg-type]
                elif mode:
                    out.append(payload)  # type: ignore[arg-type]
            elif kind == EV_HEAD:
                if not self.response_head(payload, out):  # type: ignore[arg-type]
                    error = error or ValueError("refused response")
                    break
                mode = self.mode
            elif kind == EV_END:
                ended = True
                if mode == 2:
                    out.append(LAST_CHUNK)
            elif kind == EV_UPGRADE:
                tail = payload  # type: ignore[assignment]
        if out:
            data = b"".join(out)
            self.bytes_out += len(data)
            self.down.write(data)
        if error is not None:
            if ended and self.up is not None:
                # surplus bytes after a complete response (hardening item 20): the response stands,
                # only that backend connection is poisoned
                self.up.conn.reusable = False
                return self.response_complete()
            return self.upstream_failed("bad_response")
        if tail is not None or (ended and self.state == TUNNEL):
            return self.start_tunnel(tail or b"")
        if ended:
            self.response_complete()
        else:
            self.deadline = self.ctx.now + self.ctx.settings.timeout_upstream_response_s

    def response_head(self, resp: ResponseHead, out: list[bytes]) -> bool:
        """Decide the client framing for a backend head; False when the head must be refused (502)."""
        status = resp.status
        head = self.head
        if status < 200:
            if status == 101:
                if not head.upgrade or resp.upgrade != b"websocket":
                    return False
                self.state = TUNNEL
                self.status = 101
                self.resp_started = True
                out.append(build_client_response(resp, 0, True))
            elif status == 100:
                if head.expect_continue:
                    out.append(CONTINUE_100)
            elif head.version == b"1.1":
                out.append(build_client_response(resp, 0, True))  # 103 Early Hints and friends
            return True
        mode, reusable = response_framing(resp, head.method, head.version)
        early = not self.req_done  # answered before the request body was all read
        self.early = early
        down = self.down
        keep = (reusable and resp.keep_alive and head.keep_alive and not self.ctx.draining and not early
                and down.requests < self.ctx.settings.limit_requests_per_connection)
        self.mode = mode
        self.client_keep_alive = keep
        self.status = status
        self.state = RESPONDING
        self.resp_started = True
        extra = self.extra
        if extra and any(name.lower() == HSTS_NAME for name, _ in resp.fields):
            extra = b""  # the backend's own policy wins
        out.append(build_client_response(resp, mode, keep, extra))
        return True

    def response_complete(self) -> None:
        up = self.up
        ctx = self.ctx
        if up is not None:
            self.up = None
            up.exchange = None
            if ctx.pools.least_request:
                ctx.pools.state(up.endpoint).active -= 1
            if up.conn.reusable and self.req_done and not self.early:
                ctx.pools.release(up, ctx.now)
            else:
                up.close()
        self.state = DONE  # finish(), inlined (hot path)
        self.log()
        self.down.exchange_done(self, self.client_keep_alive)

    def upstream_lost(self, up: UpstreamProtocol, exc: Exception | None) -> None:
        """The backend connection closed under us."""
        if self.up is not up or self.state == DONE:
            return
        self.up = None
        if self.ctx.pools.least_request:
            self.ctx.pools.state(up.endpoint).active -= 1
        if self.state == TUNNEL:
            self.down.close()
            self.state = DONE
            return self.log()
        if self.state == SENT and not up.conn.in_message and self._may_retry():
            up.exchange = None
            up.abort()
            self.attempts += 1
            self.ctx.stats.add(st.RETRIES)
            self.state = ROUTING
            return self.connect()
        up.exchange = None
        up.abort()
        self.upstream_failed("reset")

    def _may_retry(self) -> bool:
        """Idempotent, no body, nothing received: the request can safely go to another endpoint."""
        head = self.head
        return (self.attempts < 1 and head.method in IDEMPOTENT and not head.chunked
                and head.content_length <= 0 and not head.upgrade)

    def upstream_failed(self, reason: str) -> None:
        up = self.up
        if up is not None:
            self.up = None
            up.exchange = None
            if self.ctx.pools.least_request:
                self.ctx.pools.state(up.endpoint).active -= 1
            up.abort()
        if self.resp_started:
            self.ctx.stats.add(FAILURES[reason][2])
            self.client_keep_alive = False
            self.down.abort()  # the response is cut: never complete or pad it (hardening item 18)
            self.state = DONE
            return self.log()
        self.fail(reason)

    # --- timeouts (from the worker's sweep) ---
    def on_timeout(self) -> None:
        state = self.state
        if state == CONNECTING:
            if self._task is not None:
                self._task.cancel()
                self._task = None
            self.connect_failed("connect_timeout")
        elif state in (SENT, RESPONDING):
            self.upstream_failed("response_timeout")

    # --- tunnel ---
    def start_tunnel(self, upstream_tail: bytes) -> None:
        up = self.up
        if up is None or self.upgrade_tail is None:
            return self.upstream_failed("bad_response")
        self.state = TUNNEL
        up.tunnel = True
        client_bytes = self.down.start_tunnel()  # what the client sent after its upgrade request, so far
        if upstream_tail:
            self.down.write(upstream_tail)
        if client_bytes:
            assert up.transport is not None
            up.transport.write(client_bytes)
        self.deadline = 0.0

    def tunnel_from_client(self, data: bytes) -> None:
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.write(data)

    def tunnel_from_upstream(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.down.write(data)

    def tunnel_closed(self) -> None:
        up = self.up
        if up is not None:
            self.up = None
            up.exchange = None
            up.close()
        self.state = DONE
        self.log()

    # --- local answers and the end ---
    def fail(self, reason: str) -> None:
        status, body, metric = FAILURES[reason]
        if metric >= 0:
            self.ctx.stats.add(metric)
        self.respond_local(status, body)

    def respond_local(self, status: int, body: bytes, extra: bytes = b"") -> None:
        """Answer from the proxy; the rest of the request body is read and dropped."""
        head = self.head
        # a client waiting for 100-continue, or a body we cannot drain, ends the connection
        keep = (head.keep_alive and not head.expect_continue and not head.upgrade and not self.ctx.draining
                and self.down.requests < self.ctx.settings.limit_requests_per_connection)
        self.client_keep_alive = keep
        self.status = status
        self.resp_started = True
        data = build_local_response(status, body if head.method != b"HEAD" else b"", keep, extra + self.extra)
        self.bytes_out += len(data)
        self.down.write(data)
        if self.req_done or not keep:
            self.finish()
        else:
            self.state = DISCARD

    def finish(self) -> None:
        self.state = DONE
        self.log()
        self.down.exchange_done(self, self.client_keep_alive)

    def log(self) -> None:
        ctx = self.ctx
        latency = _perf_counter() - self.t0
        ctx.stats.request(self.status or 499, latency)
        log = ctx.access_log
        if log is not None:
            head = self.head
            log.write({
                "ts": time.time(), "worker": ctx.worker_id, "remote": self.down.peer, "method": head.method,
                "host": head.host, "path": head.path, "query": head.query, "status": self.status or 499,
                "bytes": self.bytes_out, "duration_ms": round(latency * 1000, 3), "upstream": self.upstream_name,
                "endpoint": f"{self.endpoint[0]}:{self.endpoint[1]}" if self.endpoint else "",
                "ingress": self.route_ingress, "request_id": self.request_id, "retries": self.attempts,
            })
