"""ClientConn, the upstream HTTP/1.1 core: h11's SERVER side writes the responses, hypothesis splits them.

Statuses and framing follow docs http1-hardening items 18-22: anything wrong from a backend is a 502,
and `reusable` is true exactly for a complete, keep-alive, length-delimited response.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from workers.http1.client_conn import ClientConn, ResponseHead
from workers.http1.errors import RemoteProtocolError
from workers.http1.limits import MAX_HEADER_COUNT, MAX_RESPONSE_HEAD_BYTES, Limits
from workers.http1.server_conn import EV_BODY, EV_END, EV_HEAD, EV_UPGRADE

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"trailer",
                        b"upgrade", b"http2-settings", b"content-length"})
GET_11 = b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n"
GET_10 = b"GET / HTTP/1.0\r\n\r\n"
# no shrinking, as in test_server_conn: keeps the suite under 20 s even while the core has a bug
HYPO = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                report_multiple_bugs=False, phases=(Phase.explicit, Phase.reuse, Phase.generate))


def h11_response(events: Sequence[Any], request: bytes = GET_11) -> bytes:
    """The bytes h11's server writes for `events`, answering `request`."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    while not isinstance(conn.next_event(), h11.EndOfMessage):
        pass
    return b"".join(conn.send(e) or b"" for e in events)


