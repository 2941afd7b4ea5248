"""Head serialisation: what we send upstream is parsed by an h11 SERVER, what we send back by an h11 CLIENT.

The heads come from the cores themselves (ServerConn / ClientConn parsing raw bytes), so these tests
cover the path a request and its response take through the proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.http1.client_conn import ClientConn, ResponseHead
from workers.http1.headers import (
    CONTINUE_100,
    LAST_CHUNK,
    build_client_response,
    build_local_response,
    build_upstream_request,
    chunk,
    forwarded_block,
    plain_request_middle,
    response_framing,
)
from workers.http1.limits import Limits
from workers.http1.request_head import RequestHead
from workers.http1.server_conn import EV_HEAD, ServerConn

PEER = b"203.0.113.9"
RID = b"0123456789abcdef0123456789abcdef"
MODE_NONE, MODE_CL, MODE_CHUNKED, MODE_CLOSE = 0, 1, 2, 3


def request_head(raw: bytes) -> RequestHead:
    events, error = ServerConn(Limits()).feed(raw)
    assert error is None, str(error)
    assert events[0][0] == EV_HEAD
    head = events[0][1]
    assert isinstance(head, RequestHead)
    return head


def response_head(raw: bytes, method: bytes = b"GET") -> ResponseHead:
    conn = ClientConn(Limits())
    conn.expect(method)
    events, error = conn.feed(raw)
    assert error is None, str(error)
    heads = [p for k, p in events if k == EV_HEAD]
    assert isinstance(heads[-1], ResponseHead)
    return heads[-1]


def upstream(head: RequestHead, trusted: bool = False, body: bytes = b""
             ) -> tuple[h11.Request, list[Any], h11.Connection]:
    """Our upstream request, parsed by an h11 server: (Request, later events, the connection)."""
    wire = build_upstream_request(head, PEER, b"https", b"443", RID, trusted)
    assert wire.endswith(b"\r\n\r\n") and b"\n" not in wire.replace(b"\r\n", b"")
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire + body)
    request = server.next_event()
    assert isinstance(request, h11.Request), request
    rest = []
    while True:
        event = server.next_event()
        if event in (h11.NEED_DATA, h11.PAUSED):
            break
        rest.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    return request, rest, server


Message = h11.Request | h11.Response | h11.InformationalResponse


def items(request: Message) -> list[tuple[bytes, bytes]]:
    return [(n.lower(), v) for n, v in request.headers.raw_items()]


def values(request: Message, name: bytes) -> list[bytes]:
    return [v for n, v in items(request) if n == name]


# --- build_upstream_request ----------------------------------------------------------------------------------

@given(st.sampled_from([b"/", b"/a/b?x=1&y=2", b"/~user/x", b"/q?"]),
       st.lists(st.sampled_from([b"Accept: */*", b"User-Agent: wrk", b"Cookie: a=b", b"X-One: 1"]), max_size=3),
       st.sampled_from([b"a.example", b"A.Example:8443", b"b"]), st.sampled_from([b"http", b"https"]))
def test_a_plain_request_from_its_kept_middle_is_the_same_bytes(target: bytes, fields: list[bytes], host: bytes,
                                                                  scheme: bytes) -> None:
    """Exchange.start's plain path (the middle of the head built once per connection) sends exactly what
    build_upstream_request sends for the same plain head."""
    data = b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (target, host, b"".join(f + b"\r\n" for f in fields))
    head = ServerConn(Limits()).feed_simple(data)
    assert head is not None and head.raw_fields
    block = forwarded_block(PEER, scheme, b"8443")
    middle = plain_request_middle(head.raw_fields, block, head.host_header)
    kept = b"".join((b"GET ", head.path, head.query, b" HTTP/1.1\r\n", middle, RID, b"\r\n\r\n"))
    assert kept == build_upstream_request(head, PEER, scheme, b"8443", RID, False, block)


def test_request_line_host_and_end_to_end_fields_in_order() -> None:
    head = request_head(b"GET /a/./b/%7euser/../c?x=1&y=%2F HTTP/1.1\r\nX-One: 1\r\nHost: Example.COM:8443\r\n"
                        b"Accept: */*\r\nx-two: 2\r\nCookie: a=b\r\nX-One: 3\r\n\r\n")
    request, rest, _ = upstream(head)
    assert request.method == b"GET" and request.http_version == b"1.1"
    assert request.target == b"/a/b/c?x=1&y=%2F"
    assert request.headers.raw_items()[0] == (b"Host", b"Example.COM:8443")
    ours = (b"x-forwarded", b"x-real", b"x-req")
    end_to_end = [(n, v) for n, v in request.headers.raw_items()[1:] if not n.lower().startswith(ours)]
    assert end_to_end == [(b"X-One", b"1"), (b"Accept", b"*/*"), (b"x-two", b"2"), (b"Cookie", b"a=b"),
                          (b"X-One", b"3")]
    assert [type(e) for e in rest] == [h11.EndOfMessage]


def test_absolute_form_is_forwarded_in_origin_form() -> None:
    head = request_head(b"GET http://b.example:8080/p?q HTTP/1.1\r\nHost: ignored\r\n\r\n")
    request, _, _ = upstream(head)
    assert request.target == b"/p?q" and values(request, b"host") == [b"b.example:8080"]


def test_http_1_0_request_goes_upstream_as_1_1() -> None:
    request, _, _ = upstream(request_head(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"))
    assert request.http_version == b"1.1"


def test_hop_by_hop_and_connection_named_fields_are_dropped() -> None:
    head = request_head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, x-other, Host, "
                        b"X-Forwarded-For\r\nKeep-Alive: 300\r\nX-Secret: 1\r\nX-Other: 2\r\nTE: trailers\r\n"
                        b"Proxy-Connection: keep-alive\r\nTrailer: X\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n"
                        b"X-Kept: 3\r\n\r\n")
    request, _, _ = upstream(head)
    names = [n for n, _ in items(request)]
    for name in (b"connection", b"keep-alive", b"x-secret", b"x-other", b"te", b"proxy-connection", b"trailer",
                 b"upgrade", b"http2-settings", b"transfer-encoding", b"content-length", b"expect"):
        assert name not in names
    assert values(request, b"host") == [b"a"]  # a Connection token never removes what the proxy owns
    assert values(request, b"x-forwarded-for") == [PEER]
    assert values(request, b"x-kept") == [b"3"]


INCOMING = (b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 198.51.100.1, 10.0.0.2\r\n"
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: original.example\r\nX-Forwarded-Port: 8080\r\n"
            b"X-Real-IP: 6.6.6.6\r\nX-Request-ID: client-chosen\r\n\r\n")


def test_forwarded_fields_untrusted_peer() -> None:
    request, _, _ = upstream(request_head(INCOMING), trusted=False)
    assert values(request, b"x-forwarded-for") == [PEER]
    assert values(request, b"x-forwarded-proto") == [b"https"]
    assert values(request, b"x-forwarded-host") == [b"shop.example"]
    assert values(request, b"x-forwarded-port") == [b"443"]
    assert values(request, b"x-real-ip") == [PEER]
    assert values(request, b"x-request-id") == [RID]


def test_forwarded_fields_trusted_peer() -> None:
    request, _, _ = upstream(request_head(INCOMING), trusted=True)
    assert values(request, b"x-forwarded-for") == [b"198.51.100.1, 10.0.0.2, " + PEER]
    assert values(request, b"x-forwarded-proto") == [b"http"]
    assert values(request, b"x-forwarded-host") == [b"original.example"]
    assert values(request, b"x-forwarded-port") == [b"8080"]
    assert values(request, b"x-real-ip") == [b"198.51.100.1"]
    assert values(request, b"x-request-id") == [RID]


def test_forwarded_fields_trusted_peer_without_incoming_ones() -> None:
    request, _, _ = upstream(request_head(b"GET / HTTP/1.1\r\nHost: shop.example:8443\r\n\r\n"), trusted=True)
    assert values(request, b"x-forwarded-for") == [PEER] and values(request, b"x-real-ip") == [PEER]
    assert values(request, b"x-forwarded-host") == [b"shop.example:8443"]
    assert values(request, b"x-forwarded-proto") == [b"https"] and values(request, b"x-forwarded-port") == [b"443"]


def test_content_length_framing() -> None:
    head = request_head(b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
    request, rest, _ = upstream(head, body=b"hello")
    assert values(request, b"content-length") == [b"5"] and values(request, b"transfer-encoding") == []
    assert [type(e) for e in rest] == [h11.Data, h11.EndOfMessage] and rest[0].data == b"hello"


def test_empty_content_length_is_kept() -> None:
    request, rest, _ = upstream(request_head(b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"))
    assert values(request, b"content-length") == [b"0"] and [type(e) for e in rest] == [h11.EndOfMessage]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=6))
def test_rechunked_body(parts: Sequence[bytes]) -> None:
    head = request_head(b"POST /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = b"".join(chunk(p) for p in parts) + LAST_CHUNK
    request, rest, _ = upstream(head, body=body)
    assert values(request, b"transfer-encoding") == [b"chunked"] and values(request, b"content-length") == []
    assert b"".join(e.data for e in rest if isinstance(e, h11.Data)) == b"".join(parts)
    assert isinstance(rest[-1], h11.EndOfMessage) and rest[-1].headers == []


def test_websocket_upgrade_is_forwarded() -> None:
    head = request_head(b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
                        b"Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
    request, _, server = upstream(head)
    assert values(request, b"upgrade") == [b"websocket"] and values(request, b"connection") == [b"upgrade"]
    assert values(request, b"sec-websocket-key") == [b"k"]
    assert server.their_state is h11.MIGHT_SWITCH_PROTOCOL


def test_refused_upgrade_is_forwarded_as_a_plain_request() -> None:
    head = request_head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                        b"HTTP2-Settings: AAA\r\n\r\n")
    request, _, _ = upstream(head)
    assert values(request, b"upgrade") == [] and values(request, b"connection") == []


def test_expect_100_continue() -> None:
    head = request_head(b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    request, _, server = upstream(head)
    assert values(request, b"expect") == [b"100-continue"]
    assert server.they_are_waiting_for_100_continue
    head_10 = request_head(b"PUT /f HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    request, _, server = upstream(head_10)
    assert values(request, b"expect") == [] and not server.they_are_waiting_for_100_continue


# --- build_client_response and response_framing --------------------------------------------------------------

def client_sees(wire: bytes, method: bytes = b"GET", eof: bool = False) -> tuple[list[Any], h11.Connection]:
    """Our response bytes parsed by an h11 client that sent `method`."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(wire)
    if eof:
        client.receive_data(b"")
    events = []
    while True:
        event = client.next_event()
        if event in (h11.NEED_DATA, h11.PAUSED):
            break
        events.append(event)
        if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    return events, client


