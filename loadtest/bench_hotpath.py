"""The per-request Python cost of the proxy, without sockets: `python -m loadtest.bench_hotpath`.

Drives the real DownstreamProtocol / Exchange / UpstreamProtocol objects with in-memory transports
(a benchmark, not a test: the transports only collect what would be written) over an emitted table,
so the number is the Python work per keep-alive request: parse, route, forward, parse the response,
relay, pool. On a shared machine, run it under `valgrind --tool=callgrind` for instruction counts
that do not depend on load (see docs/performance.md).

`--tls` puts uvloop's own SSLProtocol (as the HTTPS listener does) between the client and the
DownstreamProtocol: the requests arrive as TLS 1.3 records, encrypted by an in-memory client before
the clock starts, and the responses leave encrypted. `--app trivial` swaps the proxy for a protocol
that answers every request with the same bytes: TLS minus plain for the trivial app is the cost of
the TLS layer alone, and for the proxy the same plus whatever the two do to each other's caches.
Under callgrind, subtract a run with `--encrypt-only` (the client's share) from a `--tls` run.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvloop
import uvloop.loop

from fastingress.settings import Settings
from fastingress.supervisor.offline import build_from_manifests
from workers.proxy.context import WorkerContext
from workers.proxy.downstream import DownstreamProtocol
from workers.proxy.upstream import UpstreamProtocol
from workers.stats import WorkerStats
from workers.tls import server_context

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {name: be, annotations: {fastingress.io/endpoints: "127.0.0.1"}}
spec: {ports: [{port: 80, targetPort: 19000}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: be}
spec:
  ingressClassName: fastingress
  rules:
  - host: bench.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: be, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: be, port: {number: 80}}}}
"""
REQUEST = (b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: bench.example.com\r\nUser-Agent: wrk\r\n"
           b"Accept: */*\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 22:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + b"x" * 100)


class MemoryTransport:
    """Collects writes; enough of asyncio.Transport for the protocols."""

    def __init__(self, keep: bool = False) -> None:
        self.written = 0
        self.closed = False
        self.keep = keep  # keep what is written in `chunks` (the TLS handshake reads it back)
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.keep:
            self.chunks.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default


class TrivialApp(asyncio.Protocol):
    """Answers every read with the same response: the TLS layer's cost without the proxy's."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(RESPONSE)


class TLSClient:
    """A client SSLObject on memory BIOs, shaken hands with a server SSLProtocol over a MemoryTransport."""

    def __init__(self, server: asyncio.BufferedProtocol, wire: MemoryTransport, loop: asyncio.AbstractEventLoop,
                 host: str) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=host)
        self.server, self.wire = server, wire
        for _ in range(10):  # a TLS 1.3 handshake needs two flights from the client
            try:
                self.sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            self.feed(self.outgoing.read())
            loop.run_until_complete(asyncio.sleep(0))
            self.incoming.write(b"".join(wire.chunks))
            wire.chunks.clear()
        self.feed(self.outgoing.read())  # the client's Finished
        loop.run_until_complete(asyncio.sleep(0))

    def record(self, data: bytes) -> bytes:
        self.sslobj.write(data)
        return self.outgoing.read()

    def feed(self, data: bytes) -> None:
        """Hand bytes to the server protocol as its transport would (BufferedProtocol)."""
        server = self.server
        while data:
            buf = server.get_buffer(len(data))
            n = min(len(buf), len(data))
            buf[:n] = data[:n]
            server.buffer_updated(n)
            data = data[n:]


def responses(unique_heads: bool) -> list[bytes]:
    """The backend's responses, cycled: one, or 4,096 whose heads all differ (an X-Response-Id each)."""
    if not unique_heads:
        return [RESPONSE]
    head, body = RESPONSE.split(b"\r\n\r\n", 1)
    return [head + b"\r\nX-Response-Id: %032x\r\n\r\n" % i + body for i in range(4096)]


HOST = "bench.example.com"
WARMUP = 1000  # requests before the clock starts (host matcher, route entries, endpoints, TLS state)
ROUNDS = 5  # the minimum of these rounds: the least disturbed by other processes
# uvloop's own TLS protocol, as workers/tls.py uses it (public in uvloop.loop, untyped in its stubs)
SSLProtocol: Callable[..., asyncio.BufferedProtocol] = getattr(uvloop.loop, "SSLProtocol")  # noqa: B009


def run(iterations: int, unique_heads: bool = False, tls: bool = False, app: str = "proxy",
        encrypt_only: bool = False) -> float:
    """Seconds per request (the best round); 0.0 with `encrypt_only` (the client's records only)."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "m.yaml").write_text(MANIFESTS)
        build = build_from_manifests(tmp, Settings())
        if tls:
            from loadtest.tls import make_certificate
            cert, key = make_certificate(HOST)
            Path(tmp, "bench.pem").write_bytes(cert + key)
            sslctx = server_context(str(Path(tmp, "bench.pem")))
    loop = uvloop.new_event_loop() if tls else asyncio.new_event_loop()
    settings = Settings(access_log=False, limit_requests_per_connection=1 << 40)
    ctx = WorkerContext(settings, loop, build.view, WorkerStats(None, 0), None, 0)
    up = UpstreamProtocol(("127.0.0.1", 19000), ctx.pools, ctx.limits, ctx.plain_heads)
    up_transport = MemoryTransport()
    up.connection_made(up_transport)  # type: ignore[arg-type]
    ctx.pools.release(up, 0.0)
    down: asyncio.Protocol = DownstreamProtocol(ctx, tls=tls) if app == "proxy" else TrivialApp()
    wire = MemoryTransport(keep=tls)
    per_round = iterations // ROUNDS
    total = WARMUP + ROUNDS * per_round
    if tls:
        server = SSLProtocol(loop, down, sslctx, loop.create_future(), server_side=True, server_hostname=None,
                             ssl_handshake_timeout=10.0, ssl_shutdown_timeout=5.0)
        server.connection_made(wire)  # type: ignore[arg-type]
        client = TLSClient(server, wire, loop, HOST)
        wire.keep = False
        records = [client.record(REQUEST) for _ in range(total)]
        if encrypt_only:
            loop.close()
            return 0.0
        get_buffer, updated = server.get_buffer, server.buffer_updated

        def feed(record: bytes) -> None:
            n = len(record)
            get_buffer(n)[:n] = record
            updated(n)
    else:
        down.connection_made(wire)  # type: ignore[arg-type]
        records = [REQUEST] * total
        feed = down.data_received
    backend = responses(unique_heads)
    count = len(backend)
    respond = up.data_received
    best = float("inf")
    for r in range(-1, ROUNDS):  # round -1 warms up
        first = 0 if r < 0 else WARMUP + r * per_round
        last = WARMUP if r < 0 else first + per_round
        start = time.perf_counter()
        if app == "proxy":
            for i in range(first, last):
                feed(records[i])
                respond(backend[i % count])
        else:
            for i in range(first, last):
                feed(records[i])
        if r >= 0:
            best = min(best, time.perf_counter() - start)
    assert wire.written > 0 and not wire.closed, "the benchmark's client connection was closed"
    assert app != "proxy" or ctx.pools.idle_count() == 1, "the benchmark left the keep-alive path"
    loop.close()
    return best / per_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--iterations", type=int, default=100_000)
    parser.add_argument("--unique-heads", action="store_true",
                        help="every response head differs (the memo of plain response heads never hits)")
    parser.add_argument("--tls", action="store_true", help="requests and responses through uvloop's SSLProtocol")
    parser.add_argument("--app", choices=("proxy", "trivial"), default="proxy",
                        help="trivial: a protocol answering each read with the same bytes, instead of the proxy")
    parser.add_argument("--encrypt-only", action="store_true",
                        help="with --tls: only make the client's records (callgrind: subtract this run)")
    args = parser.parse_args()
    per = run(args.iterations, args.unique_heads, args.tls, args.app, args.encrypt_only)
    if args.encrypt_only:
        print(f"encrypted {args.iterations} requests")
        return
    what = f"{'TLS ' if args.tls else ''}keep-alive request ({args.app})"
    print(f"{per * 1e6:.2f} us per {what}, {args.iterations} requests")


if __name__ == "__main__":
    main()