def summarize(events: Iterable[tuple[int, object]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for kind, payload in events:
        if kind == EV_HEAD:
            assert isinstance(payload, ResponseHead)
            if payload.status < 200:
                out.append(("info", payload.status, tuple(payload.fields)))
            else:
                out.append(("head", (payload.status, payload.reason, payload.version, tuple(payload.fields),
                                     payload.content_length, payload.chunked, payload.keep_alive)))
        elif kind == EV_BODY:
            assert isinstance(payload, bytes) and payload
            if out and out[-1][0] == "body":
                out[-1] = ("body", out[-1][1] + payload)
            else:
                out.append(("body", payload))
        elif kind == EV_END:
            out.append(("end",))
        else:
            assert kind == EV_UPGRADE
            out.append(("upgrade", payload))
    return out


def feed_chunks(conn: ClientConn, chunks: Iterable[bytes], eof: bool = False
                ) -> tuple[list[tuple[int, object]], RemoteProtocolError | None]:
    events: list[tuple[int, object]] = []
    for chunk in chunks:
        got, error = conn.feed(chunk)
        events += got
        if error is not None:
            return events, error
    if eof:
        got, error = conn.eof()
        events += got
        return events, error
    return events, None


def run(data: bytes | Sequence[bytes], method: bytes = b"GET", eof: bool = False, limits: Limits | None = None
        ) -> tuple[list[tuple[Any, ...]], RemoteProtocolError | None, ClientConn]:
    conn = ClientConn(limits or Limits())
    conn.expect(method)
    events, error = feed_chunks(conn, [data] if isinstance(data, bytes) else data, eof)
    return summarize(events), error, conn


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


# --- hypothesis: responses h11 can write ---------------------------------------------------------------------

VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
names = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=10).map(lambda s: "X-" + s)
values = st.text(VCHAR + " ", max_size=20).map(str.strip)
plain_fields = st.lists(st.tuples(st.one_of(names, st.just("Set-Cookie")), values), max_size=5)
hop_fields = st.lists(st.sampled_from([("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                                       ("Trailer", "X-T"), ("TE", "trailers"), ("HTTP2-Settings", "AAA")]),
                      max_size=2)
parts_st = st.lists(st.binary(min_size=1, max_size=50), max_size=4)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, list[tuple[Any, ...]], bool, bool]:
    """(bytes, expected events, needs eof(), reusable) for a response h11's server writes to a GET."""
    mode = draw(st.sampled_from(["cl", "chunked", "close"]))
    close = mode == "close" or draw(st.booleans())
    status = draw(st.sampled_from([200, 201, 203, 404, 500, 503]))
    reason = draw(st.sampled_from([b"OK", b"", b"Some Reason"]))
    parts = draw(parts_st)
    fields = draw(plain_fields)
    named = draw(st.lists(names, max_size=2, unique=True))  # fields the Connection header names
    tokens = (["close"] if close and mode != "close" else []) + named
    headers = [*fields, *draw(hop_fields), *((n, "dropped") for n in named)]
    if tokens:
        headers.append(("Connection", ", ".join(tokens)))
    if mode == "cl":
        headers.append(("Content-Length", str(sum(map(len, parts)))))
    headers = draw(st.permutations(headers))
    infos = draw(st.lists(st.sampled_from([100, 103]), max_size=2))
    events: list[Any] = [h11.InformationalResponse(status_code=s, headers=[("Link", "</s.css>")] if s == 103 else [])
                         for s in infos]
    response = h11.Response(status_code=status, reason=reason, headers=headers)
    events += [response, *(h11.Data(data=p) for p in parts), h11.EndOfMessage()]
    data = h11_response(events, GET_10 if mode == "close" else GET_11)

    drop = {n.lower().encode() for n in named}
    kept = tuple((n, v) for n, v in response.headers.raw_items() if n.lower() not in HOP_BY_HOP | drop)
    expected: list[tuple[Any, ...]] = [("info", s, ((b"Link", b"</s.css>"),) if s == 103 else ()) for s in infos]
    expected.append(("head", (status, reason, b"1.1", kept, sum(map(len, parts)) if mode == "cl" else -1,
                              mode == "chunked", not close)))
    if parts:
        expected.append(("body", b"".join(parts)))
    expected.append(("end",))
    return data, expected, mode == "close", not close and mode != "close"


@HYPO
@given(responses(), st.data())
def test_h11_responses_any_split(resp: tuple[bytes, list[tuple[Any, ...]], bool, bool], data: st.DataObject) -> None:
    raw, expected, needs_eof, reusable = resp
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    for chunks in ([raw], split(raw, cuts)):
        conn = ClientConn(Limits())
        conn.expect(b"GET")
        events, error = feed_chunks(conn, chunks)
        assert error is None
        got = summarize(events)
        if needs_eof:
            assert ("end",) not in got and not conn.complete
            more, error = conn.eof()
            assert error is None
            got += summarize(more)
        assert got == expected
        assert conn.complete and conn.reusable is reusable
        assert conn.eof() == ([], None)  # the backend closing an idle connection is no error


# --- worked examples -----------------------------------------------------------------------------------------

def test_fields_hop_by_hop_and_set_cookie() -> None:
    raw = h11_response([h11.Response(status_code=200, headers=[
        ("Content-Type", "text/plain"), ("Set-Cookie", "a=1; Path=/"), ("Connection", "keep-alive, X-Secret"),
        ("Keep-Alive", "timeout=5"), ("X-Secret", "s"), ("Set-Cookie", "b=2"), ("Proxy-Connection", "x"),
        ("Trailer", "X-T"), ("Content-Length", "2"), ("Vary", "Accept"), ("x-secret", "t"),
        ("Set-Cookie", "a=3")]), h11.Data(data=b"hi"), h11.EndOfMessage()])
    events, error, conn = run(raw)
    assert error is None
    assert events[0][1][3] == ((b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1; Path=/"),
                               (b"Set-Cookie", b"b=2"), (b"Vary", b"Accept"), (b"Set-Cookie", b"a=3"))
    assert events[1:] == [("body", b"hi"), ("end",)]
    assert conn.reusable


def test_chunked_body_with_extensions_and_trailers() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4;name=value\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n")
    for chunks in ([raw], bytewise(raw)):
        events, error, conn = run(chunks)
        assert error is None
        assert events[1:] == [("body", b"Wikipedia"), ("end",)]
        assert events[0][1][3] == () and conn.reusable


def test_close_delimited_body_completes_at_eof() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    events, error, conn = run(bytewise(raw), eof=True)
    assert error is None
    assert events[1:] == [("body", b"until the end"), ("end",)]
    assert conn.complete and not conn.reusable


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n123",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Le",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"",
])
def test_eof_inside_a_response_is_502(raw: bytes) -> None:
    events, error, conn = run(raw, eof=True)
    assert error is not None and error.status_hint == 502
    assert ("end",) not in events and not conn.reusable


@pytest.mark.parametrize("infos", [[100], [103], [100, 103, 103]])
def test_informational_then_final(infos: list[int]) -> None:
    raw = h11_response([*(h11.InformationalResponse(status_code=s, headers=[("Link", "</a>")]) for s in infos),
                        h11.Response(status_code=200, headers=[("Content-Length", "1")]), h11.Data(data=b"x"),
                        h11.EndOfMessage()])
    for chunks in ([raw], bytewise(raw)):
        events, error, conn = run(chunks)
        assert error is None
        assert [e[:2] for e in events[:-2]] == [*(("info", s) for s in infos), ("head", events[len(infos)][1])]
        assert events[-2:] == [("body", b"x"), ("end",)] and conn.reusable


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
])
def test_informational_with_a_body_is_502(raw: bytes) -> None:
    events, error, conn = run(raw)
    assert error is not None and error.status_hint == 502
    assert [e for e in events if e[0] == "head"] == [] and not conn.reusable