def relay(resp: ResponseHead, mode: int, keep_alive: bool, body: bytes, extra: bytes = b"") -> bytes:
    wire = build_client_response(resp, mode, keep_alive, extra)
    if mode in (MODE_CL, MODE_CLOSE):
        wire += body
    elif mode == MODE_CHUNKED:
        wire += b"".join(chunk(body[i:i + 7]) for i in range(0, len(body), 7)) + LAST_CHUNK
    return wire


BACKEND_CL = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nConnection: keep-alive, X-Hop\r\n"
              b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: b=2\r\nContent-Length: 11\r\n\r\n")
BACKEND_CHUNKED = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nSet-Cookie: a=1\r\n"
                   b"Set-Cookie: b=2\r\n\r\n")
BACKEND_CLOSE = b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
BODY = b"hello world"


@pytest.mark.parametrize(("backend", "client_version", "mode", "keep_alive"), [
    (BACKEND_CL, b"1.1", MODE_CL, True),
    (BACKEND_CL, b"1.0", MODE_CL, True),
    (BACKEND_CHUNKED, b"1.1", MODE_CHUNKED, True),
    (BACKEND_CLOSE, b"1.1", MODE_CHUNKED, True),
    (BACKEND_CHUNKED, b"1.0", MODE_CLOSE, False),
    (BACKEND_CLOSE, b"1.0", MODE_CLOSE, False),
])
def test_client_response_framing(backend: bytes, client_version: bytes, mode: int, keep_alive: bool) -> None:
    resp = response_head(backend)
    assert response_framing(resp, b"GET", client_version) == (mode, keep_alive)
    events, client = client_sees(relay(resp, mode, keep_alive, BODY), eof=mode == MODE_CLOSE)
    response = events[0]
    assert isinstance(response, h11.Response) and response.status_code == resp.status
    assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == BODY
    assert isinstance(events[-1], h11.EndOfMessage)
    assert values(response, b"set-cookie") == [b"a=1", b"b=2"]
    for hop in (b"x-hop", b"keep-alive", b"trailer"):
        assert values(response, hop) == []
    assert values(response, b"content-length") == ([b"11"] if mode == MODE_CL else [])
    assert values(response, b"transfer-encoding") == ([b"chunked"] if mode == MODE_CHUNKED else [])
    assert values(response, b"connection") == ([] if keep_alive else [b"close"])
    assert client.their_state is (h11.DONE if keep_alive else h11.MUST_CLOSE)
    if keep_alive:
        client.start_next_cycle()


