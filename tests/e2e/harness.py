"""Helpers for the end-to-end tests (the fixtures are in conftest.py): clients, waits, the traffic loop,
backends, the proxy factory and object builders.

- `http_get` / `https_get` / `served_cert`: one request (or handshake) on a fresh connection, parsed by
  h11; `HttpConn` keeps a connection for several requests.
- `wait_served(what, probe)`: poll until a change is served; returns its latency and records it in
  `LATENCIES` (conftest.py lists them in the terminal summary, "e2e latencies").
- `TrafficLoop`: requests to one route, continuously, on a keep-alive connection and on fresh ones;
  every failure kept with its cause.
- `Backends`: `RecordingBackend`s (answer "<name> GET /path"), also several on one port over
  127.0.0.1, 127.0.0.2, ...; `ProxyFactory`: `fastingress serve` on a kubeconfig, stopped by PID,
  workers included.

Tests import this module as `tests.e2e.harness` (one copy, so `LATENCIES` is shared with conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import h11

from tests.support import kubeobjects as k
from tests.support.apiserver import ApiServer
from tests.support.backends import RecordingBackend
from tests.support.proxy import ServedProxy

DEADLINE_S = 5.0  # a change must be served within this (the smoke run measured ~70 ms)
IO_TIMEOUT_S = 5.0  # per client socket operation
POLL_S = 0.01  # between probes while a change is not served yet
# "Served" is an unbroken streak of at least CONFIRM answers over at least CONFIRM_S, on fresh connections
# (spread over both workers by SO_REUSEPORT). A worker swaps tables within FAST_TICK_S (20 ms,
# workers/main.py) of a publish, so once one worker serves a change the other does 20 ms later: a
# 100 ms streak means both do, and the next step of a test never meets a lagging worker.
CONFIRM = 4
CONFIRM_S = 0.1
TRAFFIC_PAUSE_S = 0.005  # between two requests of one traffic thread: continuous, yet leaves CPU to the rest
REAP_S = 5.0  # how long the workers of a stopped or killed supervisor get to exit before SIGKILL

LATENCIES: list[tuple[str, str, float]] = []  # (test, what, seconds) of every wait_served
TRAFFIC: list[str] = []  # one line per traffic loop checked


# --- HTTP and HTTPS clients -----------------------------------------------------------------------------
class Reply(NamedTuple):
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    closing: bool  # the connection cannot carry another request

    def describe(self) -> str:
        return f"{self.status} {self.body[:120]!r}"


class HttpConn:
    """One client connection (plain, or an SSL socket passed in); h11 parses the answers."""

    def __init__(self, port: int, *, sock: socket.socket | None = None, timeout_s: float = IO_TIMEOUT_S) -> None:
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.h11 = h11.Connection(h11.CLIENT)

    def request(self, host: str, path: str, *, close: bool = False) -> Reply:
        """GET `path` from `host`; raises ConnectionError when the answer does not arrive complete."""
        conn = self.h11
        headers = [("Host", host)] + ([("Connection", "close")] if close else [])
        self.sock.sendall(conn.send(h11.Request(method="GET", target=path, headers=headers))
                          + conn.send(h11.EndOfMessage()))
        status, head, body = 0, {}, []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionError(f"unparsable answer: {exc}") from exc
            if event is h11.NEED_DATA:
                conn.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status, head = event.status_code, {n.lower(): v for n, v in event.headers}
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before a complete response")
        closing = h11.MUST_CLOSE in (conn.our_state, conn.their_state)
        if not closing:
            conn.start_next_cycle()
        return Reply(status, head, b"".join(body), closing)

    def close(self) -> None:
        self.sock.close()


def http_get(port: int, host: str, path: str = "/") -> Reply:
    """One request on a fresh connection."""
    conn = HttpConn(port)
    try:
        return conn.request(host, path, close=True)
    finally:
        conn.close()


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we compare the presented certificate's bytes instead
    return ctx


def https_get(port: int, sni: str, host: str, path: str = "/") -> tuple[Reply, bytes]:
    """One HTTPS request on a fresh connection with SNI `sni`: the answer and the certificate (DER)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as raw, \
            _tls_context().wrap_socket(raw, server_hostname=sni) as tls:
        cert = tls.getpeercert(binary_form=True) or b""
        return HttpConn(port, sock=tls).request(host, path, close=True), cert


