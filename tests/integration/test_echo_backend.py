"""The echo backend as a real subprocess on loopback, driven by http.client, raw sockets and aiohttp.

Everything the proxy's integration tests will lean on is checked here first: the JSON echo (raw
request-target, headers in order with duplicates), generated bodies with Content-Length and chunked
framing, a streamed 50 MB upload hashed on the fly, HEAD/204/304 without bodies, delays, extra
headers and `Connection: close`, `Expect: 100-continue`, the WebSocket echo, and a clean stop.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from fastingress.demo.echo import PATTERN, EchoProcess, EchoStartError, start_echo

pytestmark = pytest.mark.integration

IO_TIMEOUT_S = 5.0  # any single read; a healthy exchange on loopback takes milliseconds


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoProcess]:
    with start_echo("web") as process:
        yield process


def _connect(echo: EchoProcess) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", echo.port, timeout=IO_TIMEOUT_S)


def _raw_socket(echo: EchoProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", echo.port), timeout=IO_TIMEOUT_S)


def _read_head(sock: socket.socket) -> bytes:
    """Bytes up to and including the blank line ending one response head, read one byte at a time."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"connection closed after {head!r}"
        head += byte
    return head


def _raw_exchange(echo: EchoProcess, request: bytes, method: str = "GET") -> http.client.HTTPResponse:
    """Send `request` byte for byte and parse the answer; the response is fully read."""
    with _raw_socket(echo) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        response.read()
        return response


def _get_json(echo: EchoProcess, path: str) -> dict[str, Any]:
    conn = _connect(echo)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        result: dict[str, Any] = json.loads(response.read())
        return result
    finally:
        conn.close()


def test_json_echo_keeps_raw_target_and_duplicate_headers(echo: EchoProcess) -> None:
    target = "/a%2Fb/./c//d?q=1&q=2&x=%20y&empty"
    request = (f"POST {target} HTTP/1.1\r\nHost: demo.localhost\r\nX-Dup: one\r\nx-other: 1\r\nX-Dup: two\r\n"
               "Content-Length: 5\r\nConnection: close\r\n\r\nhello").encode()
    with _raw_socket(echo) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        body = json.loads(response.read())
    assert response.status == 200
    assert response.getheader("X-Echo-Backend") == "web"
    assert response.getheader("Content-Type") == "application/json"
    assert body["backend"] == "web"
    assert body["method"] == "POST"
    assert body["path"] == target
    assert body["host"] == "demo.localhost"
    assert body["headers"] == [["Host", "demo.localhost"], ["X-Dup", "one"], ["x-other", "1"], ["X-Dup", "two"],
                               ["Content-Length", "5"], ["Connection", "close"]]
    assert body["body_bytes"] == 5
    assert body["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


def _expected_pattern(n: int) -> bytes:
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def test_bytes_with_content_length(echo: EchoProcess) -> None:
    n = 200_003  # three 64 KiB chunks and a partial one
    conn = _connect(echo)
    conn.request("GET", f"/dl?bytes={n}")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Length") == str(n)
    assert response.getheader("Transfer-Encoding") is None
    assert response.read() == _expected_pattern(n)
    conn.close()


def test_bytes_chunked(echo: EchoProcess) -> None:
    n = 150_000
    conn = _connect(echo)
    conn.request("GET", f"/dl?bytes={n}&chunked=1")
    response = conn.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Length") is None
    assert response.read() == _expected_pattern(n)
    conn.request("GET", "/dl?bytes=0&chunked=1")  # the same connection still works after the last chunk
    response = conn.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.read() == b""
    conn.close()


def test_streamed_chunked_upload_is_hashed(echo: EchoProcess) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    count = 50
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for i in range(count):
            piece = chunk[i:] + chunk[:i]  # every chunk different, so order matters for the hash
            digest.update(piece)
            yield piece

    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=IO_TIMEOUT_S)
    conn.request("PUT", "/upload", body=body(), encode_chunked=True)
    response = conn.getresponse()
    result = json.loads(response.read())
    conn.close()
    assert response.status == 200
    assert ["Transfer-Encoding", "chunked"] in result["headers"]
    assert result["body_bytes"] == count * len(chunk)
    assert result["body_sha256"] == digest.hexdigest()


