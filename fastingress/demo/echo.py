"""The echo backend: an HTTP/1.1 + WebSocket service that reports what it received, for demos and tests.

Responsibility: answer every request with what the proxy actually delivered (method, raw
request-target, headers in order with duplicates, body size and SHA-256), and let the caller shape
the response through query controls (status, delay, a body of N bytes, chunked framing, close,
extra headers), so that tests can drive the proxy from both ends. Run it as
`python -m fastingress.demo.echo --name NAME [--host H] --port N`; from Python use `start_echo`,
which spawns that command (never a fork) and waits for its ready line.

What it must not do: hold a request or response body whole in memory (bodies are hashed and
generated in 64 KiB steps, so a 1 GiB upload or download runs in bounded RSS), be the component
whose limits a test observes (its header limits are far above the proxy's), or import anything of
the control plane or the workers. It is not a production backend: no TLS, no auth.

Theory of operation: one aiohttp low-level `web.Server` (no router, no middlewares) calls
`EchoService.handle` for every request. The process prints exactly one line,
`listening on http://HOST:PORT`, to stdout once the socket is listening, then runs until SIGTERM or
SIGINT, when it closes open WebSockets (1001), drains in-flight requests for up to
`SHUTDOWN_TIMEOUT_S` and exits 0. A port that cannot be bound exits `ExitCode.BOOT_FAILED`.

Query controls (any method, any path except `/healthz` and the `/ws` upgrade):
`status=N` (200..599), `delay_s=F` (sleep after the body is read), `bytes=N` (N bytes of
`PATTERN` instead of the JSON echo), `chunked=1` (chunked framing, no Content-Length), `close=1`
(`Connection: close`), `headers=k:v,k2:v2` (extra response headers). HEAD and 204/304 carry no body.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import logging
import math
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

import orjson
import uvloop
from aiohttp import WSMsgType, web
from aiohttp.http import HttpVersion11

from fastingress.errors import ExitCode, FastIngressError
from fastingress.logs import setup_logging

__all__ = ["PATTERN", "Controls", "EchoProcess", "EchoService", "EchoStartError", "parse_controls", "start_echo"]

log = logging.getLogger("fastingress.demo.echo")  # not __name__: that is "__main__" under -m

PATTERN = b"0123456789abcdef"
# 64 KiB per write of a generated body: few syscalls, bounded memory; a multiple of len(PATTERN), so
# consecutive chunks continue the pattern without a seam.
CHUNK_BYTES = 64 * 1024
_CHUNK = PATTERN * (CHUNK_BYTES // len(PATTERN))
# Far above any limit the proxy enforces (aiohttp's defaults are 8190 bytes and 128 headers), so a
# test of the proxy's header limits observes the proxy, never this backend.
MAX_LINE_BYTES = 64 * 1024
MAX_FIELD_BYTES = 64 * 1024
MAX_HEADERS = 1024
# nginx's default upstream keepalive_timeout; long enough that the proxy's pool closes first.
KEEPALIVE_TIMEOUT_S = 75.0
# In-flight requests get this long after SIGTERM; EchoProcess.stop kills after STOP_TIMEOUT_S.
SHUTDOWN_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 5.0
# Interpreter start plus the aiohttp import take ~0.5 s; 10 s leaves room for a loaded CI machine.
READY_TIMEOUT_S = 10.0
READY_PREFIX = "listening on "
# The ready line is short; anything longer before a newline is not ours.
MAX_READY_LINE_BYTES = 4096

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2 token
_BAD_VALUE_RE = re.compile(r"[\x00\r\n]")  # RFC 9110 §5.5: never CR, LF or NUL in a field value
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_EMPTY_BODY_STATUSES = frozenset({204, 304})


class EchoStartError(FastIngressError):
    """The echo subprocess exited or stayed silent instead of printing its ready line."""


@dataclasses.dataclass(frozen=True, slots=True)
class Controls:
    """How to shape one response, parsed from the request's query string."""

    status: int = 200  # the response status
    delay_s: float = 0.0  # sleep this long after reading the body, before answering
    body_bytes: int | None = None  # send this many bytes of PATTERN instead of the JSON echo
    chunked: bool = False  # chunked transfer encoding instead of Content-Length
    close: bool = False  # answer with `Connection: close` and close the connection
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers, in order


def _int_control(query: Mapping[str, str], key: str) -> int | None:
    text = query.get(key)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{key}={text!r} is not an integer") from None


