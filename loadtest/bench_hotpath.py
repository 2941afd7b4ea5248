"""The per-request Python cost of the proxy, without sockets: `python -m loadtest.bench_hotpath`.

Drives the real DownstreamProtocol / Exchange / UpstreamProtocol objects with in-memory transports
(a benchmark, not a test: the transports only collect what would be written) over an emitted table,
so the number is the Python work per keep-alive request: parse, route, forward, parse the response,
relay, pool. On a shared machine, run it under `valgrind --tool=callgrind` for instruction counts
that do not depend on load (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from fastingress.settings import Settings
from fastingress.supervisor.offline import build_from_manifests
from workers.proxy.context import WorkerContext
from workers.proxy.downstream import DownstreamProtocol
from workers.proxy.upstream import UpstreamProtocol
from workers.stats import WorkerStats

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

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None


def responses(unique_heads: bool) -> list[bytes]:
    """The backend's responses, cycled: one, or 4,096 whose heads all differ (an X-Response-Id each)."""
    if not unique_heads:
        return [RESPONSE]
    head, body = RESPONSE.split(b"\r\n\r\n", 1)
    return [head + b"\r\nX-Response-Id: %032x\r\n\r\n" % i + body for i in range(4096)]


def run(iterations: int, unique_heads: bool = False) -> float:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "m.yaml").write_text(MANIFESTS)
        build = build_from_manifests(tmp, Settings())
    loop = asyncio.new_event_loop()
    settings = Settings(access_log=False, limit_requests_per_connection=1 << 40)
    ctx = WorkerContext(settings, loop, build.view, WorkerStats(None, 0), None, 0)
    up = UpstreamProtocol(("127.0.0.1", 19000), ctx.pools, ctx.limits, ctx.plain_heads)
    up_transport = MemoryTransport()
    up.connection_made(up_transport)  # type: ignore[arg-type]
    ctx.pools.release(up, 0.0)
    down = DownstreamProtocol(ctx)
    down_transport = MemoryTransport()
    down.connection_made(down_transport)  # type: ignore[arg-type]
    backend = responses(unique_heads)
    count = len(backend)
    for i in range(1000):  # warm the caches (host matcher, route entries, endpoints)
        down.data_received(REQUEST)
        up.data_received(backend[i % count])
    best = float("inf")
    for _ in range(5):  # the minimum of 5 rounds: the least disturbed by other processes
        start = time.perf_counter()
        for i in range(iterations // 5):
            down.data_received(REQUEST)
            up.data_received(backend[i % count])
        best = min(best, time.perf_counter() - start)
    assert ctx.pools.idle_count() == 1 and not down_transport.closed, "the benchmark left the keep-alive path"
    loop.close()
    return best / (iterations // 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--iterations", type=int, default=100_000)
    parser.add_argument("--unique-heads", action="store_true",
                        help="every response head differs (the memo of plain response heads never hits)")
    args = parser.parse_args()
    per = run(args.iterations, args.unique_heads)
    print(f"{per * 1e6:.2f} us of Python per keep-alive request ({args.iterations} requests)")


if __name__ == "__main__":
    main()