def served_cert(port: int, sni: str) -> bytes:
    """The certificate (DER) presented to a handshake with SNI `sni`."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as raw, \
            _tls_context().wrap_socket(raw, server_hostname=sni) as tls:
        return tls.getpeercert(binary_form=True) or b""


def der(cert_pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_pem.decode())


# --- waiting for a change to be served -----------------------------------------------------------------
Probe = Callable[[], tuple[bool, str]]  # (holds?, what was seen)
CLIENT_ERRORS = (OSError, ssl.SSLError, ConnectionError, h11.ProtocolError)


def answered_by(port: int, host: str, backend: str, path: str = "/") -> Probe:
    """Holds when `host` + `path` answers 200 from `backend`."""
    def probe() -> tuple[bool, str]:
        reply = http_get(port, host, path)
        return reply.status == 200 and reply.body.startswith(f"{backend} GET ".encode()), reply.describe()
    return probe


def answers_status(port: int, host: str, status: int, path: str = "/") -> Probe:
    def probe() -> tuple[bool, str]:
        reply = http_get(port, host, path)
        return reply.status == status, reply.describe()
    return probe


def wait_served(what: str, probe: Probe, *, timeout_s: float = DEADLINE_S, confirm: int = CONFIRM,
                confirm_s: float = CONFIRM_S) -> float:
    """Poll `probe` until it holds `confirm` times in a row over `confirm_s` at least; the latency runs
    from this call (made right after the API write) to the first of those answers. AssertionError at
    the deadline, with the time waited and the last answer seen."""
    start = time.monotonic()
    first_ok: float | None = None
    streak = 0
    while True:
        try:
            ok, seen = probe()
        except CLIENT_ERRORS as exc:
            ok, seen = False, f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if ok:
            first_ok = now if first_ok is None else first_ok
            streak += 1
            if streak >= confirm and now - first_ok >= confirm_s:
                return record_latency(what, first_ok - start)
            continue
        first_ok, streak = None, 0
        waited = now - start
        assert waited < timeout_s, f"{what}: not served within {timeout_s} s (waited {waited:.2f} s); last: {seen}"
        time.sleep(POLL_S)


def record_latency(what: str, seconds: float) -> float:
    """Keep a latency for the terminal summary (conftest.py); returns it."""
    LATENCIES.append((os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0], what, seconds))
    return seconds


def holds_for(seconds: float, predicate: Callable[[], Any], message: Callable[[], str]) -> None:
    """Assert that `predicate` stays true for `seconds` (a negative can only be watched for a while)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert predicate(), message()
        time.sleep(POLL_S)


def timed_wait(predicate: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S) -> float:
    """Poll `predicate` until truthy; returns the time it took (tests/support/wait.py `wait_until` returns
    the value instead). AssertionError at the deadline, with the time waited."""
    start = time.monotonic()
    while not predicate():
        waited = time.monotonic() - start
        assert waited < timeout_s, f"{what}: not within {timeout_s} s (waited {waited:.2f} s)"
        time.sleep(POLL_S)
    return time.monotonic() - start


# --- the traffic loop -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    at_s: float  # since the loop started
    mode: str  # "keep-alive" or "fresh"
    cause: str

    def __str__(self) -> str:
        return f"{self.at_s:7.3f} s {self.mode}: {self.cause}"


class TrafficLoop:
    """Requests to one route, continuously, until stopped: one thread on a keep-alive connection (a new
    one only when the proxy announces a close), one opening a fresh connection per request. An answer
    other than 200 from `backend`, or any client error, is a failure, kept with its cause."""

    MODES = ("keep-alive", "fresh")

    def __init__(self, port: int, host: str, backend: str, path: str = "/traffic") -> None:
        self.port, self.host, self.path = port, host, path
        self.expected = f"{backend} GET {path}".encode()
        self.failures: list[Failure] = []
        self.requests: Counter[str] = Counter()
        self.connections: Counter[str] = Counter()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._run, args=(mode,), name=f"traffic-{mode}", daemon=True)
                         for mode in self.MODES]
        for thread in self._threads:
            thread.start()

    def _run(self, mode: str) -> None:
        conn: HttpConn | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = HttpConn(self.port)
                    self.connections[mode] += 1
                reply = conn.request(self.host, self.path, close=mode == "fresh")
            except CLIENT_ERRORS as exc:
                self._fail(mode, f"request {self.requests[mode] + 1}: {type(exc).__name__}: {exc}")
                reply = None
            self.requests[mode] += 1
            if reply is not None and not (reply.status == 200 and reply.body.startswith(self.expected)):
                self._fail(mode, f"request {self.requests[mode]}: {reply.describe()}, not 200 {self.expected!r}")
            if conn is not None and (reply is None or reply.closing):
                conn.close()
                conn = None
            self._stop.wait(TRAFFIC_PAUSE_S)
        if conn is not None:
            conn.close()

    def _fail(self, mode: str, cause: str) -> None:
        self.failures.append(Failure(time.monotonic() - self._started, mode, cause))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(IO_TIMEOUT_S + 1)

    def summary(self) -> str:
        return (f"{sum(self.requests.values())} requests ({dict(self.requests)}) on "
                f"{dict(self.connections)} connections in {time.monotonic() - self._started:.1f} s")

    def assert_no_failures(self) -> None:
        """Stop, then: both threads did requests, and not one failed (every failure listed otherwise)."""
        self.stop()
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        TRAFFIC.append(f"{test}: {len(self.failures)} failed of {self.summary()}")
        assert all(self.requests[mode] > 0 for mode in self.MODES), self.summary()
        assert not self.failures, (f"{len(self.failures)} failed requests of {self.summary()}:\n"
                                   + "\n".join(map(str, self.failures[:50])))


