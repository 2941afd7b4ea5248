"""The fast lane (simple.py, ServerConn.feed_simple, ClientConn.feed_simple): plain messages only, and for those
exactly what the full path would do.

Oracle: the full path (ServerConn.feed / ClientConn.feed, then headers.py) on the same bytes. A false "not
plain" costs only speed; a false "plain" would skip a hardening check, so every disqualifier must send the
message to the full path, which must then see it as if the fast lane had never looked (nothing consumed).
For the messages the fast lane takes, the bytes the proxy sends on (upstream request, client response) must
say what the full path's bytes say: same start line, same fields up to OWS and field order, same body.
h11 checks that those bytes are valid HTTP/1.1.
"""

from __future__ import annotations

import http
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import h11
import httptools
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from workers.http1.client_conn import (
    MEMO_PAUSE,
    MEMO_WINDOW,
    PLAIN_HEAD_MAX_BYTES,
    PLAIN_HEADS_MAX,
    ClientConn,
    PlainHeads,
    ResponseHead,
)
from workers.http1.errors import RemoteProtocolError
from workers.http1.headers import build_client_response, build_upstream_request, response_framing
from workers.http1.limits import MAX_HEADER_COUNT, Limits
from workers.http1.request_head import RequestHead
from workers.http1.server_conn import EV_BODY, EV_END, EV_HEAD, ServerConn
from workers.http1.simple import TARGET_CHARS, closing_head, simple_request, simple_response

L = Limits()
PEER, SCHEME, PORT, RID = b"192.0.2.7", b"http", b"80", b"req-1"
# no shrinking, as in test_server_conn: a failing composite example would take minutes to shrink; the
# examples below pin minimal inputs instead
HYPO = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                report_multiple_bugs=False, phases=(Phase.explicit, Phase.reuse, Phase.generate))
HYPO_SMALL = settings(HYPO, max_examples=80)
HYPO_REASON = settings(HYPO, max_examples=15)  # per disqualifier

# request fields the full path interprets or owns other than Host and Connection (request_head._SPECIAL)
SPECIAL_REQUEST = {
    "Content-Length": "0", "Transfer-Encoding": "chunked", "Expect": "100-continue", "Upgrade": "websocket",
    "X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "443", "X-Forwarded-Server": "edge", "X-Real-IP": "198.51.100.1", "X-Request-ID": "abc",
    "TE": "trailers", "Trailer": "X-T", "Keep-Alive": "timeout=5", "Proxy-Connection": "keep-alive",
    "HTTP2-Settings": "AAMAAABkAAQAoAAAAAIAAAAA",
}
# response fields with framing or hop-by-hop meaning other than Content-Length and Connection
SPECIAL_RESPONSE = {"Transfer-Encoding": "chunked", "Keep-Alive": "timeout=5", "Upgrade": "h2c", "TE": "trailers",
                    "Trailer": "X-T", "Proxy-Connection": "keep-alive", "HTTP2-Settings": "AAMAAABk"}
_RESERVED = {n.lower() for n in SPECIAL_REQUEST} | {"host", "connection"}
# names that start like a special one and are plain end-to-end fields (the fast lane must match whole names)
NEAR_MISS = ["Upgrade-Insecure-Requests", "Content-Type", "Content-Language", "Expect-CT", "Hostname", "Hosts",
             "Connection-Id", "Keep-Alive-Timeout", "Trailers", "Tea", "Teapot", "TEX", "X-Forwarded",
             "X-Real-IP-Hash", "X-Request-IDs", "X-Request", "Transfer-Encodings", "Proxy", "HTTP2", "Accept"]


def casings(name: str) -> list[tuple[str, str]]:
    odd = "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(name))
    return [("lower", name.lower()), ("UPPER", name.upper()), ("Title", name), ("mIxEd", odd)]


def req(target: bytes = b"/", *fields: bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1",
        body: bytes = b"") -> bytes:
    return b"%s %s %s\r\n%s\r\n%s" % (method, target, version, b"".join(f + b"\r\n" for f in fields), body)


def resp(*fields: bytes, status: bytes = b"200 OK", version: bytes = b"HTTP/1.1", body: bytes = b"") -> bytes:
    return b"%s %s\r\n%s\r\n%s" % (version, status, b"".join(f + b"\r\n" for f in fields), body)


# --- helpers: the full path, the fast lane as the proxy drives it, and a head splitter ----------------------

def split_head(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """(start line, [(name as sent, value without OWS)], bytes after the head)."""
    end = data.index(b"\r\n\r\n")
    start, *lines = data[:end].split(b"\r\n")
    fields = []
    for line in lines:
        name, colon, value = line.partition(b":")
        assert colon and name and name == name.strip(), line
        fields.append((name, value.strip(b" \t")))
    return start, fields, data[end + 4:]


def lower(fields: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(n.lower(), v) for n, v in fields]


def request_key(h: RequestHead) -> tuple[Any, ...]:
    """What a head tells the proxy beyond its end-to-end fields (those are compared on the wire)."""
    return (h.method, h.target, h.path, h.query, h.version, h.host, h.host_header, h.keep_alive, h.content_length,
            h.chunked, h.expect_continue, h.upgrade, sorted(h.forwarded.items()))


def full_request(data: bytes, conn: ServerConn | None = None
                 ) -> tuple[list[tuple[int, object]], RemoteProtocolError | None, ServerConn]:
    conn = conn or ServerConn(Limits())
    events, error = conn.feed(data)
    return events, error, conn


def request_outcome(events: list[tuple[int, object]], error: RemoteProtocolError | None) -> list[Any]:
    out: list[Any] = []
    for kind, payload in events:
        if kind == EV_HEAD:
            assert isinstance(payload, RequestHead)
            out.append(("head", request_key(payload), tuple(payload.fields)))
        else:
            out.append((kind, payload))
    return [out, error.status_hint if error is not None else None]


def upstream(head: RequestHead, trusted: bool) -> bytes:
    return build_upstream_request(head, PEER, SCHEME, PORT, RID, trusted)


def h11_server_parses(wire: bytes) -> h11.Request:
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire)
    request = server.next_event()
    assert isinstance(request, h11.Request), wire
    assert isinstance(server.next_event(), h11.EndOfMessage)
    return request


def assert_same_upstream(fast: RequestHead, full: RequestHead) -> None:
    """The fast lane's upstream bytes say what the full path's say (Host in place vs first is the only freedom)."""
    assert request_key(fast) == request_key(full)
    for trusted in (False, True):
        fast_wire, full_wire = upstream(fast, trusted), upstream(full, trusted)
        fast_line, fast_fields, fast_rest = split_head(fast_wire)
        full_line, full_fields, full_rest = split_head(full_wire)
        assert fast_line == full_line
        assert fast_rest == full_rest == b""
        assert Counter(lower(fast_fields)) == Counter(lower(full_fields)), (fast_wire, full_wire)
        assert [f for f in fast_fields if f[0].lower() != b"host"] == \
               [f for f in full_fields if f[0].lower() != b"host"]
        assert lower(full_fields)[0][0] == b"host" and [n for n, _ in lower(fast_fields)].count(b"host") == 1
        assert not any(n.lower() == b"connection" for n, _ in fast_fields)
        sent = h11_server_parses(fast_wire)
        assert sent.target == fast.path + fast.query


