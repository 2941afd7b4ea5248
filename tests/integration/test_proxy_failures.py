"""Failure handling end to end: dead endpoints, no endpoints, timeouts (upstream, slowloris, keep-alive),
a worker killed under load, table swaps under load, and a graceful drain on SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    RawClient,
    get,
    ingress,
    listening_inodes,
    metric_values,
    service,
    start_proxy,
    wait_until,
    worker_pids,
    write_manifests,
)
from tests.support.backends import Received, RecordingBackend, ok_response
from tests.support.proxy import ServedProxy, raw_exchange

pytestmark = pytest.mark.integration

UPSTREAM_TIMEOUT_S = 1.0
HEADER_TIMEOUT_S = 1.0
KEEPALIVE_IDLE_S = 1.0


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slow(req: Received) -> bytes | None:
    if req.target.startswith(b"/slow"):
        time.sleep(3)
    return ok_response("slowb")(req)


class Env:
    def __init__(self, proxy: ServedProxy, backends: dict[str, RecordingBackend]) -> None:
        self.proxy = proxy
        self.port = proxy.http_port
        self.backends = backends


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    half = RecordingBackend("half")  # listens on 127.0.0.1 only: 127.0.0.2 on its port refuses
    slow = RecordingBackend("slowb", respond=_slow)
    plain = RecordingBackend("plain")
    directory: Path = tmp_path_factory.mktemp("failures")
    write_manifests(directory / "site.yaml", [
        service("half", half.port, addresses="127.0.0.2 127.0.0.1"),
        service("down", _closed_port(), addresses="127.0.0.1 127.0.0.2"),
        service("empty", 8080, addresses=""),
        service("slowb", slow.port),
        service("plain", plain.port),
        ingress("site", [("half.test", [("/", "Prefix", "half")]), ("down.test", [("/", "Prefix", "down")]),
                         ("empty.test", [("/", "Prefix", "empty")]), ("missing.test", [("/", "Prefix", "nosvc")]),
                         ("slow.test", [("/", "Prefix", "slowb")]), ("plain.test", [("/", "Prefix", "plain")])]),
    ])
    proxy = start_proxy(directory, workers=2, env={
        "FASTINGRESS_TIMEOUT_UPSTREAM_RESPONSE_S": str(UPSTREAM_TIMEOUT_S),
        "FASTINGRESS_TIMEOUT_HEADER_READ_S": str(HEADER_TIMEOUT_S),
        "FASTINGRESS_TIMEOUT_KEEPALIVE_IDLE_S": str(KEEPALIVE_IDLE_S),
    })
    try:
        yield Env(proxy, {"half": half, "slow": slow, "plain": plain})
    finally:
        proxy.stop()
        for b in (half, slow, plain):
            b.close()


# --- endpoints ---------------------------------------------------------------------------------------
def test_dead_endpoint_is_retried_on_the_other(env: Env) -> None:
    statuses = [get(env.port, f"/r{i}", host="half.test").status for i in range(30)]
    assert statuses == [200] * 30
    assert len([r for r in env.backends["half"].requests if r.target.startswith(b"/r")]) == 30


def test_all_endpoints_refuse_502_quickly(env: Env) -> None:
    t0 = time.monotonic()
    r = get(env.port, "/", host="down.test")
    assert r.status == 502, r
    assert time.monotonic() - t0 < 1.0


def test_service_without_endpoints_503(env: Env) -> None:
    assert get(env.port, "/", host="empty.test").status == 503


def test_missing_service_503(env: Env) -> None:
    assert get(env.port, "/", host="missing.test").status == 503


def test_no_route_404(env: Env) -> None:
    assert get(env.port, "/", host="nothing.test").status == 404


# --- timeouts ----------------------------------------------------------------------------------------
def test_slow_backend_504(env: Env) -> None:
    t0 = time.monotonic()
    r = get(env.port, "/slow", host="slow.test", timeout_s=10)
    elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert UPSTREAM_TIMEOUT_S * 0.9 <= elapsed <= UPSTREAM_TIMEOUT_S + 1.5, elapsed


def test_slowloris_gets_408_and_close(env: Env) -> None:
    head = b"GET / HTTP/1.1\r\nHost: plain.test\r\nX-Slow: " + b"s" * 200
    t0 = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as sock:
        sock.settimeout(0.2)  # the pace of the slow client: one byte per 0.2 s unless the proxy answers
        closed = False
        for byte in head:
            try:
                sock.sendall(bytes((byte,)))
            except OSError:
                break
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
        if not closed:
            sock.settimeout(max(0.01, t0 + 3 - time.monotonic()))
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except (TimeoutError, ConnectionResetError):
                pass
    elapsed = time.monotonic() - t0
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert elapsed <= HEADER_TIMEOUT_S + 1.5, elapsed


def test_idle_keepalive_closed(env: Env) -> None:
    with RawClient(env.port) as c:
        c.send(b"GET /ka HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        assert c.read().status == 200
        t0 = time.monotonic()
        rest = c.wait_closed(KEEPALIVE_IDLE_S + 3)
        elapsed = time.monotonic() - t0
    assert rest == b"", rest
    assert KEEPALIVE_IDLE_S * 0.9 <= elapsed <= KEEPALIVE_IDLE_S + 1.5, elapsed


# --- workers and tables under load -------------------------------------------------------------------
@contextlib.contextmanager
def one_route(tmp_path: Path, proxy_factory: Callable[..., ServedProxy], name: str, *,
              respond: Callable[[Received], bytes | None] | None = None,
              **proxy_kw: Any) -> Iterator[tuple[RecordingBackend, ServedProxy]]:
    """A RecordingBackend `name` as the only route (`name`.test, Prefix /) of a proxy; closed afterwards."""
    rec = RecordingBackend(name, respond=respond)
    try:
        write_manifests(tmp_path / "m.yaml", [service(name, rec.port),
                                              ingress(name, [(f"{name}.test", [("/", "Prefix", name)])])])
        yield rec, proxy_factory(tmp_path, **proxy_kw)
    finally:
        rec.close()


class Load:
    """A thread doing GETs in a loop, each on a fresh connection; counts outcomes with timestamps."""

    def __init__(self, port: int, host: str, path: str = "/load") -> None:
        self.port, self.host, self.path = port, host, path
        self.ok = 0
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = get(self.port, self.path, host=self.host, timeout_s=5)
                if r.status == 200:
                    self.ok += 1
                else:
                    self.failures.append((time.monotonic(), f"status {r.status}: {r.body[:100]!r}"))
            except (OSError, ConnectionError) as exc:
                self.failures.append((time.monotonic(), repr(exc)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_killed_worker_is_replaced_and_the_other_keeps_serving(
        tmp_path: Path, proxy_factory: Callable[..., ServedProxy]) -> None:
    with one_route(tmp_path, proxy_factory, "kill", workers=2) as (_, proxy):
        old = wait_until(lambda: (lambda p: p if len(p) == 2 else None)(worker_pids(proxy)), what="2 workers")
        with Load(proxy.http_port, "kill.test") as load:
            wait_until(lambda: load.ok >= 50, what="load running")
            victim = old[0]
            os.kill(victim, signal.SIGKILL)
            killed_at_ok = load.ok
            new = wait_until(lambda: [p for p in worker_pids(proxy) if p not in old], timeout_s=15,
                             what="a replacement worker")
            wait_until(lambda: len(worker_pids(proxy)) == 2, what="two workers again")
            served_meanwhile = load.ok - killed_at_ok
            after = load.ok
            wait_until(lambda: load.ok >= after + 50, what="load continuing after the replacement")
        assert new and victim not in worker_pids(proxy)
        assert served_meanwhile > 0 or load.ok > after, "the surviving worker did not serve"
        assert len(load.failures) <= 2, f"more failures than requests in flight: {load.failures}"


def test_table_swaps_under_load_fail_nothing(tmp_path: Path, proxy_factory: Callable[..., ServedProxy]) -> None:
    rec = RecordingBackend("stable")
    try:
        write_manifests(tmp_path / "stable.yaml", [service("stable", rec.port),
                                                   ingress("stable", [("stable.test", [("/", "Prefix", "stable")])])])
        churn_a = [ingress("churn", [("churn-a.test", [("/", "Prefix", "stable")])])]
        churn_b = [ingress("churn", [("churn-a.test", [("/", "Prefix", "stable")]),
                                     ("churn-b.test", [("/x", "Exact", "stable")])])]
        write_manifests(tmp_path / "churn.yaml", churn_a)
        # publish as fast as the manifests change: a new table every 10-20 ms
        proxy = proxy_factory(tmp_path, workers=2, env={"FASTINGRESS_MANIFESTS_POLL_S": "0.005",
                                                        "FASTINGRESS_RECONCILE_HOLDOFF_S": "0.001",
                                                        "FASTINGRESS_RECONCILE_MAX_DELAY_S": "0.005"})
        start_gen = max(metric_values(proxy, "table_routes_generation"), default=0)
        rewrites = 0
        with Load(proxy.http_port, "stable.test") as load:
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                write_manifests(tmp_path / "churn.yaml", churn_b if rewrites % 2 == 0 else churn_a)
                rewrites += 1
                time.sleep(0.01 + 0.01 * (rewrites % 2))  # the churn pace: 10-20 ms between rewrites
            requests_during = load.ok
        end_gen = max(metric_values(proxy, "table_routes_generation"), default=0)
        assert load.failures == [], load.failures[:5]
        assert requests_during > 100
        swaps = end_gen - start_gen
        assert swaps >= rewrites // 3, f"generation went {start_gen} -> {end_gen} over {rewrites} rewrites"
    finally:
        rec.close()


def test_sigterm_drains_in_flight_request(tmp_path: Path, proxy_factory: Callable[..., ServedProxy]) -> None:
    arrived = threading.Event()

    def respond(req: Received) -> bytes | None:
        arrived.set()
        time.sleep(2)  # the backend's delay (the request stays in flight while the proxy drains)
        return ok_response("drain")(req)

    with one_route(tmp_path, proxy_factory, "drain", workers=2, respond=respond) as (_, proxy):
        result: list[object] = []

        def client() -> None:
            try:
                result.append(get(proxy.http_port, "/slow", host="drain.test", timeout_s=10))
            except Exception as exc:
                result.append(exc)

        thread = threading.Thread(target=client)
        thread.start()
        assert arrived.wait(5), "the slow request never reached the backend"
        proxy.proc.send_signal(signal.SIGTERM)
        thread.join(15)
        code = proxy.proc.wait(15)
        assert result and getattr(result[0], "status", None) == 200, result
        assert code == 0


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_answers_connections_accepted_before_it(tmp_path: Path,
                                                        proxy_factory: Callable[..., ServedProxy]) -> None:
    """A client that connected just before the drain has its request on the way: it is answered (with
    Connection: close), over HTTP and over a TLS handshake not yet begun; a silent one is closed soon."""
    from tests.integration.test_tls import client_context
    with one_route(tmp_path, proxy_factory, "early", workers=1) as (rec, proxy):
        plain = RawClient(proxy.http_port)
        silent = RawClient(proxy.http_port)
        tls_raw = socket.create_connection(("127.0.0.1", proxy.ports["https"]), timeout=10)
        # the two plain ones (a TLS connection counts once its handshake is done)
        wait_until(lambda: metric_values(proxy, "fastingress_connections_open") == [2.0],
                   what="the connections accepted")
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: _refuses(proxy.http_port), timeout_s=5, what="the listener closed")
        plain.send(b"GET /plain HTTP/1.1\r\nHost: early.test\r\n\r\n")
        got = plain.read()
        assert got.status == 200 and got.header(b"connection") == b"close"
        assert silent.wait_closed(timeout_s=5) == b""
        # the last one: no connection is left, but the worker waits for the handshake it accepted
        time.sleep(0.5)
        with client_context().wrap_socket(tls_raw, server_hostname="early.test") as tls:
            tls.sendall(b"GET /tls HTTP/1.1\r\nHost: early.test\r\n\r\n")
            answer = tls.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
        assert proxy.proc.wait(10) == 0
        assert time.monotonic() - started < 8  # the silent connection did not hold the drain for its timeout
        assert [r.target for r in rec.requests] == [b"/plain", b"/tls"]
        plain.close()


def test_sigquit_does_not_wait_for_handshakes(tmp_path: Path, proxy_factory: Callable[..., ServedProxy]) -> None:
    with one_route(tmp_path, proxy_factory, "quit", workers=1) as (_, proxy), \
            socket.create_connection(("127.0.0.1", proxy.ports["https"]), timeout=10):  # a handshake pending
        time.sleep(0.2)
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGQUIT)
        assert proxy.proc.wait(10) == 0
        # the supervisor SIGKILLs a worker still there after 2 s: this one left at once
        assert time.monotonic() - started < 1.5


def test_an_old_connection_ends_with_a_response_that_says_so(
        tmp_path: Path, proxy_factory: Callable[..., ServedProxy]) -> None:
    """FASTINGRESS_TIMEOUT_CONNECTION_LIFETIME_S: a connection busy when it comes of age gets its response
    with Connection: close, then ends; one idle between requests is closed."""
    def respond(req: Received) -> bytes | None:
        if req.target == b"/slow":
            time.sleep(2.5)  # spans a worker tick after the connection's 1 s lifetime
        return ok_response("life")(req)

    with one_route(tmp_path, proxy_factory, "life", workers=1, respond=respond,
                   env={"FASTINGRESS_TIMEOUT_CONNECTION_LIFETIME_S": "1"}) as (_, proxy), \
            RawClient(proxy.http_port) as idle, RawClient(proxy.http_port) as busy:
        idle.send(b"GET /first HTTP/1.1\r\nHost: life.test\r\n\r\n")
        first = idle.read()
        assert first.status == 200 and first.header(b"connection") != b"close"
        busy.send(b"GET /slow HTTP/1.1\r\nHost: life.test\r\n\r\n")
        got = busy.read()
        assert got.status == 200 and got.header(b"connection") == b"close"
        assert busy.wait_closed(timeout_s=5) == b""
        assert idle.wait_closed(timeout_s=5) == b""


# --- connection limits and slow bodies -----------------------------------------------------------
def test_per_address_connection_limit(tmp_path: Path, proxy_factory: Any) -> None:
    with one_route(tmp_path, proxy_factory, "lim", workers=1,
                   env={"FASTINGRESS_LIMIT_CONNECTIONS_PER_IP": "2"}) as (_, proxy):
        held = [RawClient(proxy.http_port) for _ in range(2)]
        for client in held:  # both connections are in use
            client.send(b"GET / HTTP/1.1\r\nHost: lim.test\r\n\r\n")
            assert client.read().status == 200
        third = raw_exchange(proxy.http_port, b"GET / HTTP/1.1\r\nHost: lim.test\r\n\r\n")
        assert third.startswith(b"HTTP/1.1 503 ")
        held[0].close()  # a slot frees up
        wait_until(lambda: get(proxy.http_port, "/", host="lim.test").status == 200, what="admitted again")
        for client in held[1:]:
            client.close()


def test_slow_body_below_minimum_rate_gets_408(tmp_path: Path, proxy_factory: Any) -> None:
    with one_route(tmp_path, proxy_factory, "slow", workers=1,
                   env={"FASTINGRESS_LIMIT_BODY_MIN_RATE_BYTES_S": "100000"}) as (backend_, proxy):
        with RawClient(proxy.http_port) as client:
            client.send(b"POST /upload HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 1000)
            started = time.monotonic()
            rest = client.wait_closed(timeout_s=20)
            assert rest.startswith(b"HTTP/1.1 408 "), rest[:80]
            assert 9 < time.monotonic() - started < 16  # after the 10 s grace, at the next tick
        assert not any(r.target == b"/upload" and r.body for r in backend_.requests)  # never completed upstream


def test_rolling_restart_under_load_fails_nothing(tmp_path: Path, proxy_factory: Callable[..., ServedProxy]) -> None:
    with one_route(tmp_path, proxy_factory, "hup", workers=2) as (_, proxy):
        before = set(worker_pids(proxy))
        # /readyz needs one worker serving, not both: wait for the second one's socket to listen
        sockets = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(listening_inodes(proxy.http_port)),
                             what="2 listening sockets")
        with Load(proxy.http_port, "hup.test") as load:
            wait_until(lambda: load.ok > 50, what="load running")
            os.kill(proxy.proc.pid, signal.SIGHUP)
            wait_until(lambda: len(set(worker_pids(proxy)) & before) == 0 and len(worker_pids(proxy)) == 2,
                       timeout_s=30, what="every worker replaced")
            served = load.ok
            wait_until(lambda: load.ok > served + 50, what="load served by the new workers")
        assert load.failures == [], load.failures[:5]
        # the new workers serve the old workers' sockets: none closed, so no accept queue was reset
        assert len(sockets) == 2 and listening_inodes(proxy.http_port) == sockets


def test_a_crashed_workers_queued_connection_is_served_by_its_replacement(
        tmp_path: Path, proxy_factory: Callable[..., ServedProxy]) -> None:
    with one_route(tmp_path, proxy_factory, "queue", workers=1) as (rec, proxy):
        [victim] = worker_pids(proxy)
        os.kill(victim, signal.SIGSTOP)  # it accepts nothing more: the next connection waits in its queue
        with RawClient(proxy.http_port, timeout_s=15) as client:
            client.send(b"GET /queued HTTP/1.1\r\nHost: queue.test\r\n\r\n")
            os.kill(victim, signal.SIGKILL)
            assert client.read().status == 200  # the replacement inherited the socket and its queue
        assert [r.target for r in rec.requests] == [b"/queued"]
        assert victim not in worker_pids(proxy)


def _slice(name: str, service_name: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]}


def test_idempotent_request_without_a_response_byte_is_retried(tmp_path: Path, proxy_factory: Any) -> None:
    mute = RecordingBackend("mute", respond=lambda req: None)  # accepts, reads the request, closes: no byte back
    good = RecordingBackend("good")
    try:
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mix", "namespace": "default"},
               "spec": {"ports": [{"name": "http", "port": 80}]}}
        write_manifests(tmp_path / "m.yaml", [svc, _slice("mix-a", "mix", mute.port), _slice("mix-b", "mix", good.port),
                                              ingress("mix", [("mix.test", [("/", "Prefix", "mix")])])])
        proxy = proxy_factory(tmp_path, workers=1)
        gets = [get(proxy.http_port, f"/g{i}", host="mix.test").status for i in range(6)]
        assert gets == [200] * 6  # every GET that hit the mute endpoint went to the other one
        assert any(r.target.startswith(b"/g") for r in mute.requests)  # round robin did try the mute one
        posts = []
        for i in range(4):
            with RawClient(proxy.http_port) as client:
                client.send(b"POST /p%d HTTP/1.1\r\nHost: mix.test\r\nContent-Length: 2\r\n\r\nhi" % i)
                posts.append(client.read().status)
        assert 502 in posts and 200 in posts  # a POST is never sent twice: the mute endpoint's turn is a 502
        assert sum(1 for r in mute.requests + good.requests if r.target.startswith(b"/p")) == 4
    finally:
        mute.close()
        good.close()
