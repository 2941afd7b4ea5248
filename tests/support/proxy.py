"""Run the real proxy (`python -m fastingress serve`) on a manifests directory, and talk to it raw.

`ServedProxy` starts the supervisor with ports 0, reads the ports it prints, waits for /readyz, and
stops it by PID (SIGTERM, then SIGKILL). `raw_exchange` sends bytes exactly as given over a fresh
socket and returns everything received until the proxy closes or the deadline passes; h11 parses
responses where a test wants structure.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import h11

_PORTS = re.compile(rb"(http|https|admin) on ([0-9.:\[\]a-f]+):(\d+)")


def service_manifest(name: str, port: int, namespace: str = "default") -> str:
    """A Service whose static endpoint is 127.0.0.1:<port> (manifests mode)."""
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}, "
            f"annotations: {{fastingress.io/endpoints: '127.0.0.1'}}}}\n"
            f"spec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}\n---\n")


class ServedProxy:
    def __init__(self, manifests: Path | None, *, workers: int = 2, env: dict[str, str] | None = None,
                 ready_timeout_s: float = 30.0, wait_ready: bool = True) -> None:
        """`manifests` None: the Kubernetes source (point KUBECONFIG in `env` at a test API server)."""
        self.manifests = manifests
        full_env = {**os.environ, "FASTINGRESS_LOG_FORMAT": "json", "FASTINGRESS_ACCESS_LOG": "false",
                    **(env or {})}
        source = ["--manifests", str(manifests)] if manifests is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastingress", "serve", *source, "--http-port", "0",
             "--https-port", "0", "--admin-port", "0", "--workers", str(workers)],
            stdout=subprocess.PIPE, env=full_env)
        self.ports: dict[str, int] = {}
        deadline = time.monotonic() + ready_timeout_s
        assert self.proc.stdout is not None
        while not {"http", "https", "admin"} <= self.ports.keys():
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"proxy did not print its ports (exit {self.proc.poll()})")
            for kind, _, port in _PORTS.findall(line):
                self.ports[kind.decode()] = int(port)
        if wait_ready:
            self.wait_ready(deadline)

    @property
    def http_port(self) -> int:
        return self.ports["http"]

    @property
    def admin_port(self) -> int:
        return self.ports["admin"]

    def admin(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if self.admin("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("proxy never became ready")

    def wait_for(self, predicate: object, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.02)
        raise AssertionError("condition not met before the deadline")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> ServedProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def raw_exchange(port: int, data: bytes, *, timeout_s: float = 5.0, half_close: bool = False) -> bytes:
    """Send bytes verbatim; return all bytes received until the peer closes or the deadline passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def parse_responses(data: bytes, methods: list[bytes] | None = None) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Complete responses in `data` as (status, headers, body), parsed by h11 (an independent parser).

    `methods` are the request methods in order (HEAD responses have no body); interim 1xx are skipped.
    """
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    client.receive_data(b"")  # all we have: lets h11 finish close-delimited bodies
    for method in methods or [b"GET"] * 64:
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        status, headers, body = 0, {}, []
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError:
                return out
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return out
            if isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                out.append((status, headers, b"".join(body)))
                break
        if client.their_state is not h11.DONE or client.our_state is not h11.DONE:
            return out
        client.start_next_cycle()
    return out
