"""The HTTP/1.1 hardening checklist (/work/shared/http1-hardening.md) against the running proxy.

Every case sends raw bytes over a real socket and asserts both what the client got (status, or a
close) and what the RecordingBackends received: nothing at all for a rejected request. To prove
"nothing", each rejected request carries a unique token (`MARK` in the bytes); after the answer a
sentinel request is sent and answered through the same backend, then no backend may have seen the
token, and the sentinel must be the only request received since.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    RawClient,
    Response,
    ScriptedBackend,
    get,
    ingress,
    service,
    start_proxy,
    write_manifests,
)
from tests.support.backends import Received, RecordingBackend, ok_response
from tests.support.proxy import ServedProxy, parse_responses

pytestmark = pytest.mark.integration

BODY_LIMIT = 1_000_000
_tokens = itertools.count()

# scripted backend answers by path (response-side checks)
RESPONSES: dict[bytes, bytes | None] = {
    b"/r/1xx-body": (b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    b"/r/garbage": b"this is not http\r\n\r\n",
    b"/r/extra": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEXTRA",
    b"/r/head": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Head: 1\r\n\r\n",
    b"/r/head-with-body": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
    b"/r/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"/r/early-hints": (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    b"/r/cl-and-te": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n0\r\n\r\n"),
    b"/r/huge-head": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
                     + b"Content-Length: 0\r\n\r\n",
    b"/r/unasked-101": b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"/r/close": None,
}


def _respond(req: Received) -> bytes | None:
    path = req.target.split(b"?", 1)[0]
    if path in RESPONSES:
        return RESPONSES[path]
    return ok_response("rec")(req)


def _script(target: bytes) -> tuple[bytes, bool]:
    """ScriptedBackend answers: the response and whether the backend closes right after it."""
    if target == b"/truncated":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part", True
    if target == b"/truncated-chunked":
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nonly-part\r\n", True
    if target == b"/eof-delimited":
        return b"HTTP/1.1 200 OK\r\n\r\nuntil-eof", True
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False


class Env:
    def __init__(self, proxy: ServedProxy, rec: RecordingBackend, scripted: ScriptedBackend) -> None:
        self.proxy = proxy
        self.port = proxy.http_port
        self.rec = rec
        self.scripted = scripted

    def token(self) -> bytes:
        return b"tok%06d" % next(_tokens)

    def rejected(self, data: bytes, status: int | None, *, timeout_s: float = 5.0) -> bytes:
        """Send `data` (MARK replaced by a token); expect `status` then a close (None: just a close)."""
        token = self.token()
        data = data.replace(b"MARK", token)
        before = len(self.rec.requests)
        with RawClient(self.port, timeout_s) as c:
            c.send(data)
            raw = c.wait_closed(timeout_s)
        if status is None:
            assert not raw.startswith(b"HTTP/1.1 2"), raw
        else:
            got = parse_responses(raw)
            assert got and got[0][0] == status, f"expected {status}, got {raw[:300]!r}"
            assert len(got) == 1, f"more than one response: {raw!r}"
        self.assert_nothing_forwarded(token, before)
        return raw

    def assert_nothing_forwarded(self, token: bytes, before: int) -> None:
        sentinel = b"/sentinel-%d" % next(_tokens)
        r = get(self.port, sentinel.decode(), host="rec.test")
        assert r.status == 200
        new = self.rec.requests[before:]
        assert [q.target for q in new] == [sentinel], f"the backend received {new!r}"
        assert token not in b"".join(self.rec.raw), "bytes of the rejected request reached the backend"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    rec = RecordingBackend("rec", respond=_respond)
    scripted = ScriptedBackend(_script)
    directory: Path = tmp_path_factory.mktemp("hardening")
    write_manifests(directory / "site.yaml", [
        service("rec", rec.port),
        service("scr", scripted.port),
        ingress("all", [(None, [("/", "Prefix", "rec")]), ("scr.test", [("/", "Prefix", "scr")])]),
    ])
    proxy = start_proxy(directory, workers=2, env={"FASTINGRESS_LIMIT_BODY_BYTES": str(BODY_LIMIT)})
    try:
        yield Env(proxy, rec, scripted)
    finally:
        proxy.stop()
        rec.close()
        scripted.close()


def _req(line: bytes, headers: bytes = b"Host: rec.test\r\n", body: bytes = b"") -> bytes:
    return line + b"\r\n" + headers + b"X-Mark: MARK\r\n\r\n" + body


# --- request line ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "status"), [
    pytest.param(_req(b"FOO /MARK HTTP/1.1"), 501, id="unknown-tchar-method-501"),
    pytest.param(_req(b"get /MARK HTTP/1.1"), 501, id="lowercase-method-501"),
    pytest.param(_req(b"G@T /MARK HTTP/1.1"), 400, id="non-tchar-method-400"),
    pytest.param(_req(b"GE(T /MARK HTTP/1.1"), 400, id="non-tchar-method-paren-400"),
    pytest.param(_req(b"GET /MARK HTTP/2.0"), 505, id="http2.0-505"),
    pytest.param(_req(b"GET /MARK HTTP/3.0"), 505, id="http3.0-505"),
    pytest.param(_req(b"GET /MARK HTTP/0.9"), 400, id="http0.9-version-400"),
    pytest.param(b"GET /MARK\r\n\r\n", 400, id="http0.9-line-400"),
    pytest.param(_req(b"GET /MARK HTTP/1.2"), 400, id="http1.2-400"),
    pytest.param(_req(b"GET /MARK RTSP/1.0"), 400, id="rtsp-400"),
    pytest.param(_req(b"GET /MARK HTTP/1.1 extra"), 400, id="extra-token-400"),
    pytest.param(_req(b"CONNECT rec.test:443 HTTP/1.1"), 405, id="connect-405"),
    pytest.param(_req(b"TRACE /MARK HTTP/1.1"), 405, id="trace-405"),
    pytest.param(_req(b"GET MARK HTTP/1.1"), 400, id="target-not-slash-400"),
    pytest.param(_req(b"GET * HTTP/1.1"), 400, id="asterisk-with-get-400"),
    pytest.param(_req(b"GET http://user:pw@rec.test/MARK HTTP/1.1"), 400, id="absolute-userinfo-400"),
    pytest.param(_req(b"GET ftp://rec.test/MARK HTTP/1.1"), 400, id="absolute-ftp-400"),
    pytest.param(_req(b"GET /MARK#frag HTTP/1.1"), 400, id="fragment-400"),
    pytest.param(_req(b"GET /a\\MARK HTTP/1.1"), 400, id="backslash-400"),
    pytest.param(_req(b"GET /MARK%zz HTTP/1.1"), 400, id="bad-escape-400"),
    pytest.param(_req(b"GET /MARK%4 HTTP/1.1"), 400, id="short-escape-400"),
    pytest.param(_req(b"GET /MARK%00x HTTP/1.1"), 400, id="nul-escape-400"),
    pytest.param(_req(b"GET /../MARK HTTP/1.1"), 400, id="dotdot-above-root-400"),
    pytest.param(_req(b"GET /a/../../MARK HTTP/1.1"), 400, id="dotdot-climbs-400"),
    pytest.param(_req(b"GET /%2e%2e/MARK HTTP/1.1"), 400, id="encoded-dotdot-climbs-400"),
])
def test_request_line_rejected(env: Env, data: bytes, status: int) -> None:
    env.rejected(data, status)


def test_absolute_form_authority_replaces_host(env: Env) -> None:
    token = env.token()
    with RawClient(env.port) as c:
        c.send(b"GET http://Abs.Example:8080/p-%s?q=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"
               % token)
        r = c.read()
    assert r.status == 200
    req = env.rec.requests[-1]
    assert req.target == b"/p-" + token + b"?q=1", "absolute-form must be forwarded in origin-form"
    assert req.header(b"host") == b"Abs.Example:8080"
    assert req.header(b"x-forwarded-host") == b"Abs.Example:8080"


# --- Host --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "status"), [
    pytest.param(b"Host: rec.test\r\nHost: other.test\r\n", 400, id="duplicate-host"),
    pytest.param(b"Host: rec.test\r\nHost: rec.test\r\n", 400, id="duplicate-same-host"),
    pytest.param(b"", 400, id="missing-host"),
    pytest.param(b"Host: rec test\r\n", 400, id="space-in-host"),
    pytest.param(b"Host: rec.test/x\r\n", 400, id="slash-in-host"),
    pytest.param(b"Host: user@rec.test\r\n", 400, id="at-in-host"),
    pytest.param(b"Host: rec.test:80x\r\n", 400, id="bad-port"),
    pytest.param(b"Host: [::1\r\n", 400, id="unclosed-ipv6"),
])
def test_bad_host_rejected(env: Env, headers: bytes, status: int) -> None:
    env.rejected(_req(b"GET /MARK HTTP/1.1", headers), status)


def test_http10_without_host_rejected(env: Env) -> None:
    env.rejected(b"GET /MARK HTTP/1.0\r\nX-Mark: MARK\r\n\r\n", 400)


# --- framing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "body", "status"), [
    pytest.param(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"5\r\nMARK!\r\n0\r\n\r\n", 400,
                 id="te-and-cl"),
    pytest.param(b"Transfer-Encoding: gzip\r\n", b"MARK", 501, id="te-gzip-501"),
    pytest.param(b"Transfer-Encoding: gzip, chunked\r\n", b"7\r\nMARK123\r\n0\r\n\r\n", 501, id="te-gzip-chunked-501"),
    pytest.param(b"Transfer-Encoding: chunked, chunked\r\n", b"7\r\nMARK123\r\n0\r\n\r\n", 400,
                 id="te-chunked-twice"),
    pytest.param(b"Transfer-Encoding: xchunked\r\n", b"7\r\nMARK123\r\n0\r\n\r\n", 501, id="te-xchunked-501"),
    pytest.param(b"Content-Length: 7\r\nContent-Length: 7\r\n", b"MARK123", 400, id="duplicate-cl"),
    pytest.param(b"Content-Length: 7\r\nContent-Length: 8\r\n", b"MARK1234", 400, id="conflicting-cl"),
    pytest.param(b"Content-Length: 7, 7\r\n", b"MARK123", 400, id="cl-list"),
    pytest.param(b"Content-Length: abc\r\n", b"MARK123", 400, id="cl-not-numeric"),
    pytest.param(b"Content-Length: +7\r\n", b"MARK123", 400, id="cl-plus-sign"),
    pytest.param(b"Content-Length: -1\r\n", b"MARK123", 400, id="cl-negative"),
    pytest.param(b"Transfer-Encoding : chunked\r\n", b"7\r\nMARK123\r\n0\r\n\r\n", 400, id="space-before-colon"),
    pytest.param(b"Transfer-Encoding: chunked\r\n", b"7;" + b"e" * 5000 + b"\r\nMARK123\r\n0\r\n\r\n", 400,
                 id="chunk-line-over-4k"),
    pytest.param(b"Transfer-Encoding: chunked\r\n", b"zz\r\nMARK123\r\n0\r\n\r\n", 400, id="bad-chunk-size"),
])
def test_bad_framing_rejected(env: Env, headers: bytes, body: bytes, status: int) -> None:
    env.rejected(b"POST /p HTTP/1.1\r\nHost: rec.test\r\n" + headers + b"\r\n" + body, status)


def test_te_in_http10_rejected(env: Env) -> None:
    env.rejected(b"POST /MARK HTTP/1.0\r\nHost: rec.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n\r\n", 400)


def test_trailers_over_limit_rejected(env: Env) -> None:
    """Trailers over 8 KiB -> 400; the backend may have seen the head, never a completed body."""
    token = env.token()
    before = len(env.rec.requests)
    with RawClient(env.port) as c:
        c.send(b"POST /t-%s HTTP/1.1\r\nHost: rec.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
               % token + b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 1000) for i in range(10)) + b"\r\n")
        raw = c.wait_closed()
    assert raw.startswith(b"HTTP/1.1 400 "), raw
    assert not any(token in q.target for q in env.rec.requests[before:]), "the aborted request was completed"


def test_content_length_over_limit_413_before_body(env: Env) -> None:
    with RawClient(env.port) as c:
        c.send(b"POST /MARK HTTP/1.1\r\nHost: rec.test\r\nContent-Length: %d\r\n\r\n" % (BODY_LIMIT + 1))
        raw = c.wait_closed()  # answered and closed without a byte of the body
    assert raw.startswith(b"HTTP/1.1 413 "), raw
    assert not any(b"MARK" in q.target for q in env.rec.requests)


def test_chunked_body_over_limit_413(env: Env) -> None:
    token = env.token()
    before = len(env.rec.requests)
    piece = b"%x\r\n%s\r\n" % (100_000, b"x" * 100_000)
    with RawClient(env.port) as c:
        c.send(b"POST /big-%s HTTP/1.1\r\nHost: rec.test\r\nTransfer-Encoding: chunked\r\n\r\n" % token)
        try:
            for _ in range(BODY_LIMIT // 100_000 + 2):
                c.send(piece)
        except OSError:
            pass
        raw = c.wait_closed()
    assert raw.startswith(b"HTTP/1.1 413 ") or raw == b"", raw
    assert not any(token in q.target for q in env.rec.requests[before:]), "an over-limit body was completed"


# --- header limits -----------------------------------------------------------------------------------
def test_request_line_over_8k_414(env: Env) -> None:
    env.rejected(_req(b"GET /MARK" + b"a" * (8 * 1024 + 10) + b" HTTP/1.1"), 414)


def test_request_line_just_under_limit_ok(env: Env) -> None:
    path = b"/" + b"a" * (8 * 1024 - 100)
    r = get(env.port, path.decode(), host="rec.test")
    assert r.status == 200 and env.rec.requests[-1].target == path


def test_header_line_over_8k_431(env: Env) -> None:
    env.rejected(_req(b"GET /MARK HTTP/1.1", b"Host: rec.test\r\nX-Big: " + b"b" * (8 * 1024 + 10) + b"\r\n"), 431)


def test_more_than_100_fields_431(env: Env) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(101))
    env.rejected(_req(b"GET /MARK HTTP/1.1", b"Host: rec.test\r\n" + fields), 431)


def test_head_over_32k_431(env: Env) -> None:
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
    env.rejected(_req(b"GET /MARK HTTP/1.1", b"Host: rec.test\r\n" + fields), 431)


def test_head_over_32k_sent_slowly_431(env: Env) -> None:
    """The head limit holds across reads too, not only within one large read."""
    token = env.token()
    with RawClient(env.port) as c:
        c.send(b"GET /s-%s HTTP/1.1\r\nHost: rec.test\r\n" % token)
        try:
            for i in range(40):
                c.send(b"X-F%d: %s\r\n" % (i, b"v" * 1000))
        except OSError:
            pass
        raw = c.wait_closed()
    assert raw.startswith(b"HTTP/1.1 431 "), raw
    assert not any(token in q.target for q in env.rec.requests)


def test_underscore_fields_dropped(env: Env) -> None:
    token = env.token()
    r = get(env.port, f"/u-{token.decode()}", host="rec.test", headers=b"X_Under: 1\r\nX-Dash: 2\r\n")
    assert r.status == 200
    req = env.rec.requests[-1]
    assert req.header(b"x-dash") == b"2"
    assert req.header(b"x_under") is None, "a field with an underscore reached the backend"


@pytest.mark.parametrize("data", [
    pytest.param(b"GET /MARK HTTP/1.1\r\nHost: rec.test\r\nX-A: 1\r\n  folded\r\n\r\n", id="obs-fold"),
    pytest.param(b"GET /MARK HTTP/1.1\nHost: rec.test\n\n", id="bare-lf"),
    pytest.param(b"GET /MARK HTTP/1.1\r\nHost: rec.test\nX-A: 1\r\n\r\n", id="bare-lf-in-head"),
    pytest.param(b"GET /MARK HTTP/1.1\r\nHost: rec.test\r\nX-A: a\rb\r\n\r\n", id="bare-cr"),
    pytest.param(b"GET /MARK HTTP/1.1\r\nHost: rec.test\r\nX-A: a\x00b\r\n\r\n", id="nul-in-value"),
    pytest.param(b"GET /MARK HTTP/1.1\r\nHost: rec.test\r\nX A: 1\r\n\r\n", id="space-in-name"),
    pytest.param(b"GET /MARK HTTP/1.1\r\nHost: rec.test\r\n: empty-name\r\n\r\n", id="empty-name"),
])
def test_malformed_head_rejected(env: Env, data: bytes) -> None:
    env.rejected(data, 400)


# --- upgrade and expectations ------------------------------------------------------------------------
def test_upgrade_with_body_rejected(env: Env) -> None:
    env.rejected(b"GET /MARK HTTP/1.1\r\nHost: rec.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Content-Length: 5\r\n\r\nhello", 400)


def test_h2c_upgrade_is_a_plain_request(env: Env) -> None:
    token = env.token()
    with RawClient(env.port) as c:
        c.send(b"GET /h2c-%s HTTP/1.1\r\nHost: rec.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
               b"GET /after-%s HTTP/1.1\r\nHost: rec.test\r\nConnection: close\r\n\r\n" % (token, token))
        first, second = c.read(), c.read()
    assert first.status == 200 and second.status == 200
    assert first.body.endswith(b"/h2c-" + token + b"\n") and second.body.endswith(b"/after-" + token + b"\n")
    req = next(q for q in env.rec.requests if q.target == b"/h2c-" + token)
    names = {n for n, _ in req.headers}
    assert not names & {b"upgrade", b"http2-settings"}, req.headers
    assert req.header(b"connection") in (None, b"keep-alive"), req.headers


def test_websocket_upgrade_with_http10_is_plain(env: Env) -> None:
    token = env.token()
    with RawClient(env.port) as c:
        c.send(b"GET /ws10-%s HTTP/1.0\r\nHost: rec.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" % token)
        r = c.read()
    assert r.status == 200
    req = next(q for q in env.rec.requests if q.target == b"/ws10-" + token)
    assert req.header(b"upgrade") is None, req.headers


def test_unknown_expectation_417(env: Env) -> None:
    env.rejected(_req(b"GET /MARK HTTP/1.1", b"Host: rec.test\r\nExpect: foo\r\n"), 417)


# --- pipelining and parse errors ---------------------------------------------------------------------
def test_pipelined_request_then_garbage(env: Env) -> None:
    token = env.token()
    with RawClient(env.port) as c:
        c.send(b"GET /first-%s HTTP/1.1\r\nHost: rec.test\r\n\r\n"
               b"GET /GARBAGE-%s HTTP/1.1\r\nHost: rec.test\r\nno colon in this line\r\n\r\n" % (token, token))
        raw = c.wait_closed()
    got = parse_responses(raw, [b"GET", b"GET"])
    assert [s for s, _, _ in got] == [200, 400], raw
    assert got[0][2].endswith(b"/first-" + token + b"\n")
    assert [q.target for q in env.rec.requests if token in b"".join(q.target.split(b"?"))] == [b"/first-" + token]
    assert b"GARBAGE" not in b"".join(env.rec.raw)


def test_many_pipelined_requests_all_answered_in_order(env: Env) -> None:
    token = env.token()
    n = 40
    with RawClient(env.port) as c:
        c.send(b"".join(b"GET /pl-%s-%d HTTP/1.1\r\nHost: rec.test\r\n\r\n" % (token, i) for i in range(n)))
        bodies = [c.read().body for _ in range(n)]
    assert bodies == [b"rec GET /pl-%s-%d\n" % (token, i) for i in range(n)]


# --- response side -----------------------------------------------------------------------------------
def _one(env: Env, path: bytes, method: bytes = b"GET", version: bytes = b"1.1",
         host: bytes = b"rec.test") -> tuple[bytes, list[Response]]:
    with RawClient(env.port) as c:
        c.send(b"%s %s HTTP/%s\r\nHost: %s\r\nConnection: close\r\n\r\n" % (method, path, version, host))
        raw = c.wait_closed()
    return raw, parse_responses(raw, [method])  # type: ignore[return-value]


@pytest.mark.parametrize("path", [b"/r/1xx-body", b"/r/garbage", b"/r/close", b"/r/cl-and-te", b"/r/huge-head",
                                  b"/r/unasked-101"])
def test_bad_backend_response_502(env: Env, path: bytes) -> None:
    raw, got = _one(env, path)
    assert got and got[0][0] == 502, raw


def test_backend_truncated_body_closes_client(env: Env) -> None:
    raw, got = _one(env, b"/truncated", host=b"scr.test")
    assert raw.startswith(b"HTTP/1.1 200 "), raw  # the head was relayed before the truncation
    assert got == [], f"a truncated response was completed: {raw!r}"
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-length: 100" in head.lower()
    assert body == b"only-part", "body bytes must be relayed exactly, never padded"


def test_backend_truncated_chunked_body_closes_client(env: Env) -> None:
    raw, got = _one(env, b"/truncated-chunked", host=b"scr.test")
    assert raw.startswith(b"HTTP/1.1 200 "), raw
    assert got == [], f"a truncated response was completed: {raw!r}"
    assert not raw.endswith(b"0\r\n\r\n"), "a truncated chunked body was terminated"


def test_backend_eof_delimited_body_completes(env: Env) -> None:
    raw, got = _one(env, b"/eof-delimited", host=b"scr.test")
    assert got and got[0][0] == 200 and got[0][2] == b"until-eof", raw


def test_backend_extra_bytes_not_reused(env: Env) -> None:
    before = env.rec.connections
    with RawClient(env.port) as c:
        c.send(b"GET /r/extra HTTP/1.1\r\nHost: rec.test\r\n\r\n")
        first = c.read()
        c.send(b"GET /after-extra HTTP/1.1\r\nHost: rec.test\r\n\r\n")
        second = c.read()
    assert first.status == 200 and first.body == b"ok"
    assert second.status == 200 and second.body == b"rec GET /after-extra\n", "surplus bytes were parsed as a response"
    extra = next(q for q in reversed(env.rec.requests) if q.target == b"/r/extra")
    after = next(q for q in reversed(env.rec.requests) if q.target == b"/after-extra")
    assert after.connection != extra.connection, "the connection with surplus bytes was reused"
    assert env.rec.connections >= before + 1


def test_head_response_with_content_length(env: Env) -> None:
    with RawClient(env.port) as c:
        c.send(b"HEAD /r/head HTTP/1.1\r\nHost: rec.test\r\n\r\n")
        r = c.read(b"HEAD")
        c.send(b"GET /after-head HTTP/1.1\r\nHost: rec.test\r\n\r\n")
        r2 = c.read()
    assert r.status == 200 and r.body == b"" and r.header(b"content-length") == b"10" and r.header(b"x-head") == b"1"
    assert r2.body == b"rec GET /after-head\n"


def test_head_response_with_body_anyway(env: Env) -> None:
    """A backend that sends a body after a HEAD response: the client never sees it; not reused."""
    with RawClient(env.port) as c:
        c.send(b"HEAD /r/head-with-body HTTP/1.1\r\nHost: rec.test\r\n\r\n")
        r = c.read(b"HEAD")
        c.send(b"GET /after-head-body HTTP/1.1\r\nHost: rec.test\r\n\r\n")
        r2 = c.read()
    assert r.status == 200 and r.body == b""
    assert r2.status == 200 and r2.body == b"rec GET /after-head-body\n"
    head_req = next(q for q in reversed(env.rec.requests) if q.target == b"/r/head-with-body")
    after = next(q for q in reversed(env.rec.requests) if q.target == b"/after-head-body")
    assert after.connection != head_req.connection


def test_chunked_response_to_http10_client(env: Env) -> None:
    raw, _ = _one(env, b"/r/chunked", version=b"1.0")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), raw
    assert b"transfer-encoding" not in head.lower(), "a 1.0 client must not get chunked framing"
    assert body == b"hello world"


def test_early_hints_forwarded_to_11_only(env: Env) -> None:
    raw11, got = _one(env, b"/r/early-hints")
    assert raw11.startswith(b"HTTP/1.1 103 "), raw11
    assert got[0][0] == 200 and got[0][2] == b"ok"
    raw10, _ = _one(env, b"/r/early-hints", version=b"1.0")
    assert raw10.startswith(b"HTTP/1.1 200 "), f"a 1.0 client got an interim response: {raw10!r}"


# --- trusted proxies ---------------------------------------------------------------------------------
def test_forwarded_for_overwritten_from_untrusted_peer(env: Env) -> None:
    token = env.token()
    get(env.port, f"/xff-{token.decode()}", host="rec.test",
        headers=b"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 1.2.3.4\r\n")
    req = env.rec.requests[-1]
    assert req.header(b"x-forwarded-for") == b"127.0.0.1"
    assert req.header(b"x-forwarded-proto") == b"http"
    assert req.header(b"x-real-ip") == b"127.0.0.1"


def test_forwarded_for_appended_from_trusted_peer(tmp_path: Path, proxy_factory: Callable[..., ServedProxy]) -> None:
    rec = RecordingBackend("trusted")
    try:
        write_manifests(tmp_path / "m.yaml", [service("t", rec.port), ingress("t", [(None, [("/", "Prefix", "t")])])])
        proxy = proxy_factory(tmp_path, workers=1, env={"FASTINGRESS_TRUSTED_PROXIES": "127.0.0.0/8"})
        r = get(proxy.http_port, "/t", host="t.test",
                headers=b"X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
                        b"X-Forwarded-Host: public.example\r\nX-Forwarded-Port: 443\r\n")
        assert r.status == 200
        req = rec.requests[-1]
        assert req.header(b"x-forwarded-for") == b"1.2.3.4, 10.0.0.1, 127.0.0.1"
        assert req.header(b"x-forwarded-proto") == b"https"
        assert req.header(b"x-forwarded-host") == b"public.example"
        assert req.header(b"x-forwarded-port") == b"443"
        get(proxy.http_port, "/t2", host="t.test")
        assert rec.requests[-1].header(b"x-forwarded-for") == b"127.0.0.1"
    finally:
        rec.close()