def test_head_has_get_headers_and_no_body(echo: EchoProcess) -> None:
    conn = _connect(echo)
    conn.request("GET", "/x?bytes=1234&headers=X-A:1")
    get = conn.getresponse()
    get.read()
    conn.request("HEAD", "/x?bytes=1234&headers=X-A:1")
    head = conn.getresponse()
    assert head.read() == b""
    for name in ("Content-Length", "Content-Type", "X-Echo-Backend", "X-A"):
        assert head.getheader(name) == get.getheader(name), name
    conn.request("GET", "/after-head")  # a body after HEAD would be parsed as this response: it is not
    response = conn.getresponse()
    assert json.loads(response.read())["path"] == "/after-head"
    conn.close()


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(echo: EchoProcess, status: int) -> None:
    conn = _connect(echo)
    conn.request("GET", f"/nothing?status={status}&bytes=100")
    response = conn.getresponse()
    assert response.status == status
    assert response.getheader("X-Echo-Backend") == "web"
    assert response.getheader("Transfer-Encoding") is None
    if status == 204:
        assert response.getheader("Content-Length") is None  # RFC 9110 §8.6
    assert response.read() == b""
    conn.request("GET", "/next")
    assert json.loads(conn.getresponse().read())["path"] == "/next"
    conn.close()


def test_delay(echo: EchoProcess) -> None:
    started = time.monotonic()
    _get_json(echo, "/slow?delay_s=0.3")
    assert time.monotonic() - started >= 0.3


def test_status_close_and_extra_headers(echo: EchoProcess) -> None:
    request = b"GET /x?status=503&close=1&headers=X-A:1,X-B:two%20words HTTP/1.1\r\nHost: a\r\n\r\n"
    with _raw_socket(echo) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method="GET")
        response.begin()
        assert json.loads(response.read())["path"] == "/x?status=503&close=1&headers=X-A:1,X-B:two%20words"
        assert sock.recv(1) == b""  # the server closed the connection
    assert response.status == 503
    assert response.getheader("Connection") == "close"
    assert response.getheader("X-A") == "1"
    assert response.getheader("X-B") == "two words"


@pytest.mark.parametrize("query", ["status=abc", "status=99", "bytes=-1", "delay_s=nan", "headers=Content-Length:1"])
def test_bad_control_is_400(echo: EchoProcess, query: str) -> None:
    response = _raw_exchange(echo, f"GET /?{query} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
    assert response.status == 400
    assert response.getheader("X-Echo-Backend") == "web"


def test_expect_100_continue(echo: EchoProcess) -> None:
    head = b"PUT /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    with _raw_socket(echo) as sock:
        sock.sendall(head)
        assert _read_head(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body byte was sent
        sock.sendall(b"12345")
        response = http.client.HTTPResponse(sock, method="PUT")
        response.begin()
        body = json.loads(response.read())
    assert response.status == 200
    assert body["body_bytes"] == 5
    assert body["body_sha256"] == hashlib.sha256(b"12345").hexdigest()


def test_healthz(echo: EchoProcess) -> None:
    response = _raw_exchange(echo, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (response.status, response.getheader("X-Echo-Backend")) == (200, "web")


def test_websocket_echo(echo: EchoProcess) -> None:
    async def talk() -> list[str | bytes]:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{echo.url}/ws") as ws:
            await ws.send_str("hello")
            text = await ws.receive_str(timeout=IO_TIMEOUT_S)
            await ws.send_bytes(b"\x00\xff")
            data = await ws.receive_bytes(timeout=IO_TIMEOUT_S)
            return [text, data]

    assert asyncio.run(talk()) == ["web: hello", b"\x00\xff"]
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with _raw_socket(echo) as sock:
        sock.sendall(upgrade)
        head = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nX-Echo-Backend: web\r\n" in head


def test_stop_leaves_no_process_even_with_an_open_websocket() -> None:
    process = start_echo("tmp")
    assert process.url == f"http://127.0.0.1:{process.port}"

    async def hold_open_and_stop() -> aiohttp.WSMessage:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{process.url}/ws") as ws:
            code = await asyncio.to_thread(process.stop)
            assert code == 0
            return await ws.receive(timeout=IO_TIMEOUT_S)

    started = time.monotonic()
    message = asyncio.run(hold_open_and_stop())
    assert time.monotonic() - started < 2.0  # closed with 1001 at once, not after the drain timeout
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
    assert not process.is_running()
    assert not os.path.exists(f"/proc/{process.pid}")
    assert process.stop() == 0  # idempotent


def test_busy_port_fails_fast(echo: EchoProcess) -> None:
    started = time.monotonic()
    with pytest.raises(EchoStartError, match="exited with code 4"):
        start_echo("clash", port=echo.port)
    assert time.monotonic() - started < 5.0
