"""ServerConn, the downstream HTTP/1.1 core: h11 writes the requests, hypothesis splits the bytes.

Oracle: what h11's CLIENT side sent (method, target, fields, body) is what ServerConn must report,
however the byte stream is cut into reads. Statuses follow docs http1-hardening items 3, 5-12.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from workers.http1.errors import RemoteProtocolError
from workers.http1.limits import (
    MAX_CHUNK_LINE_BYTES,
    MAX_FIELD_LINE_BYTES,
    MAX_HEAD_BYTES,
    MAX_HEADER_COUNT,
    MAX_REQUEST_LINE_BYTES,
    MAX_TRAILER_BYTES,
    Limits,
)
from workers.http1.request_head import RequestHead
from workers.http1.server_conn import EV_BODY, EV_END, EV_HEAD, EV_UPGRADE, ServerConn
from workers.http1.states import ConnState

# the fields the core interprets or owns; every other field is end-to-end and forwarded as received
SPECIAL = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
                     b"proxy-connection", b"te", b"trailer", b"upgrade", b"http2-settings", b"expect",
                     b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
                     b"x-real-ip", b"x-request-id"})
VALID = b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n"
# no shrinking: shrinking these composite streams takes minutes while the core has a bug (the suite must stay
# under 20 s); the deterministic tests below each pin a minimal input instead
HYPO = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                report_multiple_bugs=False, phases=(Phase.explicit, Phase.reuse, Phase.generate))


# --- helpers -------------------------------------------------------------------------------------------------

def h11_request(method: str, target: str, headers: Sequence[tuple[str, str]], parts: Iterable[bytes] = ()
                ) -> tuple[h11.Request, bytes]:
    """The bytes h11's client writes for one request (framing from the CL/TE in `headers`)."""
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method=method, target=target, headers=list(headers))
    out = [conn.send(request)]
    out += [conn.send(h11.Data(data=p)) for p in parts]
    out.append(conn.send(h11.EndOfMessage()))
    return request, b"".join(x for x in out if x)


def head_key(h: RequestHead) -> tuple[Any, ...]:
    return (h.method, h.target, h.path, h.query, h.version, h.host, h.host_header, tuple(h.fields),
            tuple(sorted(h.forwarded.items())), h.content_length, h.chunked, h.keep_alive, h.expect_continue,
            h.upgrade, h.connection_tokens)


def summarize(events: Iterable[tuple[int, object]]) -> list[tuple[Any, ...]]:
    """Events with heads as comparable tuples and consecutive body pieces concatenated."""
    out: list[tuple[Any, ...]] = []
    for kind, payload in events:
        if kind == EV_HEAD:
            assert isinstance(payload, RequestHead)
            out.append(("head", head_key(payload)))
        elif kind == EV_BODY:
            assert isinstance(payload, bytes | bytearray | memoryview) and len(payload) > 0
            if out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + bytes(payload))
            else:
                out.append(("body", bytes(payload)))
        elif kind == EV_END:
            assert payload is None
            out.append(("end",))
        else:
            assert kind == EV_UPGRADE and isinstance(payload, bytes)
            out.append(("upgrade", payload))
    return out


def feed_chunks(conn: ServerConn, chunks: Iterable[bytes]
                ) -> tuple[list[tuple[int, object]], RemoteProtocolError | None]:
    """Feed reads in order; after an error, every further read must give nothing (ERROR is final)."""
    events: list[tuple[int, object]] = []
    error = None
    for chunk in chunks:
        got, err = conn.feed(chunk)
        if error is not None:
            assert (got, err) == ([], None), "input accepted after an error"
            assert conn.state is ConnState.ERROR
            continue
        events += got
        if err is not None:
            error = err
            assert conn.state is ConnState.ERROR
    return events, error


def parse(data: bytes, limits: Limits | None = None) -> tuple[list[tuple[Any, ...]], RemoteProtocolError | None,
                                                               ServerConn]:
    conn = ServerConn(limits or Limits())
    events, error = feed_chunks(conn, [data])
    return summarize(events), error, conn


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def assert_final_error(data: bytes, status: int, limits: Limits | None = None) -> RemoteProtocolError:
    """`data` is refused with `status`, in one read and byte by byte alike; then nothing more is parsed."""
    results = []
    for chunks in ([data], bytewise(data)):
        conn = ServerConn(limits or Limits())
        events, error = feed_chunks(conn, chunks)
        assert error is not None, f"accepted: {data[:120]!r}"
        assert error.status_hint == status, (str(error), data[:120])
        assert conn.state is ConnState.ERROR
        assert conn.feed(VALID) == ([], None)
        assert conn.feed(b"garbage\r\n\r\n") == ([], None)
        results.append((summarize(events), error.status_hint))
    assert results[0] == results[1], "a byte-by-byte feed gave other events than one read"
    assert error is not None
    return error


def simple(target: bytes = b"/", *fields: bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1",
           body: bytes = b"") -> bytes:
    return b"%s %s %s\r\n%s\r\n%s" % (method, target, version, b"".join(f + b"\r\n" for f in fields), body)


# --- hypothesis strategies: requests h11 can write -----------------------------------------------------------

VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
names = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=10).map(lambda s: "X-" + s)
field_values = st.text(VCHAR + " \t", max_size=24).map(lambda s: s.strip(" \t"))
fields_st = st.lists(st.tuples(st.one_of(names, names, names.map(lambda s: s + "_u")), field_values), max_size=5)
segments = st.lists(st.text(string.ascii_letters + string.digits + "-_~", min_size=1, max_size=8), max_size=4)
queries = st.one_of(st.just(""), st.text(string.ascii_letters + string.digits + "=&-/", max_size=12).map("?".__add__))
labels = st.text(string.ascii_letters + string.digits, min_size=1, max_size=8)
hosts = st.tuples(st.lists(labels, min_size=1, max_size=3).map(".".join),
                  st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")))
parts_st = st.lists(st.binary(min_size=1, max_size=40), max_size=3)
bodies: st.SearchStrategy[tuple[str, list[bytes]]] = st.one_of(
    st.just(("none", [])), parts_st.map(lambda p: ("cl", p)), parts_st.map(lambda p: ("chunked", p)))


@st.composite
def requests(draw: st.DrawFn, may_close: bool = False) -> tuple[bytes, list[tuple[Any, ...]]]:
    """(bytes h11 wrote, the events ServerConn must give for them), computed from what h11 sent."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    target = "/" + "/".join(draw(segments)) + draw(queries)
    hostname, port = draw(hosts)
    headers = [("Host", hostname + port), *draw(fields_st)]
    xff = draw(st.one_of(st.none(), st.just("192.0.2.1, 198.51.100.7")))
    if xff:
        headers.append(("X-Forwarded-For", xff))
    mode, parts = draw(bodies)
    if mode == "cl":
        headers.append(("Content-Length", str(sum(map(len, parts)))))
    elif mode == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
    close = may_close and draw(st.booleans())
    if close:
        headers.append(("Connection", "close"))
    headers = draw(st.permutations(headers))
    request, data = h11_request(method, target, headers, parts)

    sent = request.headers.raw_items()
    path, _, query = request.target.partition(b"?")
    head = (request.method, request.target, path, b"?" + query if _ else b"", b"1.1", hostname.lower().encode(),
            (hostname + port).encode(),
            tuple((n, v) for n, v in sent if n.lower() not in SPECIAL and b"_" not in n),
            ((b"x-forwarded-for", xff.encode()),) if xff else (),
            sum(map(len, parts)) if mode == "cl" else -1, mode == "chunked", not close, False, b"",
            (b"close",) if close else ())
    expected: list[tuple[Any, ...]] = [("head", head)]
    if parts:
        expected.append(("body", b"".join(parts)))
    expected.append(("end",))
    return data, expected


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[Any, ...]]]:
    """One to four pipelined requests; only the last may carry Connection: close."""
    n = draw(st.integers(1, 4))
    reqs = [draw(requests(may_close=i == n - 1)) for i in range(n)]
    return b"".join(r[0] for r in reqs), [e for r in reqs for e in r[1]]


# --- h11 as the oracle ---------------------------------------------------------------------------------------

@HYPO
@given(requests(may_close=True))
def test_h11_requests_parse_as_sent(req: tuple[bytes, list[tuple[Any, ...]]]) -> None:
    data, expected = req
    events, error, conn = parse(data)
    assert error is None
    assert events == expected
    closed = expected[0][1][11] is False
    assert conn.state is (ConnState.MUST_CLOSE if closed else ConnState.IDLE)


@HYPO
@given(streams(), st.data())
def test_any_split_gives_the_same_events(stream: tuple[bytes, list[tuple[Any, ...]]], data: st.DataObject) -> None:
    raw, expected = stream
    whole, error, _ = parse(raw)
    assert error is None
    assert whole == expected
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    events, error = feed_chunks(ServerConn(Limits()), split(raw, cuts))
    assert error is None
    assert summarize(events) == expected


def test_examples_from_h11() -> None:
    _, data = h11_request("POST", "/a/b?x=1&y", [("Host", "Example.COM:8080"), ("X-A", "1"), ("x-b", "two  words"),
                                                   ("X-A", "3"), ("Content-Length", "5")], [b"he", b"llo"])
    events, error, conn = parse(data)
    assert error is None and conn.state is ConnState.IDLE
    head = events[0][1]
    assert head[:7] == (b"POST", b"/a/b?x=1&y", b"/a/b", b"?x=1&y", b"1.1", b"example.com", b"Example.COM:8080")
    assert head[7] == ((b"X-A", b"1"), (b"x-b", b"two  words"), (b"X-A", b"3"))
    assert head[9:12] == (5, False, True)
    assert events[1:] == [("body", b"hello"), ("end",)]


def test_bodies_larger_than_a_head_slice_then_a_pipelined_request() -> None:
    """A 60 KiB body (larger than HEAD_FEED_SLICE and than any head window) followed by a request."""
    big = bytes(range(256)) * 240
    _, first = h11_request("POST", "/upload", [("Host", "a"), ("Content-Length", str(len(big)))], [big])
    _, second = h11_request("GET", "/after", [("Host", "a")])
    raw = first + second
    for chunks in ([raw], split(raw, range(0, len(raw), 3000)), split(raw, [len(first) - 1]),
                   split(raw, [len(first) - 100, len(first) + 5])):
        events, error = feed_chunks(ServerConn(Limits()), chunks)
        assert error is None, (str(error), [len(c) for c in chunks])
        got = summarize(events)
        assert [e[0] for e in got] == ["head", "body", "end", "head", "end"]
        assert got[1][1] == big and got[3][1][1] == b"/after"


def test_request_after_a_body_that_ended_in_an_earlier_read() -> None:
    """The smallest form of the split property: the next request line arrives in the read that ends a body."""
    first = simple(b"/one", b"Host: a", b"Content-Length: 2", method=b"POST")
    for chunks in ([first, b"ab" + VALID], [first + b"a", b"b" + VALID], [first + b"ab" + VALID]):
        events, error = feed_chunks(ServerConn(Limits()), chunks)
        assert error is None, (str(error), chunks)
        assert [e[0] for e in summarize(events)] == ["head", "body", "end", "head", "end"]


# --- head limits (hardening item 12): the status, then ERROR whatever follows --------------------------------

def oversized(kind: str) -> tuple[bytes, int]:
    if kind == "request_line":
        return simple(b"/" + b"a" * MAX_REQUEST_LINE_BYTES, b"Host: a"), 414
    if kind == "field_line":
        return simple(b"/", b"Host: a", b"X-Big: " + b"v" * MAX_FIELD_LINE_BYTES), 431
    if kind == "field_count":
        return simple(b"/", b"Host: a", *(b"X-F%d: v" % i for i in range(MAX_HEADER_COUNT))), 431
    # a head over 32 KiB made of fields each within the line limit, fewer than the count limit
    n = MAX_HEAD_BYTES // 900 + 2
    return simple(b"/", b"Host: a", *(b"X-F%d: %s" % (i, b"v" * 900) for i in range(n))), 431


PREFIXES = [
    h11_request("GET", "/p1", [("Host", "a")])[1],
    h11_request("POST", "/p2", [("Host", "a"), ("Content-Length", "5000")], [b"x" * 5000])[1],
    h11_request("POST", "/p3", [("Host", "a"), ("Transfer-Encoding", "chunked")], [b"y" * 300, b"z" * 7])[1],
]


@pytest.mark.parametrize("kind", ["request_line", "field_line", "field_count", "head"])
def test_oversized_head_in_one_read(kind: str) -> None:
    data, status = oversized(kind)
    events, error, conn = parse(data + VALID)
    assert error is not None and error.status_hint == status, str(error)
    assert events == [] and conn.state is ConnState.ERROR
    assert conn.feed(VALID) == ([], None)


@HYPO
@given(st.sampled_from(["request_line", "field_line", "field_count", "head"]),
       st.lists(st.sampled_from(PREFIXES), max_size=2), st.data())
def test_oversized_head_any_split_any_prefix(kind: str, prefix: list[bytes], data: st.DataObject) -> None:
    bad, status = oversized(kind)
    raw = b"".join(prefix) + bad
    expected, error, _ = parse(b"".join(prefix))
    assert error is None
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    conn = ServerConn(Limits())
    events, error = feed_chunks(conn, [*split(raw, cuts), VALID, bad])
    assert error is not None and error.status_hint == status, (str(error), [len(c) for c in split(raw, cuts)])
    assert summarize(events) == expected
    assert conn.state is ConnState.ERROR


def test_head_limits_are_inclusive() -> None:
    exactly = simple(b"/", b"Host: a", *(b"X-F%d: v" % i for i in range(MAX_HEADER_COUNT - 1)))
    events, error, _ = parse(exactly)
    assert error is None and len(events[0][1][7]) == MAX_HEADER_COUNT - 1
    long_field = simple(b"/", b"Host: a", b"X-Big: " + b"v" * (MAX_FIELD_LINE_BYTES - 100))
    assert parse(long_field)[1] is None
    long_target = simple(b"/" + b"a" * (MAX_REQUEST_LINE_BYTES - 100), b"Host: a")
    assert parse(long_target)[1] is None


# --- item 3: parser errors and their statuses ----------------------------------------------------------------

@pytest.mark.parametrize(("data", "status"), [
    (simple(method=b"FOO"), 501),  # a token, just not a method llhttp knows
    (simple(method=b"get"), 501),
    (simple(method=b"G@T"), 400),  # not a token at all
    (simple(method=b"G\x01T"), 400),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),  # a TLS ClientHello on the plain port
    (b"\r\n\r\nG\x01T / HTTP/1.1\r\n\r\n", 400),  # empty lines before a request line are ignored
])
def test_bad_method_token(data: bytes, status: int) -> None:
    assert_final_error(data, status)


@pytest.mark.parametrize(("version", "status"), [
    (b"HTTP/2.0", 505), (b"HTTP/3.0", 505), (b"HTTP/1.2", 400), (b"HTTP/0.9", 400), (b"RTSP/1.0", 400),
    (b"ICE/1.0", 400), (b"HTTP/1", 400), (b"http/1.1", 400),
])
def test_versions(version: bytes, status: int) -> None:
    assert_final_error(simple(b"/", b"Host: a", version=version), status)


def test_http_0_9_request_line() -> None:
    assert_final_error(b"GET /\r\n\r\n", 400)


def test_http_1_0_is_accepted_and_closes() -> None:
    events, error, conn = parse(simple(b"/x", b"Host: a", version=b"HTTP/1.0"))
    assert error is None and conn.state is ConnState.MUST_CLOSE
    assert events[0][1][4] == b"1.0" and events[0][1][11] is False


# --- item 6: method policy -----------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [simple(b"example.com:443", b"Host: example.com:443", method=b"CONNECT"),
                                  simple(b"/", b"Host: a", method=b"TRACE")])
def test_connect_and_trace_are_refused(data: bytes) -> None:
    assert_final_error(data, 405)


# --- item 7: request-target ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [b"*", b"a/b", b"ftp://a/b", b"http://user@b.example/x",
                                    b"https://u:p@b.example/", b"http:///x"])
def test_non_origin_targets(target: bytes) -> None:
    assert_final_error(simple(target, b"Host: a"), 400)


@pytest.mark.parametrize(("target", "host", "host_header", "path", "query"), [
    (b"http://B.Example:8080/x?y=1", b"b.example", b"B.Example:8080", b"/x", b"?y=1"),
    (b"https://b.example/", b"b.example", b"b.example", b"/", b""),
    (b"http://b.example", b"b.example", b"b.example", b"/", b""),
    (b"HTTP://b.example?q", b"b.example", b"b.example", b"/", b"?q"),
])
def test_absolute_form_replaces_host(target: bytes, host: bytes, host_header: bytes, path: bytes,
                                     query: bytes) -> None:
    events, error, _ = parse(simple(target, b"Host: other.example"))
    assert error is None
    head = events[0][1]
    assert (head[5], head[6], head[2], head[3]) == (host, host_header, path, query)


@pytest.mark.parametrize("target", [b"/a#frag", b"/a\\b", b"/a%zz", b"/a%4", b"/a%00b", b"/..", b"/../a",
                                    b"/a/../../b", b"/%2e%2e/x"])
def test_unsafe_paths(target: bytes) -> None:
    assert_final_error(simple(target, b"Host: a"), 400)


@pytest.mark.parametrize(("target", "path", "query"), [
    (b"/a/%2e%2e/b/./c//d%41", b"/b/c/dA", b""),
    (b"/a%2fb%5C?x=%2e", b"/a%2Fb%5C", b"?x=%2e"),
    (b"/a/b/..?q", b"/a/", b"?q"),
    (b"//a//b", b"/a/b", b""),
])
def test_paths_are_normalised_and_the_target_kept(target: bytes, path: bytes, query: bytes) -> None:
    events, error, _ = parse(simple(target, b"Host: a"))
    assert error is None
    assert events[0][1][1:4] == (target, path, query)


# --- item 8: Host --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    simple(b"/", b"Host: a", b"Host: a"),
    simple(b"/", b"Host: a", b"host: b"),
    simple(b"/"),
    simple(b"/", version=b"HTTP/1.0"),
    simple(b"/", b"Host: a b"),
    simple(b"/", b"Host: a:x"),
    simple(b"/", b"Host: a:123456"),
    simple(b"/", b"Host: [::1"),
    simple(b"/", b"Host: [zz::1]"),
    simple(b"/", b"Host: a/b"),
    simple(b"/", b"Host: user@a"),
])
def test_bad_host(data: bytes) -> None:
    assert_final_error(data, 400)


@pytest.mark.parametrize(("value", "host"), [(b"EXAMPLE.com:80 \t", b"example.com"), (b"a.example.", b"a.example"),
                                             (b"[::1]:8443", b"[::1]"), (b"192.0.2.1", b"192.0.2.1")])
def test_host_normalised(value: bytes, host: bytes) -> None:
    events, error, _ = parse(simple(b"/", b"Host: " + value))
    assert error is None and events[0][1][5] == host


# --- item 9: framing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "status"), [
    ((b"Transfer-Encoding: chunked", b"Content-Length: 3"), 400),
    ((b"Content-Length: 3", b"Transfer-Encoding: chunked"), 400),
    ((b"Transfer-Encoding: gzip",), 501),
    ((b"Transfer-Encoding: gzip, chunked",), 501),
    ((b"Transfer-Encoding: identity",), 501),
    ((b"Transfer-Encoding: chunked, chunked",), 400),
    ((b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400),
    ((b"Content-Length: +3",), 400),
    ((b"Content-Length: 3x",), 400),
    ((b"Content-Length: 3, 3",), 400),
    ((b"Content-Length: -1",), 400),
    ((b"Content-Length: 3", b"Content-Length: 3"), 400),
    ((b"Content-Length: 99999999999999999999999",), 400),
])
def test_bad_framing(fields: tuple[bytes, ...], status: int) -> None:
    assert_final_error(simple(b"/", b"Host: a", *fields, method=b"POST", body=b"abc"), status)


def test_transfer_encoding_in_http_1_0() -> None:
    data = simple(b"/", b"Host: a", b"Transfer-Encoding: chunked", method=b"POST", version=b"HTTP/1.0",
                  body=b"3\r\nabc\r\n0\r\n\r\n")
    assert_final_error(data, 400)


def test_content_length_over_the_body_limit_is_413_at_the_head() -> None:
    limits = Limits(body_bytes=10)
    head_only = simple(b"/", b"Host: a", b"Content-Length: 11", method=b"POST")
    events, error, _ = parse(head_only, limits)
    assert error is not None and error.status_hint == 413 and events == []
    assert_final_error(head_only + b"x" * 11, 413, limits)
    events, error, _ = parse(simple(b"/", b"Host: a", b"Content-Length: 10", method=b"POST", body=b"x" * 10), limits)
    assert error is None and events[1:] == [("body", b"x" * 10), ("end",)]


def test_chunked_body_over_the_limit_is_413() -> None:
    data = simple(b"/", b"Host: a", b"Transfer-Encoding: chunked", method=b"POST",
                  body=b"6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n")
    for chunks in ([data], bytewise(data)):
        events, error = feed_chunks(ServerConn(Limits(body_bytes=10)), chunks)
        assert error is not None and error.status_hint == 413
        got = summarize(events)
        assert got[0][0] == "head" and ("end",) not in got
        assert sum(len(e[1]) for e in got if e[0] == "body") <= 10


# --- item 11: Expect -----------------------------------------------------------------------------------------

def test_expect_100_continue() -> None:
    data = simple(b"/", b"Host: a", b"Expect: 100-Continue", b"Content-Length: 2", method=b"PUT")
    events, error, conn = parse(data)
    assert error is None and events[0][1][12] is True and conn.state is ConnState.RECV_BODY
    assert summarize(conn.feed(b"ok")[0]) == [("body", b"ok"), ("end",)]
    events, error, _ = parse(simple(b"/", b"Host: a", b"Expect: 100-continue", b"Content-Length: 0", method=b"PUT",
                                    version=b"HTTP/1.0"))
    assert error is None and events[0][1][12] is False  # HTTP/1.0 clients get no 100


@pytest.mark.parametrize("value", [b"fancy", b"100-continue, fancy", b"200-ok"])
def test_other_expectations_are_417(value: bytes) -> None:
    assert_final_error(simple(b"/", b"Host: a", b"Expect: " + value, b"Content-Length: 0", method=b"PUT"), 417)


# --- item 10: Upgrade ----------------------------------------------------------------------------------------

WS = simple(b"/chat", b"Host: a", b"Connection: keep-alive, Upgrade", b"Upgrade: WebSocket",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13")


def test_websocket_upgrade_gives_the_tail() -> None:
    """Every byte after the head reaches the tunnel, in whatever reads it came (frames sent before the 101).

    EV_UPGRADE carries what came in the head's read; start_tunnel() returns every byte received after the head.
    """
    tail = b"\x81\x05hello" + VALID
    for chunks in ([WS + tail], [WS, tail], split(WS + tail, [len(WS) - 3, len(WS) + 2])):
        conn = ServerConn(Limits())
        events, error = feed_chunks(conn, chunks)
        assert error is None, (str(error), [len(c) for c in chunks])
        assert [k for k, _ in events][:1] == [EV_HEAD]
        assert {k for k, _ in events[1:]} == {EV_UPGRADE}
        assert tail.startswith(b"".join(p for _, p in events[1:] if isinstance(p, bytes)))
        assert conn.start_tunnel() == tail
        assert conn.state is ConnState.TUNNEL
        head = summarize(events[:1])[0][1]
        assert head[13] == b"websocket" and head[14] == (b"keep-alive", b"upgrade")
        assert (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==") in head[7]
        assert all(n.lower() not in (b"upgrade", b"connection") for n, _ in head[7])


def test_websocket_upgrade_tail_after_a_large_read() -> None:
    """The tail is found after a head that ends past the first HEAD_FEED_SLICE bytes of the read."""
    padded = simple(b"/chat", b"Host: a", b"Connection: Upgrade", b"Upgrade: websocket", b"X-Pad: " + b"p" * 5000)
    post = simple(b"/", b"Host: a", b"Content-Length: 5000", method=b"POST", body=b"x" * 5000)
    for raw, kinds in ((padded, ["head", "upgrade"]), (post + WS, ["head", "body", "end", "head", "upgrade"])):
        events, error = feed_chunks(ServerConn(Limits()), [raw + b"TAIL"])
        assert error is None and [e[0] for e in summarize(events)] == kinds
        assert summarize(events)[-1] == ("upgrade", b"TAIL")


def test_websocket_tunnel_takes_no_more_http() -> None:
    conn = ServerConn(Limits())
    conn.feed(WS)
    conn.start_tunnel()
    assert conn.state is ConnState.TUNNEL
    assert conn.feed(VALID) == ([], None)


def test_resume_after_a_refused_upgrade_parses_the_tail() -> None:
    conn = ServerConn(Limits())
    first, error = conn.feed(WS + VALID)
    assert error is None and [k for k, _ in first] == [EV_HEAD, EV_UPGRADE]
    tail = first[1][1]
    assert tail == VALID
    snapshot = list(first)
    events, error = conn.resume(tail)  # type: ignore[arg-type]
    assert error is None
    assert first == snapshot, "resume() appended to the list an earlier feed() returned"
    got = summarize(events)
    assert got[0] == ("end",), "the refused upgrade request is complete: its EV_END comes first"
    assert [e[0] for e in got[1:]] == ["head", "end"] and got[1][1][1] == b"/next"
    assert conn.state is ConnState.IDLE


def test_resume_parses_bytes_that_came_after_the_upgrade() -> None:
    conn = ServerConn(Limits())
    first, _ = conn.feed(WS)
    assert [k for k, _ in first] == [EV_HEAD, EV_UPGRADE] and first[1][1] == b""
    assert conn.feed(VALID[:10]) == ([], None)  # while the backend decides, nothing is parsed
    assert conn.feed(VALID[10:]) == ([], None)
    events, error = conn.resume(b"")
    assert error is None
    got = summarize(events)
    assert [e[0] for e in got] == ["end", "head", "end"] and got[1][1][1] == b"/next"


def test_resume_with_no_tail() -> None:
    conn = ServerConn(Limits())
    conn.feed(WS)
    events, error = conn.resume(b"")
    assert error is None and summarize(events) == [("end",)]
    assert conn.state is ConnState.IDLE
    assert [k for k, _ in conn.feed(VALID)[0]] == [EV_HEAD, EV_END]


@pytest.mark.parametrize("data", [
    simple(b"/", b"Host: a", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAAQ"),
    simple(b"/", b"Host: a", b"Connection: upgrade, keep-alive", b"Upgrade: websocket", version=b"HTTP/1.0"),
    simple(b"/", b"Host: a", b"Connection: upgrade", b"Upgrade: websocket", method=b"OPTIONS"),
    simple(b"/", b"Host: a", b"Connection: keep-alive", b"Upgrade: websocket"),
])
def test_other_upgrades_are_plain_requests(data: bytes) -> None:
    raw = data + VALID
    for chunks in ([raw], bytewise(raw)):
        events, error = feed_chunks(ServerConn(Limits()), chunks)
        assert error is None, str(error)
        got = summarize(events)
        assert [e[0] for e in got] == ["head", "end", "head", "end"]
        head = got[0][1]
        assert head[13] == b""
        assert all(n.lower() not in (b"upgrade", b"http2-settings", b"connection") for n, _ in head[7])
        assert got[2][1][1] == b"/next"


SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n"


@pytest.mark.parametrize("data", [
    simple(b"/", b"Host: a", b"Connection: upgrade", b"Upgrade: websocket", b"Content-Length: 3", body=b"abc"),
    simple(b"/", b"Host: a", b"Connection: upgrade", b"Upgrade: websocket", b"Transfer-Encoding: chunked",
           body=b"3\r\nabc\r\n0\r\n\r\n"),
    simple(b"/", b"Host: a", b"Connection: upgrade", b"Upgrade: h2c", b"Content-Length: %d" % len(SMUGGLED),
           body=SMUGGLED),
    simple(b"/", b"Host: a", b"Connection: upgrade", b"Upgrade: websocket", b"Content-Length: %d" % len(SMUGGLED),
           method=b"POST", body=SMUGGLED),
    simple(b"/", b"Host: a", b"Connection: upgrade", b"Upgrade: foo", b"Transfer-Encoding: chunked", method=b"PUT",
           body=b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)),
])
def test_upgrade_with_a_body_is_400(data: bytes) -> None:
    """Never a plain request whose body is then parsed as the next request (item 10: reject with 400)."""
    conn = ServerConn(Limits())
    events, error = feed_chunks(conn, [data])
    assert error is not None and error.status_hint == 400, (summarize(events), error)
    assert all(h[1][1] != b"/admin" for h in summarize(events) if h[0] == "head")


# --- items 13-15 and 4: fields, underscores, trailers ---------------------------------------------------------

def test_underscored_names_are_dropped_and_values_trimmed() -> None:
    data = simple(b"/", b"Host: a", b"X_Forwarded_For: 6.6.6.6", b"Content_Length: 5", b"X-Ok:  v1 \t",
                  b"X_Other: 1", b"x-ok: v2")
    events, error, _ = parse(data)
    assert error is None
    head = events[0][1]
    assert head[7] == ((b"X-Ok", b"v1"), (b"x-ok", b"v2"))
    assert head[8] == () and head[9] == -1


def test_forwarded_fields_are_set_aside() -> None:
    data = simple(b"/", b"Host: a", b"X-Forwarded-For: 192.0.2.1", b"x-forwarded-for: 192.0.2.2",
                  b"X-Real-IP: 192.0.2.9", b"X-Request-ID: abc", b"X-Forwarded-Proto: https", b"X-Other: 1")
    events, error, _ = parse(data)
    assert error is None
    head = events[0][1]
    assert head[7] == ((b"X-Other", b"1"),)
    assert dict(head[8]) == {b"x-forwarded-for": b"192.0.2.1, 192.0.2.2", b"x-real-ip": b"192.0.2.9",
                             b"x-request-id": b"abc", b"x-forwarded-proto": b"https"}


CHUNKED_POST = simple(b"/", b"Host: a", b"Transfer-Encoding: chunked", method=b"POST")


def test_trailers_are_dropped() -> None:
    raw = CHUNKED_POST + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nHost: evil\r\n\r\n" + VALID
    for chunks in ([raw], bytewise(raw)):
        events, error = feed_chunks(ServerConn(Limits()), chunks)
        assert error is None
        got = summarize(events)
        assert [e[0] for e in got] == ["head", "body", "end", "head", "end"]
        assert got[0][1][7] == () and got[0][1][5] == b"a" and got[1][1] == b"abc"


def test_trailer_section_over_the_limit_is_400() -> None:
    trailer = b"X-T: " + b"y" * MAX_TRAILER_BYTES
    assert_final_error(CHUNKED_POST + b"3\r\nabc\r\n0\r\n" + trailer + b"\r\n\r\n", 400)
    many = b"".join(b"X-T%d: %s\r\n" % (i, b"y" * 1000) for i in range(MAX_TRAILER_BYTES // 1000 + 2))
    assert_final_error(CHUNKED_POST + b"3\r\nabc\r\n0\r\n" + many + b"\r\n", 400)


def test_trailer_section_is_bounded_on_the_wire() -> None:
    """httptools accumulates a trailer value until its line ends: the raw section is bounded at twice the limit."""
    limits = Limits(field_line_bytes=64)  # so at most 128 bytes of trailer section on the wire

    def trailers(n: int) -> bytes:  # 6 n + 2 bytes on the wire; 2 n bytes of names and values
        return CHUNKED_POST + b"3\r\nabc\r\n0\r\n" + b"a: b\r\n" * n + b"\r\n"

    for n in (20, 21):
        for chunks in ([trailers(n)], bytewise(trailers(n))):
            events, error = feed_chunks(ServerConn(limits), chunks)
            assert error is None and summarize(events)[1:] == [("body", b"abc"), ("end",)]
    assert str(assert_final_error(trailers(22), 400, limits)) == "trailer section too large"
    conn = ServerConn(Limits())  # a value that never ends: refused once the section passes the bound
    assert conn.feed(CHUNKED_POST + b"3\r\nabc\r\n0\r\nX-T: ")[1] is None
    sent = len(b"X-T: ")
    while True:
        _, error = conn.feed(b"v" * 1000)
        sent += 1000
        if error is not None:
            break
    assert error.status_hint == 400 and sent - 1000 <= 2 * MAX_FIELD_LINE_BYTES < sent


def test_chunk_line_over_the_limit_is_400() -> None:
    ext = b";ext=" + b"e" * MAX_CHUNK_LINE_BYTES
    assert_final_error(CHUNKED_POST + b"3" + ext + b"\r\nabc\r\n0\r\n\r\n", 400)


def test_chunk_framing_far_over_the_limit_is_400() -> None:
    conn = ServerConn(Limits())
    _, error = conn.feed(CHUNKED_POST)  # the head alone: the body arrives in later reads
    assert error is None
    _, error = conn.feed(b"3;ext=" + b"e" * (4 * MAX_CHUNK_LINE_BYTES) + b"\r\nabc\r\n")
    assert error is not None and error.status_hint == 400 and conn.state is ConnState.ERROR


def test_chunk_extensions_within_the_limit_are_accepted() -> None:
    events, error, _ = parse(CHUNKED_POST + b"3;a=b;c\r\nabc\r\n2;x=\"q\"\r\nde\r\n0\r\n\r\n")
    assert error is None and events[1:] == [("body", b"abcde"), ("end",)]


# --- the chunk-line limit holds per line, however the reads are cut (item 12) ---------------------------------

SMALL_LINE = 24  # a small chunk-line limit keeps the property tests fast; the walk is the same for any limit
CHUNKED_HEAD = parse(CHUNKED_POST + b"0\r\n\r\n")[0][0]
VALID_EVENTS = parse(VALID)[0]


def size_line(size: int, length: int, ext: bool = False) -> bytes:
    """A chunk-size line (CRLF excluded) of exactly `length` bytes: the size zero-padded, or with one extension."""
    digits = b"%x" % size
    if ext and length >= len(digits) + 2:
        return digits + b";" + b"e" * (length - len(digits) - 1)
    return digits.rjust(length, b"0")


def chunked_body(parts: Sequence[bytes], lengths: Sequence[int], exts: Sequence[bool], trailers: bytes = b"") -> bytes:
    """The chunks of `parts` then the last chunk: line i is lengths[i] bytes long (the last chunk's is last)."""
    lines = [size_line(len(p), n, e) for p, n, e in zip([*parts, b""], lengths, exts, strict=True)]
    return b"".join(line + b"\r\n" + p + b"\r\n" for line, p in zip(lines, parts, strict=False)) + (
        lines[-1] + b"\r\n" + trailers + b"\r\n")


chunk_parts = st.lists(st.binary(min_size=1, max_size=60).map(lambda b: b.replace(b"\n", b"\r\n")), max_size=4)


@HYPO
@given(st.lists(requests(), max_size=2), chunk_parts, st.lists(st.booleans(), min_size=5, max_size=5),
       st.sampled_from([b"", b"X-T: 1\r\n"]), st.data())
def test_chunk_lines_at_the_limit_are_accepted_however_split(
        prefix: list[tuple[bytes, list[tuple[Any, ...]]]], parts: list[bytes], exts: list[bool], trailers: bytes,
        data: st.DataObject) -> None:
    """Pipelined after other requests, chunk lines of exactly the limit give the same events in any reads."""
    body = chunked_body(parts, [SMALL_LINE] * (len(parts) + 1), exts[:len(parts) + 1], trailers)
    raw = b"".join(r[0] for r in prefix) + CHUNKED_POST + body + VALID
    expected = [e for r in prefix for e in r[1]] + [CHUNKED_HEAD]
    expected += [("body", b"".join(parts))] if parts else []
    expected += [("end",), *VALID_EVENTS]
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    for chunks in ([raw], split(raw, cuts)):
        events, error = feed_chunks(ServerConn(Limits(chunk_line_bytes=SMALL_LINE)), chunks)
        assert error is None, (str(error), [len(c) for c in chunks])
        assert summarize(events) == expected


@HYPO
@given(st.lists(requests(), max_size=2), chunk_parts, st.lists(st.booleans(), min_size=5, max_size=5),
       st.integers(1, 40), st.data())
def test_one_chunk_line_over_the_limit_is_400_however_split(
        prefix: list[tuple[bytes, list[tuple[Any, ...]]]], parts: list[bytes], exts: list[bool], over: int,
        data: st.DataObject) -> None:
    """One line over the limit among lines at the limit: 400, with the events of the body before that line."""
    bad = data.draw(st.integers(0, len(parts)))  # len(parts): the last chunk's line
    lengths = [SMALL_LINE + over if i == bad else SMALL_LINE for i in range(len(parts) + 1)]
    raw = b"".join(r[0] for r in prefix) + CHUNKED_POST + chunked_body(parts, lengths, exts[:len(parts) + 1]) + VALID
    expected = [e for r in prefix for e in r[1]] + [CHUNKED_HEAD]
    expected += [("body", b"".join(parts[:bad]))] if bad else []
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    for chunks in ([raw], split(raw, cuts)):
        conn = ServerConn(Limits(chunk_line_bytes=SMALL_LINE))
        events, error = feed_chunks(conn, chunks)
        assert error is not None and error.status_hint == 400 and str(error) == "chunk line too long", str(error)
        assert summarize(events) == expected, [len(c) for c in chunks]
        assert conn.state is ConnState.ERROR


def test_chunk_line_limit_is_exact() -> None:
    """Default limit: a line of MAX_CHUNK_LINE_BYTES among other chunks passes, one byte more is a 400."""
    for ext in (False, True):
        ok = CHUNKED_POST + chunked_body([b"x", b"abc", b"yz"], [1, MAX_CHUNK_LINE_BYTES, 3, 1], [ext] * 4)
        bad = CHUNKED_POST + chunked_body([b"x", b"abc", b"yz"], [1, MAX_CHUNK_LINE_BYTES + 1, 3, 1], [ext] * 4)
        for chunks in ([ok], bytewise(ok), split(ok, range(0, len(ok), 1000)), split(ok, range(0, len(ok), 4095))):
            events, error = feed_chunks(ServerConn(Limits()), chunks)
            assert error is None, str(error)
            assert summarize(events) == [CHUNKED_HEAD, ("body", b"xabcyz"), ("end",)]
        for chunks in ([bad], bytewise(bad), split(bad, range(0, len(bad), 1000))):
            events, error = feed_chunks(ServerConn(Limits()), chunks)
            assert error is not None and error.status_hint == 400 and str(error) == "chunk line too long"
            assert summarize(events) == [CHUNKED_HEAD, ("body", b"x")]


def test_an_endless_chunk_line_is_refused_once_past_the_limit() -> None:
    """The 400 does not wait for the line's end: it comes with byte limit + 2 of the line (limit + 1 could be CR)."""
    for piece in (1, 7, 100):
        conn = ServerConn(Limits(chunk_line_bytes=SMALL_LINE))
        assert conn.feed(CHUNKED_POST + b"2\r\nab\r\n")[1] is None
        line = b"3;" + b"e" * (SMALL_LINE + 200)
        sent = 0
        while True:
            events, error = conn.feed(line[sent:sent + piece])
            sent += piece
            if error is not None:
                break
            assert events == [] and sent < SMALL_LINE + 2
        assert error.status_hint == 400 and sent >= SMALL_LINE + 2 > sent - piece


def test_chunk_lines_after_the_head_in_a_large_read_and_at_the_head_seam() -> None:
    """The head is fed in HEAD_FEED_SLICE pieces when the read is large, and may end in any read."""
    padded = simple(b"/", b"Host: a", b"X-Pad: " + b"p" * 5000, b"Transfer-Encoding: chunked", method=b"POST")
    for head in (padded, CHUNKED_POST):
        ok = head + chunked_body([b"abc"], [SMALL_LINE, SMALL_LINE], [True, False]) + VALID
        bad = head + chunked_body([b"abc", b"d"], [SMALL_LINE, SMALL_LINE + 1, 1], [True, False, False])
        for cut in [0, *range(len(head) - 4, len(head) + 2)]:
            events, error = feed_chunks(ServerConn(Limits(chunk_line_bytes=SMALL_LINE)), split(ok, [cut]))
            assert error is None, (str(error), cut)
            assert [e[0] for e in summarize(events)] == ["head", "body", "end", "head", "end"]
            events, error = feed_chunks(ServerConn(Limits(chunk_line_bytes=SMALL_LINE)), split(bad, [cut]))
            assert error is not None and str(error) == "chunk line too long", (str(error), cut)
            assert summarize(events)[1:] == [("body", b"abc")]


def test_chunk_lines_of_a_request_after_trailers_and_empty_lines() -> None:
    """The walk finds the next request after a trailer section, and after the empty lines llhttp skips."""
    first = CHUNKED_POST + b"3\r\nabc\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n\r\n\r\n"
    bad = CHUNKED_POST + chunked_body([b"d"], [SMALL_LINE + 1, 1], [True, False])
    raw = first + bad
    for chunks in ([raw], bytewise(raw), split(raw, [len(first) - 3]), split(raw, [len(first) - 1, len(first) + 1])):
        events, error = feed_chunks(ServerConn(Limits(chunk_line_bytes=SMALL_LINE)), chunks)
        assert error is not None and str(error) == "chunk line too long"
        assert summarize(events) == [CHUNKED_HEAD, ("body", b"abc"), ("end",), CHUNKED_HEAD]


def test_an_earlier_parser_error_stands_before_a_long_chunk_line() -> None:
    """The first problem in the byte stream decides the answer, as it does byte by byte."""
    limits = Limits(body_bytes=10, chunk_line_bytes=SMALL_LINE)
    over_body = chunked_body([b"x" * 16, b"y"], [2, SMALL_LINE + 1, 1], [False, True, False])
    long_first = chunked_body([b"x", b"y" * 16], [SMALL_LINE + 1, 2, 1], [True, False, False])
    bad_size = b"3\r\nabc\r\nzz" + b"e" * (2 * SMALL_LINE) + b"\r\n"
    for body, status in ((over_body, 413), (long_first, 400), (bad_size, 400)):
        data = CHUNKED_POST + body
        for chunks in ([data], bytewise(data)):
            _, error = feed_chunks(ServerConn(limits), chunks)
            assert error is not None and error.status_hint == status, (str(error), body[:40])


# --- item 3: N complete requests, then garbage ---------------------------------------------------------------

GARBAGE = [
    (b"\x16\x03\x01\x00\xa5\x01\x00", 400),  # TLS record
    (b"\x00\x00\x00\x00", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),  # bare CR
    (b"GET / HTTP/1.1\nHost: a\n\n", 400),  # bare LF
    (b"G\x7fT / HTTP/1.1\r\n\r\n", 400),
]


@HYPO
@given(st.lists(requests(), max_size=3), st.sampled_from(GARBAGE), st.data())
def test_pipelined_requests_then_garbage(reqs: list[tuple[bytes, list[tuple[Any, ...]]]],
                                         garbage: tuple[bytes, int], data: st.DataObject) -> None:
    bad, status = garbage
    raw = b"".join(r[0] for r in reqs) + bad
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8))
    conn = ServerConn(Limits())
    events, error = feed_chunks(conn, [*split(raw, cuts), VALID])
    assert error is not None and error.status_hint == status, str(error)
    assert summarize(events) == [e for r in reqs for e in r[1]]
    assert conn.state is ConnState.ERROR


def test_data_after_connection_close_is_not_parsed() -> None:
    """After a request with Connection: close (or HTTP/1.0) no further request is processed (RFC 9112 9.6)."""
    for first in (simple(b"/", b"Host: a", b"Connection: close"), simple(b"/", b"Host: a", version=b"HTTP/1.0")):
        for chunks in ([first + VALID], [first, VALID]):
            conn = ServerConn(Limits())
            events, error = feed_chunks(conn, chunks)
            assert (error, [e[0] for e in summarize(events)]) == (None, ["head", "end"]), [len(c) for c in chunks]
            assert conn.state is ConnState.MUST_CLOSE


def test_bad_chunk_size_after_the_head() -> None:
    data = CHUNKED_POST + b"zz\r\nabc\r\n0\r\n\r\n"
    for chunks in ([data], bytewise(data)):
        events, error = feed_chunks(ServerConn(Limits()), [*chunks, VALID])
        assert error is not None and error.status_hint == 400
        assert [e[0] for e in summarize(events)] == ["head"]