def test_keep_alive_refused_adds_connection_close() -> None:
    resp = response_head(BACKEND_CL)
    events, client = client_sees(relay(resp, MODE_CL, False, BODY))
    assert values(events[0], b"connection") == [b"close"] and client.their_state is h11.MUST_CLOSE


def test_head_response_keeps_the_length_and_sends_no_body() -> None:
    resp = response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", b"HEAD")
    mode, keep_alive = response_framing(resp, b"HEAD", b"1.1")
    assert (mode, keep_alive) == (MODE_NONE, True)
    wire = build_client_response(resp, mode, keep_alive)
    events, client = client_sees(wire, b"HEAD")
    assert [type(e) for e in events] == [h11.Response, h11.EndOfMessage]
    assert values(events[0], b"content-length") == [b"1234"] and client.their_state is h11.DONE


@pytest.mark.parametrize(("backend", "length"), [
    (b"HTTP/1.1 204 No Content\r\n\r\n", []),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", []),  # RFC 9110 8.6: never a CL in a 204
    (b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", []),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", [b"99"]),  # the representation's length
])
def test_no_body_statuses(backend: bytes, length: list[bytes]) -> None:
    resp = response_head(backend)
    for version in (b"1.1", b"1.0"):
        mode, keep_alive = response_framing(resp, b"GET", version)
        assert (mode, keep_alive) == (MODE_NONE, True)
        events, client = client_sees(build_client_response(resp, mode, keep_alive))
        assert [type(e) for e in events] == [h11.Response, h11.EndOfMessage]
        assert values(events[0], b"content-length") == length
        assert values(events[0], b"transfer-encoding") == [] and client.their_state is h11.DONE