def _float_control(query: Mapping[str, str], key: str) -> float:
    text = query.get(key)
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key}={text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{key}={text!r} must be a finite number >= 0")
    return value


def _parse_extra_headers(text: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _TOKEN_RE.fullmatch(name) or _BAD_VALUE_RE.search(value):
            raise ValueError(f"headers item {item!r} is not name:value")
        if name.lower() in _FRAMING_HEADERS:
            raise ValueError(f"headers may not set {name}; use bytes=, chunked= or close=")
        out.append((name, value))
    return tuple(out)


def parse_controls(query: Mapping[str, str]) -> Controls:
    """The response controls of a query string; raises ValueError naming the first bad one."""
    status = _int_control(query, "status")
    if status is not None and not 200 <= status <= 599:
        raise ValueError(f"status={status} is not within 200..599")
    body_bytes = _int_control(query, "bytes")
    if body_bytes is not None and body_bytes < 0:
        raise ValueError(f"bytes={body_bytes} is negative")
    return Controls(
        status=200 if status is None else status,
        delay_s=_float_control(query, "delay_s"),
        body_bytes=body_bytes,
        chunked=query.get("chunked") == "1",
        close=query.get("close") == "1",
        headers=_parse_extra_headers(query.get("headers", "")),
    )


def _pattern_chunks(total: int) -> Iterator[bytes]:
    """`total` bytes of PATTERN, CHUNK_BYTES at a time (the last chunk may be shorter)."""
    full, rest = divmod(total, CHUNK_BYTES)
    for _ in range(full):
        yield _CHUNK
    if rest:
        yield _CHUNK[:rest]


def _printable(text: str) -> str:
    """aiohttp decodes the request-target as UTF-8 with surrogateescape; JSON cannot carry those."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class EchoService:
    """The request handler of one echo backend; `handle` is what the aiohttp low-level server calls."""

    __slots__ = ("_name", "_sockets")

    def __init__(self, name: str) -> None:
        self._name = name
        self._sockets: set[web.WebSocketResponse] = set()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """/healthz, the /ws upgrade, or the JSON echo (or N bytes) shaped by the query controls."""
        if request.path == "/healthz":
            return web.Response(text="ok", headers={"X-Echo-Backend": self._name})
        if request.path == "/ws" and request.method == "GET" and _is_websocket_upgrade(request):
            return await self._echo_websocket(request)
        try:
            controls = parse_controls(request.query)
        except ValueError as e:
            return self._error(400, str(e))
        expect = request.headers.get("Expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                return self._error(417, f"unsupported Expect: {expect}")
            if request.version == HttpVersion11:
                # aiohttp's router sends this interim response; the low-level server leaves it to us.
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body_bytes, body_sha256 = await _hash_body(request)
        if controls.delay_s:
            await asyncio.sleep(controls.delay_s)
        if controls.body_bytes is not None:
            return await self._respond(request, controls, _pattern_chunks(controls.body_bytes), controls.body_bytes)
        payload = orjson.dumps({
            "backend": self._name,
            "method": request.method,
            "path": _printable(request.raw_path),
            "host": request.headers.get("Host"),
            # latin-1 maps each octet to one code point: lossless, and `.encode("latin-1")` recovers the bytes
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
            "body_bytes": body_bytes,
            "body_sha256": body_sha256,
        }) + b"\n"
        return await self._respond(request, controls, iter((payload,)), len(payload), "application/json")

    async def _respond(self, request: web.BaseRequest, controls: Controls, chunks: Iterator[bytes], length: int,
                       content_type: str = "application/octet-stream") -> web.StreamResponse:
        """Stream `chunks` (`length` bytes in all) with the controls' status, framing and headers."""
        response = web.StreamResponse(status=controls.status, headers={"X-Echo-Backend": self._name})
        response.content_type = content_type
        for name, value in controls.headers:
            response.headers.add(name, value)
        if controls.chunked and request.version == HttpVersion11:
            response.enable_chunked_encoding()
        else:
            response.content_length = length
        if controls.close:
            response.force_close()
        await response.prepare(request)
        if request.method != "HEAD" and controls.status not in _EMPTY_BODY_STATUSES:
            for chunk in chunks:
                await response.write(chunk)  # drains when aiohttp's write buffer is full
        await response.write_eof()
        return response

    def _error(self, status: int, reason: str) -> web.Response:
        body = orjson.dumps({"backend": self._name, "error": reason}) + b"\n"
        return web.Response(status=status, body=body, content_type="application/json",
                            headers={"X-Echo-Backend": self._name})

    async def _echo_websocket(self, request: web.BaseRequest) -> web.StreamResponse:
        """Echo every message back: text prefixed with "NAME: ", binary unchanged."""
        ws = web.WebSocketResponse()
        ws.headers["X-Echo-Backend"] = self._name
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await ws.send_str(f"{self._name}: {message.data}")
                elif message.type == WSMsgType.BINARY:
                    await ws.send_bytes(message.data)
        finally:
            self._sockets.discard(ws)
        return ws

    async def close_websockets(self) -> None:
        """Close every open WebSocket with 1001 (going away), as a server does when it stops."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server stopping")


def _is_websocket_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def _hash_body(request: web.BaseRequest) -> tuple[int, str]:
    """(size, SHA-256 hex) of the request body, read as it arrives; never held whole."""
    digest = hashlib.sha256()
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def format_url(host: str, port: int) -> str:
    """http://HOST:PORT, with an IPv6 literal in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


async def serve(name: str, host: str, port: int) -> int:
    """Serve until SIGTERM or SIGINT; the process exit code."""
    try:
        sock = _bind(host, port)
    except OSError as e:
        log.error("echo backend %s cannot listen on %s port %d: %s", name, host, port, e)
        return ExitCode.BOOT_FAILED
    service = EchoService(name)
    server = web.Server(service.handle, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S,
                        max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES, max_headers=MAX_HEADERS)
    runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)  # the handler only wakes the loop
    print(READY_PREFIX + format_url(host, sock.getsockname()[1]), flush=True)
    await stopping.wait()
    log.info("echo backend %s stopping", name)
    await service.close_websockets()
    await runner.cleanup()
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastingress.demo.echo", description="fastingress echo backend")
    parser.add_argument("--name", required=True, help="reported in every response (X-Echo-Backend, JSON backend)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on; 0 picks a free one")
    parser.add_argument("--log-level", default="WARNING", help="stderr log level (default WARNING)")
    args = parser.parse_args(argv)
    setup_logging("text", args.log_level)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(args.name, args.host, args.port))


