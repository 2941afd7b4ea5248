"""`run_supervisor(settings)`: the supervisor process, one synchronous reconcile loop around one inbox.

Theory of operation (style.md sections 10 and 12):

1. *Ports.* A port of 0 is resolved first: a socket with SO_REUSEADDR|SO_REUSEPORT is bound to port
   0 and kept open, never listening, for the supervisor's lifetime. The port stays reserved (no one
   else can take it) while the arbiter's listening sockets (`listeners.py`) bind it too with
   SO_REUSEPORT; a socket that does not listen is never handed a connection. The resolved ports go
   into the Settings every worker receives, and one `fastingress: http on ADDR:PORT, admin on
   ADDR:PORT` line on stdout tells scripts and tests.
2. *Shared memory.* One `TableWriter` (control block + table segments) and one `StatsBlock` (a row
   per control-block slot, at `<prefix>-stats`), both removed on the way out. One `KeyStore`: the
   private directory of certificate files (with the self-signed fallback generated before any worker
   starts), passed to every worker as `--keys DIR`, written before each publish, reclaimed on the
   loop's tick once no live worker can need a file, and removed on the way out.
3. *Threads.* The source runs in its own thread and only enqueues what it emits (the Kubernetes
   source runs one more thread per watched kind); with the Kubernetes source, `ClusterDuties` runs
   the leader elector, the status writer and the event recorder on three more, fed by the loop after
   each publish through calls that never block; the admin server
   runs in its own daemon thread and reads only immutable snapshots. Signal handlers only enqueue
   (`SimpleQueue.put` is reentrant: safe in a handler that interrupts the loop inside `get`).
   Workers are fresh interpreters started by `subprocess` (never a fork after these threads exist).
4. *Loop.* The main thread waits on the inbox with a timeout bounded by the debounce deadline and the
   arbiter's next check (at most `TICK_S`), then dispatches: a signal -> `arbiter.handle_<name>`;
   a source batch -> `reconciler.apply`; then a due publish, then `arbiter.check` and segment
   reclamation. Workers are spawned only after the first publish, so they start on a full table.
5. *Exit.* When the arbiter reports an exit code (drained, quit, or halted on a boot-failure storm)
   the source is stopped, the admin server closed, the table and stats files unlinked and the key
   directory removed (nothing of ours is left in /dev/shm), and the code returned.
"""

from __future__ import annotations

import gc
import logging
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import msgspec

from fastingress.errors import ConfigError, ExitCode, SourceError
from fastingress.logs import setup_logging
from fastingress.model.problems import Problem
from fastingress.model.store import Change
from fastingress.settings import Settings, env_name
from fastingress.sources.base import Source
from fastingress.sources.kube import KubeSource
from fastingress.sources.manifests import ManifestsSource
from fastingress.supervisor.admin import AdminServer, AdminView
from fastingress.supervisor.arbiter import Arbiter
from fastingress.supervisor.cluster import ClusterDuties
from fastingress.supervisor.keystore import KeyStore, default_parent
from fastingress.supervisor.listeners import bind_reuseport
from fastingress.supervisor.metrics import KubeStats
from fastingress.supervisor.reconcile import Reconciler
from fastingress.table.shm import TableWriter
from fastingress.table.stats import StatsBlock

log = logging.getLogger("fastingress.supervisor.main")  # not "__main__" under `python -m`

TICK_S = 0.1  # the longest the loop sleeps: bounds reaping, heartbeat checks and readiness staleness
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
           signal.SIGCHLD)
SOURCE_JOIN_S = 2.0

Message = tuple[Any, ...]  # ("signal", signum) | ("changes", changes, problems) | ("failed", name, exc)


def reserve_port(address: str, port: int) -> tuple[socket.socket | None, int]:
    """(reserving socket, port): port 0 becomes a free port held by a bound, non-listening socket."""
    if port != 0:
        return None, port
    sock = bind_reuseport(address, 0)
    return sock, int(sock.getsockname()[1])


