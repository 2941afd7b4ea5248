"""Fixtures and helpers for the proxy integration tests (routing, hardening, failures).

`start_proxy(manifests_dir, workers=..., env=...)` runs the real product path, `fastingress serve`,
through `tests.support.proxy.ServedProxy`; `proxy_factory` does the same inside a test and stops
every proxy it started.

Helpers: manifests as JSON documents (YAML accepts JSON), worker pids and RSS from /proc, a raw
socket client that reads one response at a time with h11, and condition waits with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest

from tests.support.proxy import ServedProxy

IO_TIMEOUT_S = 5.0


# --- manifests ---------------------------------------------------------------------------------------
def service(name: str, port: int, addresses: str = "127.0.0.1", namespace: str = "default") -> dict[str, Any]:
    """A Service with static endpoints `addresses` on `port` (manifests mode); no addresses: no endpoints."""
    annotations = {"fastingress.io/endpoints": addresses} if addresses else {}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}}


def backend(name: str) -> dict[str, Any]:
    return {"service": {"name": name, "port": {"number": 80}}}


def ingress(name: str, rules: list[tuple[str | None, list[tuple[str, str, str]]]], *,
            default: str | None = None, created: str | None = None, namespace: str = "default") -> dict[str, Any]:
    """An Ingress of class fastingress: rules are (host or None, [(path, pathType, service)])."""
    spec: dict[str, Any] = {"ingressClassName": "fastingress", "rules": []}
    for host, paths in rules:
        rule: dict[str, Any] = {"http": {"paths": [
            {"path": p, "pathType": t, "backend": backend(s)} for p, t, s in paths]}}
        if host is not None:
            rule["host"] = host
        spec["rules"].append(rule)
    if default is not None:
        spec["defaultBackend"] = backend(default)
    if not spec["rules"]:
        del spec["rules"]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if created is not None:
        metadata["creationTimestamp"] = created
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}


def write_manifests(path: Path, objects: list[dict[str, Any]]) -> None:
    """Write objects as one multi-document file, atomically (rename), so a watcher never reads half."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n---\n".join(json.dumps(o) for o in objects) + "\n")
    os.replace(tmp, path)


# --- processes -----------------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    return sorted(set(out))


def worker_pids(proxy: ServedProxy) -> list[int]:
    """The supervisor's worker processes (its children running workers.main)."""
    pids = []
    for pid in children(proxy.proc.pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"workers.main" in f.read():
                pids.append(pid)
    return pids


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets in LISTEN state on `port` (any address), from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(int(fields[9]))
    return found


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        time.sleep(0.02)


def metric_values(proxy: ServedProxy, fragment: str) -> list[float]:
    """Values of every /metrics sample whose name contains `fragment`."""
    status, body = proxy.admin("/metrics")
    assert status == 200, body
    out = []
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        if fragment in name.split("{", 1)[0]:
            with contextlib.suppress(ValueError):
                out.append(float(value))
    return out


# --- raw client ----------------------------------------------------------------------------------------
class Response:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, reason: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.reason = reason

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n == name.lower()]
        return b", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers!r}, {self.body[:200]!r})"


class RawClient:
    """One client connection: send raw bytes, read responses one at a time (h11 parses them)."""

    def __init__(self, port: int, timeout_s: float = IO_TIMEOUT_S) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
        return data

    def read(self, method: bytes = b"GET", body_sink: Callable[[bytes], None] | None = None) -> Response:
        """The next final response (interim 1xx skipped); raises when the connection ends first."""
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        status, reason, headers, body = 0, b"", [], []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionError(f"no complete response: {exc}") from exc
            if event is h11.NEED_DATA:
                conn.receive_data(self._recv())
                continue
            if isinstance(event, h11.Response):
                status, reason, headers = event.status_code, event.reason, list(event.headers)
            elif isinstance(event, h11.Data):
                if body_sink is not None:
                    body_sink(bytes(event.data))
                else:
                    body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, headers, b"".join(body), reason)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed before a complete response")

    def read_raw_until(self, marker: bytes, timeout_s: float = IO_TIMEOUT_S) -> bytes:
        """Raw bytes up to and including `marker` (bypasses h11; use before any read())."""
        data = b""
        deadline = time.monotonic() + timeout_s
        while marker not in data:
            assert time.monotonic() < deadline, f"{marker!r} not received; got {data!r}"
            chunk = self._recv()
            assert chunk, f"closed before {marker!r}; got {data!r}"
            data += chunk
        return data

    def wait_closed(self, timeout_s: float = IO_TIMEOUT_S) -> bytes:
        """Everything until the peer closes; AssertionError if it stays open past the deadline."""
        data = b""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"connection still open after {timeout_s} s; got {data!r}"
            self.sock.settimeout(remaining)
            try:
                chunk = self._recv()
            except TimeoutError:
                continue
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(port: int, path: str, host: str = "example.com", headers: bytes = b"", timeout_s: float = IO_TIMEOUT_S,
        method: str = "GET") -> Response:
    """One request on a fresh connection."""
    with RawClient(port, timeout_s) as c:
        c.send(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + headers + b"Connection: close\r\n\r\n")
        return c.read(method.encode())


# --- a scripted raw backend ------------------------------------------------------------------------
class ScriptedBackend:
    """A raw backend for response-side tests: reads request heads (no bodies), answers what
    `script(target)` returns as (raw bytes, close afterwards). `seen` lists (connection, target)."""

    def __init__(self, script: Callable[[bytes], tuple[bytes, bool]]) -> None:
        self.script = script
        self.seen: list[tuple[int, bytes]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                self.seen.append((index, target))
                answer, close = self.script(target)
                try:
                    conn.sendall(answer)
                except OSError:
                    return
                if close:
                    return

    def close(self) -> None:
        self.sock.close()


# --- starting the proxy ------------------------------------------------------------------------------
def start_proxy(manifests: Path, *, workers: int = 2, env: dict[str, str] | None = None) -> ServedProxy:
    """`fastingress serve --manifests DIR` with ports 0, ready (/readyz) when this returns."""
    return ServedProxy(manifests, workers=workers, env=env)


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., ServedProxy]]:
    """Start proxies inside a test; every one is stopped at the end."""
    started: list[ServedProxy] = []

    def factory(manifests: Path, **kw: Any) -> ServedProxy:
        p = start_proxy(manifests, **kw)
        started.append(p)
        return p

    yield factory
    for p in started:
        p.stop()
