"""Worker process entry: map the table, serve the inherited listeners on uvloop, tick, drain, exit.

Started by the supervisor as a fresh interpreter (`python -m workers.main --control ... --slot ...
--stats ... --worker-id ... --settings JSON --listen-fds HTTP[,HTTPS]`). The listening sockets are
the supervisor's, bound with SO_REUSEPORT and inherited (fastingress/supervisor/listeners.py says
why); the worker's `listen()` puts them in service, and a drain closes only its own copies.
Signals: SIGTERM drains (stop accepting, finish in-flight requests up to drain_timeout_s), SIGQUIT
exits now, SIGINT is ignored (the supervisor decides). The worker exits by itself when its parent
changes. This module and fastingress/cli.py are the only places that exit the process.

Ticks (no timer per request): every FAST_TICK_S the table generation word is checked and the
heartbeat written; every SLOW_TICK_S the connection deadlines are swept, idle upstream connections
closed, the stats row written, and the parent checked.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence

import msgspec
import uvloop

from fastingress.errors import ExitCode, TableError
from fastingress.logs import setup_logging
from fastingress.settings import Settings
from fastingress.table import stats as st
from fastingress.table.shm import TableReader
from workers.accesslog import AccessLog
from workers.http1.headers import set_date
from workers.malloc import tune_malloc
from workers.proxy.context import WorkerContext
from workers.proxy.downstream import DownstreamProtocol
from workers.stats import WorkerStats
from workers.table_watch import TableWatch
from workers.tls import WorkerTLS

log = logging.getLogger("workers")
FAST_TICK_S = 0.02  # table propagation latency bound; a word read + heartbeat cost ~1 us per tick
SLOW_TICK_S = 1.0  # timeout resolution, as uvicorn's and nginx's coarse timers
LISTEN_BACKLOG = 2048  # per worker; the kernel caps it at net.core.somaxconn


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="workers.main")
    p.add_argument("--control", required=True)
    p.add_argument("--slot", type=int, required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--worker-id", type=int, required=True)
    p.add_argument("--settings", required=True, help="Settings as JSON")
    p.add_argument("--keys", default="", help="the supervisor's private certificate directory; empty: no HTTPS")
    p.add_argument("--listen-fds", required=True,
                   help="inherited bound sockets: HTTP, then HTTPS (needed with --keys)")
    return p.parse_args(argv)


def inherited_sockets(fds: str) -> list[socket.socket]:
    """The listening sockets passed by the supervisor, non-blocking; OSError when one is not a socket."""
    socks = []
    for fd in fds.split(","):
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        socks.append(sock)
    return socks


class Worker:
    """The worker's lifecycle around one WorkerContext."""

    def __init__(self, args: argparse.Namespace, settings: Settings, ctx: WorkerContext, watch: TableWatch) -> None:
        self.args = args
        self.settings = settings
        self.ctx = ctx
        self.watch = watch
        self.stopped = asyncio.Event()
        self.quitting = False  # SIGQUIT: exit now, no drain
        self.fast = True
        self.ticks = 0
        self.parent = os.getppid()

    def tick(self) -> None:
        ctx = self.ctx
        ctx.now = now = ctx.loop.time()
        self.watch.poll()
        self.watch.reader.heartbeat()
        self.ticks += 1
        if self.ticks * FAST_TICK_S >= SLOW_TICK_S:
            self.ticks = 0
            self.slow_tick(now)
        if not self.stopped.is_set():
            ctx.loop.call_later(FAST_TICK_S, self.tick)

    def slow_tick(self, now: float) -> None:
        ctx = self.ctx
        set_date(email.utils.formatdate(usegmt=True).encode())
        for conn in list(ctx.connections):
            conn.on_tick(now)
        ctx.pools.sweep(now)
        self.watch.reader.release_retired()  # unmap superseded tables off the swap path
        counters = ctx.stats.counters
        counters[st.CONNECTIONS_OPEN] = len(ctx.connections)
        counters[st.EJECTIONS] = ctx.pools.ejections
        if ctx.access_log is not None:
            counters[st.ACCESS_LOG_DROPPED] = ctx.access_log.dropped
        ctx.stats.flush()
        if os.getppid() != self.parent:
            log.warning("supervisor is gone; draining", extra={"worker": ctx.worker_id})
            self.drain()

    def drain(self) -> None:
        if not self.ctx.draining:
            self.ctx.draining = True
            self.stopped.set()

    def quit(self) -> None:
        for conn in list(self.ctx.connections):
            conn.abort()
        self.ctx.draining = True
        self.quitting = True
        self.stopped.set()