class EchoProcess:
    """A running echo backend subprocess: its address, and `stop()` (also on leaving a `with` block)."""

    __slots__ = ("_proc", "name", "port", "url")

    def __init__(self, proc: subprocess.Popen[bytes], name: str, url: str) -> None:
        self._proc = proc
        self.name = name  # the backend name it reports
        self.url = url  # http://HOST:PORT, as printed by the process
        self.port = int(url.rsplit(":", 1)[1])  # the bound port (the real one when 0 was asked)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def is_running(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after `timeout_s`; the exit code. Idempotent."""
        return _terminate(self._proc, self.name, timeout_s)

    def __enter__(self) -> EchoProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EchoProcess(name={self.name!r}, url={self.url!r}, pid={self._proc.pid})"


def _terminate(proc: subprocess.Popen[bytes], name: str, timeout_s: float) -> int:
    """SIGTERM `proc` by PID, SIGKILL it after `timeout_s`, reap it and close its pipe; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # Popen.send_signal never signals a PID it has already reaped
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("echo backend %s (pid %d) ignored SIGTERM for %.1f s; killing it", name, proc.pid, timeout_s)
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def _read_ready_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """The first stdout line of `proc`, read without blocking past `deadline` (time.monotonic)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EchoStartError(f"echo backend printed no ready line within the deadline (got {data!r})")
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, MAX_READY_LINE_BYTES)
            if not chunk:
                code = proc.wait()
                raise EchoStartError(f"echo backend exited with code {code} before it was ready")
            data += chunk
            if len(data) > MAX_READY_LINE_BYTES:
                raise EchoStartError(f"echo backend printed an unexpected line: {data[:200]!r}")
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def start_echo(name: str, host: str = "127.0.0.1", port: int = 0, *,
               ready_timeout_s: float = READY_TIMEOUT_S) -> EchoProcess:
    """Spawn `python -m fastingress.demo.echo` and return once it listens; raises EchoStartError.

    The child inherits stderr (its log lines and tracebacks show where the caller's do) and has its
    stdout on a pipe that carries the ready line only.
    """
    command = [sys.executable, "-m", "fastingress.demo.echo", "--name", name, "--host", host, "--port", str(port)]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        line = _read_ready_line(proc, time.monotonic() + ready_timeout_s)
        if not line.startswith(READY_PREFIX):
            raise EchoStartError(f"echo backend printed {line!r} instead of its ready line")
        process = EchoProcess(proc, name, line.removeprefix(READY_PREFIX))
    except BaseException:
        _terminate(proc, name, STOP_TIMEOUT_S)
        raise
    log.info("echo backend %s ready at %s (pid %d)", name, process.url, proc.pid)
    return process


if __name__ == "__main__":
    sys.exit(main())