def test_informational_response_for_1_1_clients() -> None:
    conn = ClientConn(Limits())
    conn.expect(b"GET")
    events, error = conn.feed(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
    assert error is None
    info = events[0][1]
    assert isinstance(info, ResponseHead)
    mode, keep_alive = response_framing(info, b"GET", b"1.1")
    assert mode == MODE_NONE
    wire = build_client_response(info, mode, keep_alive)
    final = build_client_response(response_head(BACKEND_CL), MODE_CL, True) + BODY
    got, _ = client_sees(wire + final)
    assert isinstance(got[0], h11.InformationalResponse) and got[0].status_code == 103
    assert values(got[0], b"link") == [b"</s.css>; rel=preload"]
    assert isinstance(got[1], h11.Response) and got[1].status_code == 200


def test_extra_fields_and_unknown_reason() -> None:
    resp = response_head(b"HTTP/1.1 299 Very Custom\r\nContent-Length: 0\r\n\r\n")
    wire = build_client_response(resp, MODE_CL, True, b"Strict-Transport-Security: max-age=31536000\r\n")
    events, _ = client_sees(wire)
    assert events[0].status_code == 299 and events[0].reason == b"Very Custom"
    assert values(events[0], b"strict-transport-security") == [b"max-age=31536000"]


def test_switching_protocols_response() -> None:
    resp = response_head(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
                         b"Sec-WebSocket-Accept: abc\r\n\r\n")
    wire = build_client_response(resp, MODE_NONE, True)
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "a"), ("Connection", "upgrade"),
                                                               ("Upgrade", "websocket")]))
    client.send(h11.EndOfMessage())
    client.receive_data(wire + b"\x81\x00")
    event = client.next_event()
    assert isinstance(event, h11.InformationalResponse) and event.status_code == 101
    assert values(event, b"upgrade") == [b"websocket"] and values(event, b"sec-websocket-accept") == [b"abc"]
    assert client.their_state is h11.SWITCHED_PROTOCOL and client.trailing_data[0] == b"\x81\x00"