def _format_addr(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class SourceThread:
    """Runs one Source; its emit callback only enqueues."""

    def __init__(self, source: Source, inbox: queue.SimpleQueue[Message]) -> None:
        self.source = source
        self.stop = threading.Event()
        self._inbox = inbox
        self._thread = threading.Thread(target=self._run, name=f"source-{source.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _emit(self, changes: Sequence[Change], problems: Sequence[Problem]) -> None:
        self._inbox.put(("changes", self.source.name, list(changes), list(problems)))

    def _run(self) -> None:
        try:
            self.source.run(self._emit, self.stop)
        except Exception as exc:  # handed to the main loop, which decides (fatal before the first sync)
            self._inbox.put(("failed", self.source.name, exc))


def open_key_store(settings: Settings) -> KeyStore | None:
    """The certificate directory with the self-signed fallback in it; None (logged) when it cannot be made."""
    parent = settings.tls_keys_dir or default_parent()
    try:
        keys = KeyStore(parent)
    except OSError as exc:
        log.error("cannot create the certificate directory under %s: %s (%s)", parent, exc,
                  env_name("tls_keys_dir"), extra={"reason": "KeysDirUnusable"})
        return None
    try:
        keys.ensure_self_signed(warn=not settings.default_tls_secret)
        keys.ensure_ticket_keys()
    except OSError as exc:
        log.error("cannot write the self-signed certificate into %s: %s", keys.path, exc,
                  extra={"reason": "KeysDirUnusable"})
        keys.close()
        return None
    log.info("certificate files in %s", keys.path)
    return keys


def make_source(settings: Settings) -> Source:
    """The manifests directory when one is named, else the Kubernetes API (ConfigError when unreachable by config)."""
    if settings.manifests_dir:
        return ManifestsSource(settings.manifests_dir, poll_interval_s=settings.manifests_poll_s)
    source = KubeSource(settings)
    try:
        source.connect()
    except SourceError as exc:
        raise ConfigError([str(exc)]) from exc
    return source


class Supervisor:
    """The main loop: one inbox, one reconciler, one arbiter."""

    def __init__(self, settings: Settings, writer: TableWriter, stats: StatsBlock, source: Source,
                 keys: KeyStore | None = None, duties: ClusterDuties | None = None) -> None:
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.writer = writer
        self.keys = keys
        self.reconciler = Reconciler(settings, writer, keys=keys)
        self.arbiter = Arbiter(settings, writer, stats, keys.path if keys is not None else "")
        self.source = SourceThread(source, self.inbox)
        self.duties = duties  # Lease, Ingress status and Events: Kubernetes source only
        self.source_states: dict[str, str] = {source.name: "syncing"}  # replaced, never mutated
        self.view = AdminView(self.reconciler, self.arbiter, stats, self.source_view, self.kube_stats)

    def source_view(self) -> dict[str, str]:
        """Each source's state for /healthz: the main loop's view, refined by the source's own health
        (a synced Kubernetes source whose watches fail is degraded while the last table keeps serving)."""
        states = self.source_states
        health = getattr(self.source.source, "health", None)
        if health is None:
            return states
        name = self.source.source.name
        return {**states, name: "degraded" if states.get(name) == "ok" and health() == "degraded" else states[name]}

    def kube_stats(self) -> KubeStats | None:
        """For /metrics (admin thread): the reflectors' counters and the cluster writers'; None without kube."""
        source = self.source.source
        if not isinstance(source, KubeSource):
            return None
        duties = self.duties
        if duties is None:
            return KubeStats(source.counters())
        return KubeStats(source.counters(), duties.elector.is_leader, duties.status.stats(), duties.events.stats())

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.inbox.put(("signal", signum))  # only enqueue: no logging, no locks taken in a handler

    def run(self) -> int:
        self.source.start()
        if self.duties is not None:
            self.duties.start()
        told = self.reconciler.state  # the last state the cluster duties were told about
        frozen = False  # gc.freeze() done after the first publish
        next_check = time.monotonic()
        while self.arbiter.exit_code is None:
            now = time.monotonic()
            deadline = min(self.reconciler.deadline() or next_check, next_check, now + TICK_S)
            try:
                message: Message | None = self.inbox.get(timeout=max(0.0, deadline - now))
            except queue.Empty:
                message = None
            now = time.monotonic()
            if message is not None:
                self.dispatch(message, now)
            if self.reconciler.due(now) and self.reconciler.publish(now):
                if not frozen:
                    # After the first publish the heap is mostly long-lived (modules, the initial Store and
                    # table); frozen, full collections stop walking it: with 1,000 Ingresses they cost
                    # 70-80 ms every ~11th publish (docs/performance.md, propagation).
                    gc.freeze()
                    frozen = True
                self.arbiter.start(now)
            if self.duties is not None and self.reconciler.state is not told:
                told = self.reconciler.state
                self.duties.after_publish(told, self.reconciler.snapshot())
            if now >= next_check:
                if self.duties is not None:
                    self.duties.tick()
                self.arbiter.check(now)
                self.writer.reclaim()
                if self.keys is not None:
                    self.keys.reclaim(self.writer.oldest_acked()[0])
                next_check = now + TICK_S
        return self.arbiter.exit_code

    def dispatch(self, message: Message, now: float) -> None:
        if message[0] == "signal":
            name = signal.Signals(message[1]).name[3:].lower()  # SIGTTIN -> ttin
            getattr(self.arbiter, f"handle_{name}")(now)
        elif message[0] == "changes":
            _, name, changes, problems = message
            self.reconciler.apply(changes, problems)
            if self.source_states.get(name) != "ok":
                self.source_states = {**self.source_states, name: "ok"}
        elif message[0] == "failed":
            self.source_failed(message[1], message[2], now)

    def source_failed(self, name: str, exc: BaseException, now: float) -> None:
        self.source_states = {**self.source_states, name: "degraded"}
        if self.reconciler.synced:
            log.error("source %s stopped: %s; serving the last published table", name, exc,
                      extra={"reason": type(exc).__name__})
            return
        code = ExitCode.CONFIG if isinstance(exc, SourceError) else ExitCode.ERROR
        self.arbiter.halt(now, f"source {name} failed before its initial sync: {exc}", code, type(exc).__name__)


def run_supervisor(settings: Settings) -> int:
    """Run until drained or halted; the process exit code (see the module docstring)."""
    setup_logging(settings.log_format, settings.log_level)
    source = make_source(settings)
    http_sock, http_port = reserve_port(settings.bind_address, settings.http_port)
    https_sock, https_port = reserve_port(settings.bind_address, settings.https_port)
    settings = msgspec.structs.replace(settings, http_port=http_port, https_port=https_port)
    log.info("effective settings: %s", msgspec.json.encode(settings).decode())
    keys = open_key_store(settings)
    if keys is None:
        _close_sockets(http_sock, https_sock)
        return ExitCode.BOOT_FAILED
    try:
        writer = TableWriter()
        stats = StatsBlock(f"{writer.control_path[:-4]}-stats", rows=len(writer.ctl.slots), create=True)
    except BaseException:
        keys.close()
        _close_sockets(http_sock, https_sock)
        raise
    duties = (ClusterDuties(settings, source.connect(), source.index)
              if isinstance(source, KubeSource) and settings.update_status else None)
    sup = Supervisor(settings, writer, stats, source, keys, duties)
    previous = {sig: signal.signal(sig, sup.on_signal) for sig in SIGNALS}
    admin: AdminServer | None = None
    try:
        try:
            admin = AdminServer(settings.admin_address, settings.admin_port, sup.view)
        except OSError as exc:
            log.error("cannot listen for the admin server on %s: %s",
                      _format_addr(settings.admin_address, settings.admin_port), exc, extra={"reason": "BindFailed"})
            return ExitCode.BOOT_FAILED
        admin.start()
        print(f"fastingress: http on {_format_addr(settings.bind_address, http_port)}, "
              f"admin on {_format_addr(settings.admin_address, admin.port)}", flush=True)
        print(f"fastingress: https on {_format_addr(settings.bind_address, https_port)}", flush=True)
        return sup.run()
    finally:
        if duties is not None:
            duties.close()  # releases the Lease: another replica takes over status at once
        sup.source.join(SOURCE_JOIN_S)
        if admin is not None:
            admin.close()
        sup.arbiter.kill_all()  # nothing left after a normal exit; an exception must not orphan workers
        writer.close()
        stats.unlink()
        keys.close()  # after kill_all: no worker is left to load a file
        _close_sockets(http_sock, https_sock)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("supervisor stopped")


def _close_sockets(*socks: socket.socket | None) -> None:
    for sock in socks:
        if sock is not None:
            sock.close()


def main() -> None:
    try:
        settings = Settings.from_environ()
        code = run_supervisor(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"fastingress: {problem}", file=sys.stderr)
        code = ExitCode.CONFIG
    sys.exit(code)


if __name__ == "__main__":
    main()