# --- backends -------------------------------------------------------------------------------------------
@dataclass
class Backends:
    """Makes backends for a module and closes them all at its end."""

    def __init__(self) -> None:
        self.started: list[RecordingBackend] = []

    def __call__(self, name: str, *, address: str = "127.0.0.1", port: int = 0) -> RecordingBackend:
        backend = RecordingBackend(name, address=address, bind_port=port)
        self.started.append(backend)
        return backend

    def same_port(self, names: Sequence[str]) -> list[RecordingBackend]:
        """One backend per name on 127.0.0.1, 127.0.0.2, ... all on one port (retried if it is taken)."""
        for _ in range(20):
            first = self(names[0])
            try:
                rest = [self(name, address=f"127.0.0.{i}", port=first.port) for i, name in enumerate(names[1:], 2)]
            except OSError:  # the port is taken on another loopback address: try another one
                continue
            return [first, *rest]
        raise RuntimeError("no port free on every loopback address")

    def close(self) -> None:
        for backend in self.started:
            backend.close()


# --- proxies --------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    return out


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"workers.main" in f.read()
    except OSError:
        return False


class ProxyFactory:
    """Starts `fastingress serve` on the kubeconfig (Kubernetes source, loopback endpoints allowed) and
    stops every supervisor it started, and every worker they started, by PID."""

    def __init__(self, kubeconfig: Path) -> None:
        self.base_env = {"KUBECONFIG": str(kubeconfig), "FASTINGRESS_ALLOW_LOOPBACK_ENDPOINTS": "true"}
        self.started: list[ServedProxy] = []
        self.workers: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, *, env: Mapping[str, str] | None = None, workers: int = 2) -> ServedProxy:
        proxy = ServedProxy(None, env={**self.base_env, **(env or {})}, workers=workers)
        with self._lock:
            self.started.append(proxy)
        self._note_workers(proxy)
        return proxy

    def start_many(self, envs: Sequence[Mapping[str, str]]) -> list[ServedProxy]:
        """Several proxies started at the same time (each ready when this returns)."""
        if not envs:
            return []
        with ThreadPoolExecutor(len(envs)) as pool:
            return list(pool.map(lambda env: self(env=env), envs))

    def _note_workers(self, proxy: ServedProxy) -> None:
        self.workers.update(pid for pid in _children(proxy.proc.pid) if _is_worker(pid))

    def kill(self, proxy: ServedProxy) -> None:
        """SIGKILL the supervisor (its workers notice and exit by themselves; reaped at the end anyway)."""
        self._note_workers(proxy)
        proxy.proc.kill()
        proxy.proc.wait(IO_TIMEOUT_S)

    def stop(self, proxy: ServedProxy, sig: int = signal.SIGTERM) -> int:
        self._note_workers(proxy)
        return proxy.stop(sig)

    def close(self) -> None:
        for proxy in self.started:
            self.stop(proxy)
        deadline = time.monotonic() + REAP_S
        while any(_is_worker(pid) for pid in self.workers) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        for pid in self.workers:
            if _is_worker(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# --- objects ----------------------------------------------------------------------------------------------
def endpoint_slice(name: str, service: str, endpoints: Sequence[tuple[str, bool]],
                   ports: Mapping[str, int]) -> dict[str, Any]:
    """An EndpointSlice of `service`: (address, ready) per endpoint, and port name -> port."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"} for port_name, port in ports.items()],
            "endpoints": [{"addresses": [address], "conditions": {"ready": ready}} for address, ready in endpoints]}


def expose(api: ApiServer, name: str, host: str, backend: RecordingBackend, **ingress: Any) -> None:
    """Service `name` (port 80 "http") with one ready endpoint, `backend`, and Ingress `name` for `host`."""
    api.create(k.service(name))
    api.create(endpoint_slice(f"{name}-1", name, [("127.0.0.1", True)], {"http": backend.port}))
    api.create(k.ingress(name, host, name, **ingress))