# --- build_local_response ------------------------------------------------------------------------------------

LOCAL_STATUSES = [400, 404, 405, 408, 413, 414, 417, 431, 501, 502, 503, 504, 505, 308]


@pytest.mark.parametrize("status", LOCAL_STATUSES)
@pytest.mark.parametrize("keep_alive", [True, False])
def test_local_responses(status: int, keep_alive: bool) -> None:
    body = b"%d something went wrong\n" % status
    extra = b"Location: https://a.example/x\r\n" if status == 308 else b""
    wire = build_local_response(status, body, keep_alive, extra)
    events, client = client_sees(wire)
    response = events[0]
    assert isinstance(response, h11.Response) and response.status_code == status and response.reason
    assert values(response, b"content-length") == [b"%d" % len(body)]
    assert values(response, b"content-type") == [b"text/plain; charset=utf-8"]
    assert values(response, b"connection") == ([] if keep_alive else [b"close"])
    assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == body
    assert isinstance(events[-1], h11.EndOfMessage)
    if status == 308:
        assert values(response, b"location") == [b"https://a.example/x"]
    assert client.their_state is (h11.DONE if keep_alive else h11.MUST_CLOSE)


def test_local_response_with_an_empty_body() -> None:
    events, _ = client_sees(build_local_response(503, b"", True))
    assert values(events[0], b"content-length") == [b"0"] and [type(e) for e in events] == [h11.Response,
                                                                                           h11.EndOfMessage]


def test_continue_100() -> None:
    events, _ = client_sees(CONTINUE_100 + build_local_response(404, b"x", True))
    assert isinstance(events[0], h11.InformationalResponse) and events[0].status_code == 100
    assert events[1].status_code == 404


# --- chunk() -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "wire"), [(b"a", b"1\r\na\r\n"), (b"x" * 26, b"1a\r\n" + b"x" * 26 + b"\r\n"),
                                            (b"\r\n0\r\n\r\n", b"7\r\n\r\n0\r\n\r\n\r\n")])
def test_chunk_framing(data: bytes, wire: bytes) -> None:
    assert chunk(data) == wire
    assert LAST_CHUNK == b"0\r\n\r\n"