async def serve(args: argparse.Namespace, settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    try:
        reader = TableReader(args.control, args.slot)
        reader.heartbeat()
    except (TableError, OSError) as exc:
        log.error("cannot attach the route table: %s", exc, extra={"worker": args.worker_id})
        return ExitCode.TABLE_INCOMPATIBLE
    stats = WorkerStats(st.StatsBlock(args.stats), args.slot)
    access = AccessLog() if settings.access_log else None
    ctx = WorkerContext(settings, loop, None, stats, access, args.worker_id)
    watch = TableWatch(reader, ctx)
    try:
        socks = inherited_sockets(args.listen_fds)
    except (OSError, ValueError) as exc:
        log.error("cannot use the listening sockets %s: %s", args.listen_fds, exc, extra={"worker": args.worker_id})
        return ExitCode.BOOT_FAILED
    sock = socks[0]
    tls_sock: socket.socket | None = None
    tls: WorkerTLS | None = None
    if args.keys:
        try:
            if len(socks) < 2:
                raise OSError("no HTTPS listener among --listen-fds")
            tls = WorkerTLS(ctx, args.keys)
            tls_sock = socks[1]
        except (OSError, ssl.SSLError) as exc:
            log.error("cannot serve HTTPS on %s:%d: %s", settings.bind_address, settings.https_port, exc,
                      extra={"worker": args.worker_id})
            return ExitCode.BOOT_FAILED
    mapped = watch.poll(ack=False)  # the table before the first connection
    servers: list[asyncio.AbstractServer] = []
    try:
        servers.append(await loop.create_server(lambda: DownstreamProtocol(ctx), sock=sock, backlog=LISTEN_BACKLOG))
        if tls is not None and tls_sock is not None:
            factory = tls.protocol_factory(lambda: DownstreamProtocol(ctx, tls=True))
            servers.append(await loop.create_server(factory, sock=tls_sock, backlog=LISTEN_BACKLOG))
    except OSError as exc:
        log.error("cannot listen on %s: %s", settings.bind_address, exc, extra={"worker": args.worker_id})
        return ExitCode.BOOT_FAILED
    if mapped:
        reader.ack()  # the first ack says "ready" (/readyz, a rolling restart's next step): we listen now
    set_date(email.utils.formatdate(usegmt=True).encode())
    worker = Worker(args, settings, ctx, watch)
    loop.add_signal_handler(signal.SIGTERM, worker.drain)
    loop.add_signal_handler(signal.SIGQUIT, worker.quit)
    loop.call_soon(worker.tick)
    log.info("worker serving on %s: http %d, https %s", settings.bind_address, settings.http_port,
             settings.https_port if tls is not None else "off",
             extra={"worker": args.worker_id, "generation": reader.word >> 32})
    await worker.stopped.wait()
    await shutdown(servers, ctx, settings, drain=not worker.quitting)
    stats.flush()
    reader.release()
    if access is not None:
        access.close()
    return ExitCode.OK


async def shutdown(servers: list[asyncio.AbstractServer], ctx: WorkerContext, settings: Settings,
                   drain: bool = True) -> None:
    """Stop accepting; with `drain`, let busy connections finish their response, new ones send their
    request, and TLS handshakes under way complete (each up to its handshake timeout), all within the
    drain timeout; abort the rest."""
    for server in servers:
        server.close()
    # uvloop calls connection_made one loop iteration after the accept: a connection accepted just
    # before the close is not in ctx.connections yet, and the worker must not exit without it
    await asyncio.sleep(0)
    start = ctx.loop.time()
    deadline = start + settings.drain_timeout_s if drain else start
    # a handshake's waiter that never completes (uvloop drops a connection it could not set up) must
    # not hold the drain: none started before the close lasts longer than the handshake timeout
    handshakes_until = start + settings.tls_handshake_timeout_s
    while True:
        ctx.now = now = ctx.loop.time()
        for conn in list(ctx.connections):
            conn.drain()  # every round: a connection whose TLS handshake completed since joins the drain
            conn.on_tick(now)
        if not (ctx.connections or (ctx.handshakes and now < handshakes_until)) or now >= deadline:
            break
        await asyncio.sleep(0.05)
    for conn in list(ctx.connections):
        conn.abort()
    ctx.pools.close_all()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    settings = msgspec.json.decode(args.settings, type=Settings)
    setup_logging(settings.log_format, settings.log_level)
    if not tune_malloc():
        log.info("malloc thresholds left as they are (no glibc mallopt)", extra={"worker": args.worker_id})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(uvloop.run(serve(args, settings)))


if __name__ == "__main__":
    main()