def test_head_response_ends_at_its_head_and_is_not_reused() -> None:
    raw = h11_response([h11.Response(status_code=200, headers=[("Content-Length", "1234"), ("ETag", '"x"')]),
                        h11.EndOfMessage()], b"HEAD / HTTP/1.1\r\nHost: backend\r\n\r\n")
    for chunks in ([raw], bytewise(raw)):
        events, error, conn = run(chunks, method=b"HEAD")
        assert error is None
        assert events == [("head", (200, b"", b"1.1", ((b"ETag", b'"x"'),), 1234, False, True)), ("end",)]
        assert conn.complete and not conn.reusable


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_complete_at_the_head(status: int) -> None:
    headers = [("ETag", '"x"')] + ([("Content-Length", "99")] if status == 304 else [])
    raw = h11_response([h11.Response(status_code=status, headers=headers), h11.EndOfMessage()])
    for chunks in ([raw], bytewise(raw)):
        events, error, conn = run(chunks)
        assert error is None
        assert [e[0] for e in events] == ["head", "end"] and events[0][1][0] == status
        assert conn.complete and conn.reusable


@pytest.mark.parametrize(("first", "junk"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"X"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"junk"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", b"HTTP/1.1"),
])
def test_unsolicited_bytes_after_a_complete_response(first: bytes, junk: bytes) -> None:
    for chunks in ([first + junk], [first, junk]):
        events, error, conn = run(chunks)
        assert error is not None and error.status_hint == 502
        assert events[-1] == ("end",)  # the complete response stands
        assert not conn.reusable


def test_bytes_with_no_request_outstanding() -> None:
    conn = ClientConn(Limits())
    _, error = conn.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert error is not None and error.status_hint == 502 and not conn.reusable


def test_next_response_after_expect_again() -> None:
    conn = ClientConn(Limits())
    for body in (b"one", b"second"):
        conn.expect(b"GET")
        assert not conn.reusable
        events, error = conn.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert error is None and summarize(events)[1:] == [("body", body), ("end",)] and conn.reusable


@pytest.mark.parametrize("how", ["one read", "4 KiB reads", "head line then the rest", "many fields"])
def test_response_head_over_the_limit_is_502(how: str) -> None:
    if how == "many fields":
        raw = b"HTTP/1.1 200 OK\r\n" + b"X-F: v\r\n" * (MAX_HEADER_COUNT + 1) + b"Content-Length: 0\r\n\r\n"
        chunks = [raw]
    else:
        big = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 1000) for i in range(MAX_RESPONSE_HEAD_BYTES // 1000 + 2))
        raw = b"HTTP/1.1 200 OK\r\n" + big + b"Content-Length: 0\r\n\r\n"
        chunks = {"one read": [raw], "4 KiB reads": split(raw, range(0, len(raw), 4096)),
                  "head line then the rest": [raw[:17], raw[17:]]}[how]
    events, error, conn = run(chunks)
    assert error is not None and error.status_hint == 502
    assert events == [] and not conn.reusable


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
])
def test_malformed_responses_are_502(raw: bytes) -> None:
    _, error, conn = run(raw)
    assert error is not None and error.status_hint == 502 and not conn.reusable


@pytest.mark.parametrize(("raw", "method", "eof", "reusable"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", b"GET", False, True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"POST", False, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx", b"GET", False, False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x, Close\r\n\r\n0\r\n\r\n", b"GET", False, False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", b"GET", False, False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx", b"GET", False, True),
    (b"HTTP/1.1 200 OK\r\n\r\nx", b"GET", True, False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", b"HEAD", False, False),
    (b"HTTP/1.1 304 Not Modified\r\n\r\n", b"GET", False, True),
    (b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 1\r\n\r\nx", b"GET", False, True),  # only advertised
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", b"GET", False, False),
])
def test_reusable_exactly_when_keep_alive_and_length_delimited(raw: bytes, method: bytes, eof: bool,
                                                                reusable: bool) -> None:
    _, error, conn = run(raw, method=method, eof=eof)
    assert error is None and conn.complete
    assert conn.reusable is reusable


def test_switching_protocols_gives_the_tail() -> None:
    raw = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n\x81\x02hi"
    events, error, conn = run(raw)
    assert error is None
    assert events[0] == ("info", 101, ())
    assert events[-1] == ("upgrade", b"\x81\x02hi") and not conn.reusable