def check_request(data: bytes) -> tuple[RequestHead | None, RemoteProtocolError | None]:
    """The request properties for one read: (the fast lane's head or None, the full path's error)."""
    fast = ServerConn(Limits()).feed_simple(data)
    events, error, _ = full_request(data)
    if fast is not None:
        assert error is None, f"fast lane took what the full path refuses ({error}): {data[:200]!r}"
        assert [k for k, _ in events] == [EV_HEAD, EV_END], data[:200]
        full = events[0][1]
        assert isinstance(full, RequestHead)
        assert fast.fields == [] and fast.raw_fields
        assert_same_upstream(fast, full)
        # the head check of simple.py alone agrees with what feed_simple built the head from
        found = simple_request(data, L)
        assert found is not None and found[0] == fast.target and found[1] == fast.host_header
        assert found[2] == fast.raw_fields
    else:
        # nothing consumed: the same connection's full path answers exactly as a fresh one
        conn = ServerConn(Limits())
        assert conn.feed_simple(data) is None
        again, again_error, _ = full_request(data, conn)
        assert request_outcome(again, again_error) == request_outcome(events, error)
    return fast, error


ResponseResult = tuple[list[Any], RemoteProtocolError | None, ClientConn]


def full_response(reads: Sequence[bytes], conn: ClientConn | None = None) -> ResponseResult:
    """ClientConn's full path over `reads` (stopping at an error): (events, error, conn)."""
    conn = conn or ClientConn(Limits())
    conn.expect(b"GET")
    events: list[Any] = []
    error = None
    for data in reads:
        got, error = conn.feed(data)
        events += got
        if error is not None:
            break
    return events, error, conn


def response_outcome(result: ResponseResult) -> list[Any]:
    events, error, conn = result
    out: list[Any] = []
    for kind, payload in events:
        if kind == EV_HEAD:
            assert isinstance(payload, ResponseHead)
            out.append((payload.status, payload.reason, payload.version, payload.fields, payload.content_length,
                        payload.chunked, payload.keep_alive))
        else:
            out.append((kind, payload))
    return [out, error.status_hint if error is not None else None, conn.complete, conn.reusable]


def fast_response(reads: Sequence[bytes], keep: bool, conn: ClientConn | None = None
                  ) -> tuple[tuple[int, int, int], bytes, bool, bool] | None:
    """Exchange.upstream_simple over `reads`: (found, bytes written to the client, complete, reusable)."""
    conn = conn or ClientConn(Limits())
    data = reads[0]
    found = conn.feed_simple(data)
    if found is None:
        return None
    remaining = conn.remaining
    if remaining < 0:
        data = data[: len(data) + remaining]  # surplus after the body: dropped
    if not keep:
        data = closing_head(data, found[1])
    out = [data]
    for more in reads[1:]:
        if remaining <= 0:
            break  # the exchange is complete: later bytes are no part of this response
        n = conn.feed_simple_body(more)
        out.append(more[:n])
        remaining = conn.remaining
    return found, b"".join(out), remaining <= 0, conn.reusable


def h11_client_parses(wire: bytes, keep: bool) -> tuple[h11.Response, bytes]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(wire)
    response = client.next_event()
    assert isinstance(response, h11.Response), wire[:200]
    body = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            body += event.data
            continue
        assert isinstance(event, h11.EndOfMessage), event
        break
    assert client.their_state is (h11.DONE if keep else h11.MUST_CLOSE)
    return response, body


def assert_same_client_bytes(fast_wire: bytes, head: ResponseHead, body: bytes, keep: bool) -> None:
    """The fast lane's client bytes say what build_client_response + body say.

    Freedoms: the backend's own `Connection: keep-alive` stays in place on a keep-alive client connection
    (upstream_simple's docstring), and Content-Length is forwarded as received (leading zeros, OWS).
    """
    mode, _ = response_framing(head, b"GET", b"1.1")
    assert mode == 1
    full_wire = build_client_response(head, mode, keep) + body
    fast_line, fast_fields, fast_body = split_head(fast_wire)
    full_line, full_fields, full_body = split_head(full_wire)
    assert fast_line == full_line, (fast_wire[:200], full_wire[:200])
    assert fast_body == full_body == body

    def norm(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [(n, b"%d" % int(v)) if n == b"content-length" else (n, v) for n, v in lower(fields)]

    fast_norm, full_norm = norm(fast_fields), norm(full_fields)
    connection = [v.lower() for n, v in fast_norm if n == b"connection"]
    if keep:
        assert connection in ([], [b"keep-alive"]), fast_wire[:300]
        fast_norm = [f for f in fast_norm if f[0] != b"connection"]
    else:
        assert connection == [b"close"], fast_wire[:300]
    assert Counter(fast_norm) == Counter(full_norm), (fast_wire[:300], full_wire[:300])
    framing = (b"content-length", b"connection")
    assert [f for f in fast_fields if f[0].lower() not in framing] == \
           [f for f in full_fields if f[0].lower() not in framing]
    response, seen = h11_client_parses(fast_wire, keep)
    assert response.status_code == head.status and seen == body


def check_response(reads: list[bytes]) -> tuple[tuple[tuple[int, int, int], bool] | None, bool]:
    """The response properties for reads of one response: ((found, reusable) when the fast lane took it, else
    None; whether the full path completed the response)."""
    full = full_response(reads)
    events, error, full_conn = full
    first = fast_response(reads, keep=True)
    if first is None:
        conn = ClientConn(Limits())
        assert conn.feed_simple(reads[0]) is None
        assert response_outcome(full_response(reads, conn)) == response_outcome(full)  # nothing consumed
        return None, full_conn.complete
    found, _, complete, reusable = first
    kinds = [k for k, _ in events]
    assert kinds[:1] == [EV_HEAD] and kinds[-1:] == [EV_END] and set(kinds[1:-1]) <= {EV_BODY}, (kinds, error)
    head = events[0][1]
    assert isinstance(head, ResponseHead)
    body = b"".join(p for k, p in events if k == EV_BODY)
    assert (found[0], found[2]) == (head.status, head.content_length)
    assert len(body) == head.content_length
    # the full path's error may only be surplus bytes after the complete response (hardening item 20)
    assert error is None or (full_conn.complete and not full_conn.reusable), error
    assert complete is full_conn.complete is True
    assert reusable is full_conn.reusable
    for keep in (True, False):
        fast = fast_response(reads, keep)
        assert fast is not None
        assert_same_client_bytes(fast[1], head, body, keep)
    return (found, reusable), True


# --- 1. examples: plain --------------------------------------------------------------------------------------

WRK = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
BROWSER = req(
    b"/static/app.js?v=3&lang=en", b"Host: shop.example.com", b"Connection: keep-alive",
    b'sec-ch-ua: "Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"', b"sec-ch-ua-mobile: ?0",
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    b'sec-ch-ua-platform: "Linux"', b"Accept: */*", b"Sec-Fetch-Site: same-origin", b"Sec-Fetch-Mode: no-cors",
    b"Sec-Fetch-Dest: script", b"Referer: https://shop.example.com/", b"Upgrade-Insecure-Requests: 1",
    b"Accept-Encoding: gzip, deflate, br, zstd", b"Accept-Language: en-GB,en;q=0.9",
    b"Cookie: _ga=GA1.1.12345.67890; _gid=GA1.1.555; session_id=a_b_c", b"If-None-Match: W/\"abc_1\"")


def test_wrk_get_is_plain() -> None:
    assert simple_request(WRK, L) == (b"/", b"127.0.0.1:8080", b"Host: 127.0.0.1:8080\r\n")
    head, _ = check_request(WRK)
    assert head is not None and head.host == b"127.0.0.1" and (head.path, head.query) == (b"/", b"")


def test_browser_get_is_plain_and_forwards_its_fields_as_received() -> None:
    head, _ = check_request(BROWSER)
    assert head is not None
    assert head.host == b"shop.example.com" and (head.path, head.query) == (b"/static/app.js", b"?v=3&lang=en")
    received = BROWSER[BROWSER.index(b"\r\n") + 2: -2]
    assert head.raw_fields == received.replace(b"Connection: keep-alive\r\n", b"")  # only the hop-by-hop line goes
    assert b"Cookie: _ga=GA1.1.12345.67890; _gid=GA1.1.555; session_id=a_b_c\r\n" in upstream(head, False)


@pytest.mark.parametrize("name", NEAR_MISS)
def test_names_that_only_start_like_a_special_field_stay_plain(name: str) -> None:
    data = req(b"/", b"Host: a", name.encode() + b": 1")
    assert check_request(data)[0] is not None


@pytest.mark.parametrize("line", [b"Connection: keep-alive", b"connection: Keep-Alive", b"CONNECTION:KEEP-ALIVE",
                                  b"Connection: \t keep-alive", b"Connection:keep-alive"])
def test_connection_keep_alive_is_dropped(line: bytes) -> None:
    data = req(b"/a", b"X-A: 1", line, b"Host: a", b"X-B: 2")
    head, _ = check_request(data)
    assert head is not None and head.raw_fields == b"X-A: 1\r\nHost: a\r\nX-B: 2\r\n"


@pytest.mark.parametrize("data", [
    req(b"/a/./b/../c//d?x=%zz&y=/..", b"Host: A.Example.COM.:8443"),
    req(b"/%41%7e%2F", b"hOsT:   a  "),
    req(b"/", b"Host:"),
    req(b"/", b"Host: [2001:db8::1]:8080", b"X-Obs: \x80\xff"),
    req(b"/q?\"{}|^`<>[]", b"Host: a"),
], ids=["dot-segments", "percent", "empty-host", "ipv6-obs-text", "unusual-target-chars"])
def test_plain_with_normalisation(data: bytes) -> None:
    assert check_request(data)[0] is not None


def test_exactly_100_fields_is_plain_101_is_not() -> None:
    fields = [b"Host: a", *(b"X-F%d: v" % i for i in range(MAX_HEADER_COUNT - 1))]
    assert check_request(req(b"/", *fields))[0] is not None
    assert check_request(req(b"/", *fields, b"X-Last: v"))[0] is None


# --- 1. examples: not plain, one reason each -----------------------------------------------------------------

def _not_plain_requests() -> list[Any]:
    cases: list[Any] = []
    for name, value in SPECIAL_REQUEST.items():
        for case_id, spelled in casings(name):
            cases.append(pytest.param(req(b"/", b"Host: a", b"%s: %s" % (spelled.encode(), value.encode())),
                                      id=f"{name}-{case_id}"))
    big = b"X-Big: " + b"v" * (L.plain_bytes - 40)
    cases += [pytest.param(data, id=reason) for reason, data in [
        ("second Host", req(b"/", b"Host: a", b"X-A: 1", b"host: a")),
        ("second Host other value", req(b"/", b"Host: a", b"Host: b")),
        ("no Host", req(b"/", b"X-A: 1")),
        ("no fields", req(b"/")),
        ("Connection close", req(b"/", b"Host: a", b"Connection: close")),
        ("Connection keep-alive, upgrade", req(b"/", b"Host: a", b"Connection: keep-alive, upgrade")),
        ("Connection upgrade", req(b"/", b"Host: a", b"Connection: Upgrade")),
        ("Connection naming a field", req(b"/", b"Host: a", b"Connection: keep-alive, X-Secret", b"X-Secret: s")),
        ("Connection keep-alive twice", req(b"/", b"Host: a", b"Connection: keep-alive", b"Connection: keep-alive")),
        ("Connection keep-alive trailing OWS", req(b"/", b"Host: a", b"Connection: keep-alive ")),
        ("underscore in name", req(b"/", b"Host: a", b"X_Secret: 1")),
        ("underscore at name start", req(b"/", b"Host: a", b"_x: 1")),
        ("POST", req(b"/", b"Host: a", method=b"POST")),
        ("HEAD", req(b"/", b"Host: a", method=b"HEAD")),
        ("lower-case get", req(b"/", b"Host: a", method=b"get")),
        ("HTTP/1.0", req(b"/", b"Host: a", version=b"HTTP/1.0")),
        ("absolute-form", req(b"http://a/x", b"Host: a")),
        ("asterisk-form", req(b"*", b"Host: a")),
        ("body after the head", req(b"/", b"Host: a", body=b"hello")),
        ("pipelined request", req(b"/", b"Host: a", body=req(b"/2", b"Host: a"))),
        ("pipelined fragment", req(b"/", b"Host: a", body=b"G")),
        ("incomplete head", req(b"/", b"Host: a")[:-2]),
        ("request line only", b"GET / HTTP/1.1\r\n"),
        ("over 8 KiB", req(b"/", b"Host: a", big, b"X-More: " + b"w" * 60)),
        ("101 fields", req(b"/", b"Host: a", *(b"X-F%d: v" % i for i in range(MAX_HEADER_COUNT)))),
    ]]
    return cases


@pytest.mark.parametrize("data", _not_plain_requests())
def test_not_plain_request(data: bytes) -> None:
    assert simple_request(data, L) is None
    assert check_request(data)[0] is None


def test_head_split_across_reads_is_not_plain() -> None:
    data = req(b"/", b"Host: a", b"X-A: 1")
    for cut in range(1, len(data)):
        conn = ServerConn(Limits())
        assert conn.feed_simple(data[:cut]) is None
        events, error = conn.feed(data[:cut])
        assert (events, error) == ([], None)
        assert conn.feed_simple(data[cut:]) is None  # the rest of a head is no plain read either
        events, error = conn.feed(data[cut:])
        assert error is None and [k for k, _ in events] == [EV_HEAD, EV_END]


def test_not_plain_after_a_plain_request_on_the_same_connection() -> None:
    """A plain GET leaves the connection at a message boundary for both lanes."""
    conn = ServerConn(Limits())
    assert conn.feed_simple(WRK) is not None
    post = req(b"/up", b"Host: a", b"Content-Length: 3", method=b"POST", body=b"abc")
    assert conn.feed_simple(post) is None
    events, error = conn.feed(post)
    assert error is None and [k for k, _ in events] == [EV_HEAD, EV_BODY, EV_END]
    assert conn.feed_simple(WRK) is not None


_RESPONSE_OK = b"Content-Length: 1"


def _not_plain_responses() -> list[Any]:
    cases: list[Any] = []
    for name, value in SPECIAL_RESPONSE.items():
        for case_id, spelled in casings(name):
            cases.append(pytest.param(resp(_RESPONSE_OK, b"%s: %s" % (spelled.encode(), value.encode()), body=b"x"),
                                      id=f"{name}-{case_id}"))
    cases += [pytest.param(data, id=reason) for reason, data in [
        ("100", resp(status=b"100 Continue") + resp(_RESPONSE_OK, body=b"x")),
        ("101", resp(b"Connection: upgrade", b"Upgrade: websocket", status=b"101 Switching Protocols")),
        ("103", resp(b"Link: </a.css>", status=b"103 Early Hints") + resp(_RESPONSE_OK, body=b"x")),
        ("204", resp(status=b"204 No Content")),
        ("204 with Content-Length", resp(b"Content-Length: 0", status=b"204 No Content")),
        ("304", resp(b"Content-Length: 10", status=b"304 Not Modified")),
        ("600", resp(_RESPONSE_OK, status=b"600 Odd", body=b"x")),
        ("HTTP/1.0", resp(_RESPONSE_OK, version=b"HTTP/1.0", body=b"x")),
        ("HTTP/1.0 keep-alive", resp(_RESPONSE_OK, b"Connection: keep-alive", version=b"HTTP/1.0", body=b"x")),
        ("chunked", resp(b"Transfer-Encoding: chunked", body=b"1\r\nx\r\n0\r\n\r\n")),
        ("no Content-Length", resp(b"Content-Type: text/plain", body=b"x")),
        ("Content-Length +1", resp(b"Content-Length: +1", body=b"x")),
        ("Content-Length -1", resp(b"Content-Length: -1", body=b"x")),
        ("Content-Length with inner space", resp(b"Content-Length: 1 0", body=b"x" * 10)),
        ("Content-Length list", resp(b"Content-Length: 1, 1", body=b"x")),
        ("Content-Length hex", resp(b"Content-Length: 0x1", body=b"x")),
        ("Content-Length underscore", resp(b"Content-Length: 1_0", body=b"x" * 10)),
        ("Content-Length 19 digits", resp(b"Content-Length: 0000000000000000001", body=b"x")),
        ("Content-Length empty", resp(b"Content-Length: ", body=b"")),
        ("Connection close", resp(_RESPONSE_OK, b"Connection: close", body=b"x")),
        ("Connection keep-alive, upgrade", resp(_RESPONSE_OK, b"Connection: keep-alive, upgrade", body=b"x")),
        ("Connection naming a field", resp(_RESPONSE_OK, b"Connection: X-Secret", b"X-Secret: s", body=b"x")),
        ("Connection keep-alive trailing OWS", resp(_RESPONSE_OK, b"Connection: keep-alive\t", body=b"x")),
        ("no reason phrase", b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx"),
        ("incomplete head", resp(_RESPONSE_OK)[:-2]),
        ("status line only", b"HTTP/1.1 200 OK\r\n"),
        ("101 fields", resp(_RESPONSE_OK, *(b"X-F%d: v" % i for i in range(MAX_HEADER_COUNT)), body=b"x")),
        ("head over 64 KiB", resp(_RESPONSE_OK, *(b"X-F%d: %s" % (i, b"v" * 1000) for i in range(70)), body=b"x")),
    ]]
    return cases


@pytest.mark.parametrize("data", _not_plain_responses())
def test_not_plain_response(data: bytes) -> None:
    assert simple_response(data, L) is None
    assert check_response([data])[0] is None


@pytest.mark.parametrize("data", [
    resp(b"Content-Length: 5", b"Content-Type: text/html", b"Set-Cookie: a=1", b"Set-Cookie: b=2", body=b"hello"),
    resp(b"date: x", b"Connection: keep-alive", b"CONTENT-LENGTH: 5", body=b"hello"),
    resp(b"Connection:Keep-Alive", b"Content-Length:\t 005 \t", status=b"404 Not Found", body=b"hello"),
    resp(b"Content-Length: 0", b"X-Odd_Name: ok", status=b"599 Whatever It Is", body=b""),
    resp(b"Content-Length: 1", b"Upgrade-Insecure: 1", b"Trailers: no", b"Tea: 1", body=b"x"),
    resp(b"Content-Length: 1", b"X-Obs: \x80\xff", status=b"200 \x80K", body=b"x"),
], ids=["set-cookies", "keep-alive", "cl-leading-zeros", "599-empty-body", "near-miss-names", "obs-text"])
def test_plain_response(data: bytes) -> None:
    result, _ = check_response([data])
    assert result is not None and result[1] is True


def test_plain_response_with_surplus_and_split_body() -> None:
    data = resp(b"Content-Length: 5", body=b"hello")
    found = (200, len(data) - 9, 5)
    assert check_response([data + b"junk"]) == ((found, False), True)
    assert check_response([data[:-3], data[-3:]]) == ((found, True), True)
    assert check_response([data[:-3], data[-3:] + b"X"]) == ((found, False), True)


# --- 2. malformed: what only llhttp (or the full path) refuses ------------------------------------------------

BAD_REQUESTS = [pytest.param(data, id=reason) for reason, data in [
    ("bare LF", b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n"),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n"),
    # llhttp ends a version-less (HTTP/0.9) request line at a bare LF and takes the rest of the line as a field
    ("bare LF in request line", b"GET /a\nX: HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("bare LF in request line smuggling a Host",
     b"GET /x\nHost: admin.internal HTTP/1.1\r\nHost: public.example\r\n\r\n"),
    ("bare LF in request line smuggling X-Forwarded-For",
     b"GET /\nX-Forwarded-For: 6.6.6.6 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("bare CR in request line", b"GET /a\rX: HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  2\r\n\r\n"),
    ("obs-fold tab", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n"),
    ("space in name", b"GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n"),
    ("space before colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n"),
    ("space before Host colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    ("empty name", b"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n"),
    ("line without colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"),
    ("control char in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x01\r\n\r\n"),
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x00\r\n\r\n"),
    ("DEL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x7f\r\n\r\n"),
    ("control char in target", b"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("obs-text in target", b"GET /a\x80 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("tab in target", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("space in target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("fragment in target", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("backslash in path", b"GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("bad escape in path", b"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("dot-dot above root", b"GET /../a HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("bad Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    ("bad Host port", b"GET / HTTP/1.1\r\nHost: a:http\r\n\r\n"),
    # hardening item 5: one SP before the version; the full path refuses the rest (server_conn)
    ("two spaces before HTTP/1.1", b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("three spaces after a path", b"GET /a   HTTP/1.1\r\nHost: a\r\n\r\n"),
]]


@pytest.mark.parametrize("data", BAD_REQUESTS)
def test_malformed_request_takes_the_full_path(data: bytes) -> None:
    fresh_events, fresh_error, _ = full_request(data)
    assert fresh_error is not None and fresh_error.status_hint == 400
    conn = ServerConn(Limits())
    assert conn.feed_simple(data) is None, f"fast lane took a request the full path refuses: {data!r}"
    events, error, _ = full_request(data, conn)
    assert error is not None and error.status_hint == fresh_error.status_hint
    assert request_outcome(events, error) == request_outcome(fresh_events, fresh_error)


def test_plain_parser_recovers_after_an_objection() -> None:
    """llhttp objecting on the fast lane's parser leaves no trace: the next plain read is judged afresh."""
    for bad in (b"GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n", b"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"):
        conn = ServerConn(Limits())
        assert conn.feed_simple(bad) is None
        assert conn.feed_simple(WRK) is not None  # (a real proxy answers 400 first; the lane itself is clean)


def test_plain_response_parser_recovers_after_an_objection() -> None:
    conn = ClientConn(Limits())
    assert conn.feed_simple(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX A: 1\r\n\r\nx") is None
    good = resp(b"Content-Length: 2", body=b"ok")
    assert conn.feed_simple(good) == (200, len(good) - 6, 2) and conn.remaining == 0 and conn.reusable


BAD_RESPONSES = [pytest.param(data, id=reason) for reason, data in [
    ("bare LF", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: 1\n\r\nx"),
    ("bare LF after the status line", b"HTTP/1.1 200 OK\nX: y\r\nContent-Length: 1\r\n\r\nx"),
    ("bare CR after the status line", b"HTTP/1.1 200 OK\rX: y\r\nContent-Length: 1\r\n\r\nx"),
    ("bare LF before the blank line", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\n\r\n\r\nx"),
    ("bare CR", b"HTTP/1.1 200 OK\r\nX-A: 1\rContent-Length: 1\r\n\r\nx"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: 1\r\n 2\r\n\r\nx"),
    ("space in name", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX A: 1\r\n\r\nx"),
    ("space before colon", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A : 1\r\n\r\nx"),
    ("empty name", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n: 1\r\n\r\nx"),
    ("line without colon", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nNoColon\r\n\r\nx"),
    ("control char in value", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: \x01\r\n\r\nx"),
    ("NUL in value", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: a\x00b\r\n\r\nx"),
    ("duplicate Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
    ("conflicting Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nx"),
    ("Content-Length and a bad one", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: x\r\n\r\nx"),
]]


@pytest.mark.parametrize("data", BAD_RESPONSES)
def test_malformed_response_takes_the_full_path(data: bytes) -> None:
    fresh = full_response([data])
    assert fresh[1] is not None and fresh[1].status_hint == 502
    conn = ClientConn(Limits())
    assert conn.feed_simple(data) is None, f"fast lane took a response the full path refuses: {data!r}"
    assert response_outcome(full_response([data], conn)) == response_outcome(fresh)


def test_empty_reason_phrase_keeps_the_status_line() -> None:
    """`HTTP/1.1 200 \\r\\n` is valid; whatever the lane, the client must get the full path's status line."""
    data = b"HTTP/1.1 299 \r\nContent-Length: 1\r\n\r\nx"
    events, error, _ = full_response([data])
    assert error is None
    head = events[0][1]
    full_line = build_client_response(head, 1, True).split(b"\r\n", 1)[0]
    fast = fast_response([data], keep=True)
    if fast is not None:
        assert fast[1].split(b"\r\n", 1)[0] == full_line


# --- 3. hypothesis: generated near-plain messages ----------------------------------------------------------

TCHAR = string.ascii_letters + string.digits + "-!#$%&'*+.^`|~"
VALUE_BYTES = bytes([*range(0x21, 0x7F), 0x20, 0x09, 0x80, 0xE9, 0xFF])
OWS = st.sampled_from([b"", b"", b" ", b" ", b"  ", b"\t", b" \t "])


def chars(alphabet: str | bytes, min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[bytes]:
    """Bytes from `alphabet`: one binary draw mapped through a table (per-character draws make the
    composite strategies below several times slower)."""
    alpha = alphabet.encode() if isinstance(alphabet, str) else alphabet
    table = bytes(alpha[i % len(alpha)] for i in range(256))
    return st.binary(min_size=min_size, max_size=max_size).map(lambda b: b.translate(table))


def _is_reserved(name: bytes) -> bool:
    n = name.lower()
    return n.decode() in _RESERVED or n.startswith(b"x-forwarded-") or b"_" in n


@st.composite
def recased(draw: st.DrawFn, text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    flips = draw(st.integers(0, (1 << len(raw)) - 1))
    return bytes(c ^ 0x20 if (flips >> i) & 1 and chr(c).isalpha() else c for i, c in enumerate(raw))


field_names = st.one_of(
    st.sampled_from([n.encode() for n in NEAR_MISS]),
    st.sampled_from([b"Accept", b"Cookie", b"User-Agent", b"Cache-Control", b"If-None-Match", b"Authorization"]),
    chars(TCHAR, 1, 12),
).filter(lambda n: not _is_reserved(n)).flatmap(recased)
inner_values = chars(VALUE_BYTES, 0, 30).map(lambda v: v.strip(b" \t"))
field_lines = st.builds(lambda n, a, v, b: n + b":" + a + v + b, field_names, OWS, inner_values, OWS)

PCHAR = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"
segments = st.one_of(
    chars(PCHAR, 0, 8),
    st.sampled_from([b".", b"..", b"", b"%41", b"%7e", b"%2F", b"%2e", b"%2E%2E", b"a%20b", b"%zz", b"%", b"%00",
                     b"a_b"]),
    chars(PCHAR + "\"{}|^`<>[]", 1, 4),
)
queries = st.one_of(st.just(b""), chars(PCHAR + "/?%\"{}|^`", 0, 14).map(b"?".__add__))
targets = st.builds(lambda segs, q: b"/" + b"/".join(segs) + q, st.lists(segments, max_size=5), queries)
labels = chars(string.ascii_letters + string.digits, 1, 8)
_good_hosts = st.builds(lambda ls, dot, port: b".".join(ls) + dot + port, st.lists(labels, min_size=1, max_size=3),
                        st.sampled_from([b"", b"", b"."]),
                        st.one_of(st.just(b""), st.just(b":"), st.integers(0, 99999).map(lambda p: b":%d" % p)))
host_values = st.builds(lambda a, h, b: a + h + b, OWS, st.one_of(
    _good_hosts, _good_hosts, _good_hosts, st.sampled_from([b"", b"[::1]", b"[2001:DB8::1]:8080"]),
    st.sampled_from([b"a b", b"a/b", b"a:x", b"[::1", b"a,b", b"a..b", b"a:123456"]),
), OWS)

REQUEST_REASONS = ["special field", "second Host", "no Host", "Connection not keep-alive", "two Connection",
                   "underscore name", "method", "HTTP/1.0", "absolute-form", "body", "pipelined", "incomplete",
                   "over 8 KiB", "over 100 fields"]


@st.composite
def request_cases(draw: st.DrawFn, reason: str | None) -> bytes:
    """One read: a GET from the grammar above, carrying the disqualifier `reason` (None: plain if valid)."""
    method, version, target = b"GET", b"HTTP/1.1", draw(targets)
    lines = draw(st.lists(field_lines, max_size=12))
    host_line = draw(recased("Host")) + b":" + draw(host_values)

    def insert(line: bytes) -> None:
        lines.insert(draw(st.integers(0, len(lines))), line)

    insert(host_line)
    if draw(st.booleans()):
        insert(draw(recased("Connection")) + b":" + draw(st.sampled_from([b"", b" ", b"\t "])) +
               draw(recased("keep-alive")))
    tail = b""
    if reason == "special field":
        name = draw(st.sampled_from(sorted(SPECIAL_REQUEST)))
        insert(draw(recased(name)) + b": " + SPECIAL_REQUEST[name].encode())
    elif reason == "second Host":
        insert(draw(recased("Host")) + b":" + draw(host_values))
    elif reason == "no Host":
        lines.remove(host_line)
    elif reason == "Connection not keep-alive":
        value = draw(st.sampled_from(["close", "keep-alive, upgrade", "upgrade", "keep-alive, close", "x-a",
                                      "keep-alive,keep-alive", "keep-alive ", "", "keep-alive, X-Secret"]))
        insert(draw(recased("Connection")) + b": " + draw(recased(value)))
    elif reason == "two Connection":
        insert(b"Connection: keep-alive")
        insert(draw(recased("Connection")) + b": " + draw(recased("keep-alive")))
    elif reason == "underscore name":
        name = draw(chars(TCHAR + "_", 0, 6)) + b"_" + draw(chars(TCHAR + "_", 0, 6))
        insert(name + b": " + draw(inner_values))
    elif reason == "method":
        method = draw(st.sampled_from([b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"get", b"GETX"]))
    elif reason == "HTTP/1.0":
        version = b"HTTP/1.0"
    elif reason == "absolute-form":
        target = draw(st.sampled_from([b"http://a", b"https://a.example:8443", b"HTTP://b"])) + target
    elif reason == "body":
        tail = draw(st.binary(min_size=1, max_size=20))
    elif reason == "pipelined":
        tail = req(draw(targets), b"Host: a")[: draw(st.integers(1, 40))]
    elif reason == "over 8 KiB":
        size = sum(len(x) + 2 for x in lines) + len(target) + 20
        fill = max(L.plain_bytes - size, 0) + draw(st.integers(1, 64))
        insert(b"X-Fill: " + b"f" * min(fill, L.field_line_bytes - 20))
        if fill > L.field_line_bytes - 20:
            insert(b"X-Fill2: " + b"f" * (fill - L.field_line_bytes + 40))
    elif reason == "over 100 fields":
        for i in range(MAX_HEADER_COUNT + 1 - len(lines)):
            insert(b"X-N%d: %d" % (i, i))
    data = req(target, *lines, method=method, version=version) + tail
    if reason == "incomplete":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


@HYPO
@given(request_cases(None))
def test_plain_request_equivalence(data: bytes) -> None:
    fast, error = check_request(data)
    event("fast lane" if fast is not None else f"full path: {error}")
    # a plain GET the full path takes without complaint must take the fast lane (else the lane is too narrow
    # to matter, and a lane that takes nothing would pass every other property)
    assert fast is not None or error is not None, f"plain request not on the fast lane: {data[:300]!r}"


@pytest.mark.parametrize("reason", REQUEST_REASONS)
@HYPO_REASON
@given(data=st.data())
def test_disqualified_request_equivalence(reason: str, data: st.DataObject) -> None:
    raw = data.draw(request_cases(reason))
    fast, _ = check_request(raw)
    assert fast is None, f"{reason}: {raw[:300]!r}"


@HYPO_SMALL
@given(st.sampled_from([" ", " ", "  ", "\t", " \t"]), st.sampled_from([" ", "  ", "\t", " \t"]), targets)
@example(" ", "  ", b"/")  # the minimal case found (report: the lane takes it, the full path answers 400)
def test_request_line_whitespace(before: str, after: str, target: bytes) -> None:
    """Hardening item 5: one SP on either side of the target, else the full path refuses and so must the lane."""
    data = b"GET" + before.encode() + target + after.encode() + b"HTTP/1.1\r\nHost: a\r\n\r\n"
    check_request(data)


@HYPO_SMALL
@given(targets, st.sampled_from([b"\n", b"\r", b"\r\n", b"\t", b"\x0b", b"\x0c", b"\x00", b"\x7f", b"\x80", b" ", b"#",
                                 b"\\"]),
       st.sampled_from([b"", b"a", b"X:", b"X: v", b"Host: b", b"X-Forwarded-For: 6.6.6.6", b"Content-Length: 0"]))
@example(b"/", b"\n", b"X: v")  # the minimal case found: llhttp reads an HTTP/0.9 line ending at the LF
def test_request_target_with_odd_bytes(target: bytes, odd: bytes, rest: bytes) -> None:
    """Bytes llhttp reads as the end of a request line (or refuses) inside the target: both lanes agree."""
    check_request(b"GET " + target + odd + rest + b" HTTP/1.1\r\nHost: a\r\n\r\n")


@HYPO_SMALL
@given(st.lists(st.one_of(
    st.tuples(st.just("plain"), st.integers(0, 2), targets),
    st.tuples(st.just("post"), st.integers(0, 2), st.binary(max_size=20)),
    st.tuples(st.just("forwarded"), st.integers(0, 2), targets),
    st.tuples(st.just("odd target"), st.integers(0, 2),
              st.tuples(targets, st.sampled_from([b"\x01", b"\x7f", b"\x80", b"\t", b"#", b"\\", b"%zz"]))),
), min_size=1, max_size=6))
def test_one_connection_many_requests(reqs: list[tuple[str, int, Any]]) -> None:
    """Both lanes on one connection, with repeated field lines (the lane's memo): each read answered as on a
    fresh connection."""
    field_sets = [[b"Host: a.example", b"Connection: keep-alive"], [b"User-Agent: x", b"host: B:81"],
                  [b"Host: c", b"Cookie: _a=1", b"Accept: */*"]]
    conn = ServerConn(Limits())
    for kind, which, extra in reqs:
        fields = field_sets[which]
        if kind == "plain":
            data = req(extra, *fields)
        elif kind == "odd target":  # bytes only llhttp refuses: the memo of these field lines must not skip it
            data = req(extra[0] + extra[1], *fields)
        elif kind == "post":
            data = req(b"/post", *fields, b"Content-Length: %d" % len(extra), method=b"POST", body=extra)
        else:
            data = req(extra, *fields, b"X-Forwarded-For: 198.51.100.9")
        fresh = ServerConn(Limits())
        expected_fast = fresh.feed_simple(data)
        got = conn.feed_simple(data)
        if expected_fast is None:
            assert got is None
            expected = request_outcome(*full_request(data)[:2])
            events, error = conn.feed(data)
            assert request_outcome(events, error) == expected
            if error is not None:
                return
        else:
            assert got is not None and request_key(got) == request_key(expected_fast)
            assert got.raw_fields == expected_fast.raw_fields
            check_request(data)


# request lines of anything a client might send before field lines the connection repeats: the memo's own
# shortcut (ServerConn.feed_simple, "the same field lines") must answer exactly as a fresh connection does
request_line_bytes = st.binary(max_size=24).map(
    lambda b: bytes(b"/aZ09-._~%2F?=&:@+!$'()*,; \t\r\n\x00\x7f\x80#\\HTP1"[x % 38] for x in b))
request_lines = st.one_of(
    st.builds(lambda t: b"GET " + t + b" HTTP/1.1", targets),
    st.builds(lambda t: b"GET /" + t + b" HTTP/1.1", request_line_bytes),
    st.builds(lambda t, v: b"GET /" + t + v, request_line_bytes,
              st.sampled_from([b" HTTP/1.0", b"  HTTP/1.1", b" HTTP/1.1 ", b"HTTP/1.1", b" http/1.1", b""])),
    st.builds(lambda m, t: m + b" /" + t + b" HTTP/1.1", st.sampled_from([b"HEAD", b"GET/", b"POST", b"GETX"]),
              request_line_bytes),
)


@HYPO
@given(st.sampled_from([[b"Host: a.example", b"Connection: keep-alive"], [b"User-Agent: x", b"host: B:81"],
                        [b"Host: c", b"Cookie: _a=1", b"Accept: */*"]]), st.lists(request_lines, min_size=1,
                                                                                   max_size=4))
@example([b"Host: a"], [b"GET / HTTP/1.1", b"GET /a//b HTTP/1.1", b"GET /a/./b?x HTTP/1.1", b"GET /%41 HTTP/1.1"])
def test_repeated_field_lines_change_no_answer(fields: list[bytes], lines: list[bytes]) -> None:
    """After a plain request, a read ending in the same field lines is answered from the memo of them (only
    its request line is looked at): every such read gets the head a fresh connection gives it, or None."""
    tail = b"".join(b"\r\n" + f for f in fields) + b"\r\n\r\n"
    conn = ServerConn(Limits())
    first = conn.feed_simple(b"GET /first HTTP/1.1" + tail)
    assert first is not None
    for line in lines:
        data = line + tail
        expected = ServerConn(Limits()).feed_simple(data)
        got = conn.feed_simple(data)
        if expected is None:
            assert got is None, data
            return  # the full path takes it from here (test_one_connection_many_requests)
        assert got is not None, data
        assert request_key(got) == request_key(expected) and got.raw_fields == expected.raw_fields, data


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1" + b"\n" * 9000, b"GET / HTTP/1.1\x00", b"GET / HTTP/1.1\r\n\r\n\r\n", b"GET / HTTP/1.1",
])
def test_a_fresh_connection_has_no_field_lines_to_repeat(data: bytes) -> None:
    """Before any plain request the memo matches nothing: a request line with no Host is never plain."""
    assert ServerConn(Limits()).feed_simple(data) is None


PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}
STATUSES = [200, 200, 200, 201, 203, 206, 226, 299, 301, 302, 307, 400, 404, 418, 429, 500, 502, 503, 599]
reason_phrases = st.one_of(
    st.just(None),  # the standard phrase
    chars(bytes([*range(0x21, 0x7F), 0x20, 0x09, 0x80]), 1, 16).filter(lambda r: r.strip(b" \t") != b""),
)
_RESPONSE_RESERVED = {b"content-length", b"connection"} | {s.lower().encode() for s in SPECIAL_RESPONSE}
response_field_names = st.one_of(
    st.sampled_from([b"Content-Type", b"Set-Cookie", b"ETag", b"Cache-Control", b"Vary", b"Date", b"Server", b"Tea",
                     b"Trailers", b"Upgrade-Insecure", b"Keep-Alive-Timeout", b"Connection-Id", b"Content-Language",
                     b"X_Underscore"]),
    chars(TCHAR + "_", 1, 12),
).filter(lambda n: n.lower() not in _RESPONSE_RESERVED)
response_field_lines = st.builds(lambda n, a, v, b: n + b":" + a + v + b, response_field_names.flatmap(recased),
                                 OWS, inner_values, OWS)
RESPONSE_REASONS = ["special field", "status", "HTTP/1.0", "chunked", "no Content-Length", "bad Content-Length",
                    "Connection not keep-alive", "two Content-Length", "incomplete head", "over 100 fields"]


@st.composite
def response_cases(draw: st.DrawFn, reason: str | None) -> list[bytes]:
    """Reads of one response carrying the disqualifier `reason` (None: plain if valid); bodies of any length,
    split or not, sometimes followed by surplus bytes in the read that ends the body."""
    status = draw(st.sampled_from(STATUSES))
    phrase = draw(reason_phrases)
    version = b"HTTP/1.1"
    body = draw(st.binary(max_size=300))
    lines = draw(st.lists(response_field_lines, max_size=10))

    def insert(line: bytes) -> None:
        lines.insert(draw(st.integers(0, len(lines))), line)

    cl_value = b"0" * draw(st.integers(0, 3)) + b"%d" % len(body)
    cl_line = draw(recased("Content-Length")) + b":" + draw(OWS) + cl_value + draw(OWS)
    insert(cl_line)
    if draw(st.booleans()):
        insert(draw(recased("Connection")) + b":" + draw(st.sampled_from([b"", b" ", b" \t"])) +
               draw(recased("keep-alive")))
    if reason == "special field":
        name = draw(st.sampled_from(sorted(SPECIAL_RESPONSE)))
        insert(draw(recased(name)) + b": " + SPECIAL_RESPONSE[name].encode())
    elif reason == "status":
        status = draw(st.sampled_from([100, 101, 102, 103, 199, 204, 304, 600, 999]))
    elif reason == "HTTP/1.0":
        version = b"HTTP/1.0"
    elif reason == "chunked":
        lines.remove(cl_line)
        insert(draw(recased("Transfer-Encoding")) + b": chunked")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    elif reason == "no Content-Length":
        lines.remove(cl_line)
    elif reason == "bad Content-Length":
        lines.remove(cl_line)
        bad = draw(st.sampled_from([b"+%d", b"-%d", b"%d ,%d", b"%d %d", b"0x%d", b"%d_0", b"%d.0", b"", b"1e%d"]))
        insert(b"Content-Length: " + bad.replace(b"%d", b"%d" % len(body)))
    elif reason == "Connection not keep-alive":
        value = draw(st.sampled_from(["close", "keep-alive, upgrade", "upgrade", "x-a", "keep-alive ", "",
                                      "keep-alive, close", "Keep-Alive, X-Secret"]))
        insert(draw(recased("Connection")) + b": " + draw(recased(value)))
    elif reason == "two Content-Length":
        insert(b"Content-Length: %d" % len(body))
    elif reason == "over 100 fields":
        for i in range(MAX_HEADER_COUNT + 1 - len(lines)):
            insert(b"X-N%d: %d" % (i, i))
    if phrase is None:
        phrase = PHRASES.get(status, b"X")
    head = resp(*lines, status=b"%d %s" % (status, phrase), version=version)
    surplus = draw(st.one_of(st.just(b""), st.just(b""), st.binary(min_size=1, max_size=30)
                             .filter(lambda s: s[:1] not in (b"\r", b"\n")),
                             st.just(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")))
    if reason == "incomplete head":
        cut = draw(st.integers(1, len(head) - 1))
        return [head[:cut], head[cut:] + body]
    k = draw(st.integers(0, len(body)))
    if k == len(body):
        return [head + body + surplus]
    return [head + body[:k], body[k:] + surplus]


@HYPO
@given(response_cases(None))
def test_plain_response_equivalence(reads: list[bytes]) -> None:
    found, complete = check_response(reads)
    event("fast lane" if found is not None else "full path")
    assert found is not None or not complete, f"plain response not on the fast lane: {reads!r}"


@pytest.mark.parametrize("reason", RESPONSE_REASONS)
@HYPO_REASON
@given(data=st.data())
def test_disqualified_response_equivalence(reason: str, data: st.DataObject) -> None:
    reads = data.draw(response_cases(reason))
    found, _ = check_response(reads)
    assert found is None, f"{reason}: {reads!r}"


@HYPO_SMALL
@given(st.lists(st.tuples(st.sampled_from(["plain", "chunked", "304", "204"]), st.binary(max_size=40),
                          st.integers(0, 40)), min_size=1, max_size=6))
def test_one_backend_connection_many_responses(resps: list[tuple[str, bytes, int]]) -> None:
    """Plain and full-path responses in turn on one backend connection: each parsed as on a fresh one."""
    conn = ClientConn(Limits())
    for kind, body, cut in resps:
        if kind == "plain":
            data = resp(b"Content-Length: %d" % len(body), b"Connection: keep-alive", body=body)
        elif kind == "chunked":
            data = resp(b"Transfer-Encoding: chunked", body=b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
                        if body else b"0\r\n\r\n")
        else:
            data = resp(b"ETag: \"x\"", status=b"304 Not Modified" if kind == "304" else b"204 No Content")
        reads = [data[:len(data) - min(cut, len(body))], data[len(data) - min(cut, len(body)):]]
        reads = [r for r in reads if r]
        fast = fast_response(reads, True, conn)
        if kind == "plain":
            assert fast is not None and fast[1] == data and fast[2] and fast[3]
        else:
            assert fast is None
            events, error, _ = full_response(reads, conn)
            assert error is None and conn.complete and conn.reusable
            assert b"".join(p for k, p in events if k == EV_BODY) == (body if kind == "chunked" else b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(TARGET_CHARS[x % len(TARGET_CHARS)] for x in b)))
def test_llhttp_accepts_any_target_of_target_chars(tail: bytes) -> None:
    """ServerConn.feed_simple skips the llhttp re-check for a repeated head whose target uses only TARGET_CHARS:
    sound only while llhttp accepts every such target as an HTTP/1.1 GET."""
    done = []

    class Sink:
        def on_message_complete(self) -> None:
            done.append(1)

    parser = httptools.HttpRequestParser(Sink())
    parser.feed_data(b"GET /" + tail + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert done == [1] and parser.get_http_version() == "1.1"


# --- 4. the worker's memo of plain response heads (ClientConn `heads`) -------------------------------------

def test_a_repeated_response_head_is_remembered_for_every_backend_connection() -> None:
    heads = PlainHeads()
    data = resp(b"Date: Fri, 27 Nov 2026 09:00:00 GMT", b"Content-Length: 5", b"Connection: keep-alive",
                body=b"hello")
    expected = ((200, len(data) - 9, 5), data, True, True)
    assert fast_response([data], True, ClientConn(Limits(), heads)) == expected
    assert heads.known == {data[:-5]: (200, 5)} and heads.misses == 1
    assert fast_response([data[:-2], data[-2:]], True, ClientConn(Limits(), heads)) == expected
    assert fast_response([data + b"junk"], True, ClientConn(Limits(), heads)) == (expected[0], data, True, False)


def test_the_last_head_is_tried_first_and_keys_by_one_object() -> None:
    """The head of the last response is compared before any slice or hash; a hit on it hands out the very
    bytes object the memo holds (FieldHeads then finds its hash cached); another head goes through the dict."""
    heads = PlainHeads()
    a = resp(b"Date: Fri, 27 Nov 2026 09:00:00 GMT", b"Content-Length: 2", body=b"ab")
    b = resp(b"Date: Fri, 27 Nov 2026 09:00:01 GMT", b"Content-Length: 3", body=b"abc")
    first, second, third = (ClientConn(Limits(), heads) for _ in range(3))
    assert first.feed_simple(a) == (200, len(a) - 6, 2)
    assert heads.last_key is first.head_key and heads.last == (200, 2)
    assert second.feed_simple(a + b"surplus") == (200, len(a) - 6, 2) and second.head_key is first.head_key
    assert second.remaining == -7 and not second.reusable
    assert third.feed_simple(b) == (200, len(b) - 7, 3) and heads.last_key == b[:-3]
    assert first.feed_simple(a[:-1]) == (200, len(a) - 6, 2) and first.remaining == 1  # from the dict again
    assert heads.last_key is first.head_key and heads.hits == 2 and heads.misses == 2
    assert third.feed_simple(a[:-6] + b"X" + a[-6:]) is None  # the last head's bytes, then more field bytes


def test_remembered_heads_leave_the_plain_parser_at_a_message_boundary() -> None:
    """A remembered head and its body reach no parser; a new head and its body reach the plain parser. After
    any mix of both, llhttp still judges the next head from its first byte."""
    heads = PlainHeads()
    known = resp(b"Content-Length: 5", body=b"hello")
    assert ClientConn(Limits(), heads).feed_simple(known) is not None
    conn = ClientConn(Limits(), heads)
    for data in (resp(b"Content-Length: 3", b"X: 1", body=b"abc"), known, resp(b"Content-Length: 2", body=b"ok")):
        reads = [data[:-1], data[-1:]]
        fresh = fast_response(reads, True, ClientConn(Limits()))
        assert fresh is not None and fresh[1:] == (data, True, True)
        assert fast_response(reads, True, conn) == fresh
    assert len(heads.known) == 3
    # llhttp refuses this head; a parser left inside a body would have taken it as body bytes
    assert conn.feed_simple(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX A: 1\r\n\r\nx") is None


def test_the_memo_of_heads_is_bounded() -> None:
    heads = PlainHeads()
    conn = ClientConn(Limits(), heads)
    for i in range(PLAIN_HEADS_MAX + 10):
        assert conn.feed_simple(resp(b"X-N: %d" % i, b"Content-Length: 0")) is not None
        assert len(heads.known) <= PLAIN_HEADS_MAX
    before = len(heads.known)
    long_head = resp(b"X-Long: " + b"v" * PLAIN_HEAD_MAX_BYTES, b"Content-Length: 0")
    assert conn.feed_simple(long_head) is not None and conn.reusable
    assert len(heads.known) == before  # checked every time, never remembered


@HYPO_SMALL
@given(st.lists(st.sampled_from([None, None, "chunked", "bad Content-Length", "Connection not keep-alive"])
                .flatmap(response_cases), min_size=1, max_size=3),
       st.lists(st.integers(0, 2), min_size=1, max_size=8))
def test_the_memo_never_changes_an_answer(pool: list[list[bytes]], order: list[int]) -> None:
    """Responses repeated on one backend connection with a shared memo: each answered as on a fresh connection
    with an empty memo."""
    heads = PlainHeads()
    conn = ClientConn(Limits(), heads)
    for i in order:
        reads = pool[i % len(pool)]
        expected = fast_response(reads, True, ClientConn(Limits()))
        assert fast_response(reads, True, conn) == expected
        if expected is not None and not (expected[2] and expected[3]):
            return  # surplus bytes or a short body: the proxy never reuses this connection
        if expected is not None:
            event("remembered" if reads[0][:reads[0].find(b"\r\n\r\n") + 4] in heads.known else "new")


def test_the_memo_pauses_when_heads_do_not_repeat_and_tries_again() -> None:
    heads = PlainHeads()
    conn = ClientConn(Limits(), heads)
    repeated = resp(b"Content-Length: 0")
    for i in range(MEMO_WINDOW - 1):  # one head in three repeats: worth remembering
        data = repeated if i % 3 == 0 else resp(b"X-Id: %d" % i, b"Content-Length: 0")
        assert conn.feed_simple(data) is not None
    assert conn.feed_simple(resp(b"X-Id: last", b"Content-Length: 0")) is not None
    assert heads.paused == 0 and heads.hits == heads.misses == 0  # the window was judged: kept on
    for i in range(MEMO_WINDOW):  # every head unique: each lookup is a miss
        assert conn.feed_simple(resp(b"X-Id: u%d" % i, b"Content-Length: 0")) is not None
    assert heads.paused == MEMO_PAUSE and not heads.known
    for _ in range(MEMO_PAUSE):  # paused: checked in full, not remembered, not looked up
        assert conn.feed_simple(repeated) == (200, len(repeated) - 4, 0)
    assert heads.paused == 0 and not heads.known and heads.hits == 0
    assert conn.feed_simple(repeated) is not None and conn.feed_simple(repeated) is not None
    assert heads.hits == 1 and repeated in heads.known  # remembering again
