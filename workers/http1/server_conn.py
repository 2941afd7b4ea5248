"""The downstream (client-facing) HTTP/1.1 core: bytes from the client in, request events out.

Theory of operation: `feed(data)` runs httptools' llhttp parser over the bytes. Its callbacks only
record: a validated `RequestHead`, body chunks and message ends are appended to `events` as
(EV_*, payload) pairs, and the adapter acts on them after `feed` returns. Acting only after the
parser returns matters: llhttp reports some framing errors after `on_headers_complete`
(http1-hardening item 2). If `feed` completed N messages before an error, their events are still
returned (serve them, then answer the error). While a head is incomplete the bytes are fed in
HEAD_FEED_SLICE pieces so that head limits hold however large the read was.

Must not: do I/O, read clocks, log, or resynchronise after an error (ERROR is final).
"""

from __future__ import annotations

import re

import httptools

from fastingress.table.normalize import normalize_host, normalize_path
from workers.http1.errors import RemoteProtocolError
from workers.http1.limits import HEAD_FEED_SLICE, Limits
from workers.http1.simple import TARGET_CHARS, simple_fields, simple_target
from workers.http1.states import TRANSITIONS, ConnState, check_transition

IDLE, RECV_HEAD, RECV_BODY = ConnState.IDLE, ConnState.RECV_HEAD, ConnState.RECV_BODY
MUST_CLOSE, TUNNEL, ERROR = ConnState.MUST_CLOSE, ConnState.TUNNEL, ConnState.ERROR

EV_HEAD = 0
EV_BODY = 1
EV_END = 2
EV_UPGRADE = 3  # a validated WebSocket upgrade head is complete; payload: the bytes after it

# request header names the core interprets; every other field is forwarded as received
_HOST = b"host"
_CL = b"content-length"
_TE = b"transfer-encoding"
_CONNECTION = b"connection"
_UPGRADE = b"upgrade"
_EXPECT = b"expect"
# hop-by-hop (RFC 9110 section 7.6.1) and proxy-owned fields: never forwarded as received
HOP_BY_HOP = frozenset({_CONNECTION, b"keep-alive", b"proxy-connection", b"te", _TE, b"trailer", _UPGRADE,
                        b"http2-settings"})
FORWARDED_FIELDS = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                              b"x-forwarded-port", b"x-real-ip", b"x-request-id"})
_SPECIAL = HOP_BY_HOP | FORWARDED_FIELDS | {_HOST, _CL, _EXPECT}
_METHODS_REFUSED = frozenset({b"CONNECT", b"TRACE"})
_DIGITS = b"0123456789"
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # RFC 9110 5.6.2
_VERSION_AT_END = re.compile(rb" [A-Z]+/(\d+)\.\d+\s*$")
RECENT_KEEP = 40 * 1024  # a head is at most 32 KiB: its request line is within what we keep


class RequestHead:
    """A validated request head: what the proxy routes and forwards."""

    __slots__ = ("chunked", "connection_tokens", "content_length", "expect_continue", "fields", "forwarded",
                 "host", "host_header", "keep_alive", "method", "path", "query", "raw_fields", "target", "upgrade",
                 "version")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""  # raw request-target
        self.path = b""  # normalised path (routed and forwarded)
        self.query = b""  # "?..." or b""
        self.version = b"1.1"
        self.fields: list[tuple[bytes, bytes]] = []  # end-to-end fields in received order, original case
        self.forwarded: dict[bytes, bytes] = {}  # incoming X-Forwarded-*/X-Real-IP/X-Request-ID, lower-case names
        self.host = b""  # normalised host (routing)
        self.host_header = b""  # Host as received (forwarded upstream)
        self.content_length = -1  # -1: none
        self.chunked = False
        self.keep_alive = True
        self.expect_continue = False
        self.upgrade = b""  # b"websocket" for a validated WebSocket upgrade
        self.connection_tokens: tuple[bytes, ...] = ()
        # a plain request (simple.simple_request): its field lines as received, Host included, each with
        # its CRLF; then `fields` is empty and these are forwarded instead
        self.raw_fields = b""


class _PlainCheck:
    """The callback-free parser's sink: counts completed messages (the fast lane's llhttp check)."""

    __slots__ = ("completed",)

    def __init__(self) -> None:
        self.completed = 0

    def on_message_complete(self) -> None:
        self.completed += 1


class ServerConn:
    """Parses requests from one client connection; see the module docstring."""

    __slots__ = (
        "_carry",
        "_chunk_overhead",
        "_chunks",
        "_feeding",
        "_head",
        "_head_bytes",
        "_known_start",
        "_parser",
        "_plain",
        "_plain_check",
        "_plain_memo",
        "_raw",
        "_read_idle",
        "_upgrade_buf",
        "_url",
        "body_received",
        "events",
        "limits",
        "state",
    )

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self.state = IDLE
        self.events: list[tuple[int, object]] = []
        self._head: RequestHead | None = None
        self._url = b""
        self._raw: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._chunk_overhead = 0
        self.body_received = 0
        self._carry = b""
        self._feeding = b""
        self._chunks = 0
        self._read_idle = True
        self._known_start = False
        self._upgrade_buf: bytes | None = None
        self._plain_check = _PlainCheck()
        self._plain = httptools.HttpRequestParser(self._plain_check)
        # (field lines after the request line as received, Host value, normalised host, field lines to forward)
        self._plain_memo: tuple[bytes, bytes, bytes, bytes] = (b"\x00", b"", b"", b"")

    def _set_state(self, new: ConnState) -> None:
        check_transition(self.state, new)
        self.state = new

    # --- input ---
    def feed(self, data: bytes) -> tuple[list[tuple[int, object]], RemoteProtocolError | None]:
        """Parse bytes; return the events completed and the error that ended the connection, if any."""
        # hot path: one loop, usually one pass with one call into llhttp (bench_hotpath)
        events = self.events = []
        if self._upgrade_buf is not None:
            self._upgrade_buf += data  # an upgrade awaits the backend's answer: keep, do not parse
            return events, None
        while True:
            state = self.state
            if state is ERROR or state is MUST_CLOSE or state is TUNNEL:
                return events, None  # nothing more is parsed on this connection
            self._feeding = data  # a head completing in this read is in _carry + data (request-line check)
            self._read_idle = state is IDLE
            try:
                if state is RECV_BODY:
                    self._feed_body(data)
                elif len(data) <= HEAD_FEED_SLICE:
                    self._parser.feed_data(data)
                    if self.state is RECV_HEAD:
                        self._count_head(len(data))
                else:
                    self._feed_sliced(data)
                # a head still incomplete at the end of this read: keep its bytes for the check above
                self._carry = (self._carry + data)[-RECENT_KEEP:] if self.state is RECV_HEAD else b""
                return events, None
            except httptools.HttpParserUpgrade as exc:
                tail, error = self._upgrade_tail(data[int(exc.args[0]):])
                if tail is None or error is not None:
                    return events, error
                data = tail  # an upgrade we do not honour: parse what follows as HTTP
            except RemoteProtocolError as exc:
                self.state = ERROR
                return events, exc
            except httptools.HttpParserError as exc:
                if self.state is MUST_CLOSE:
                    return events, None  # bytes after a closing request are not processed (RFC 9112 9.6)
                self.state = ERROR
                # the failing line is known only when its message began at the first byte of a read
                known = self._known_start and (state is not IDLE or not events)
                line = (self._carry + data).split(b"\n", 1)[0].rstrip(b"\r") if known else b""
                return events, self._map_parser_error(exc, line)

    def feed_simple(self, data: bytes) -> RequestHead | None:
        """The fast lane: a read that is exactly one plain GET head (simple.simple_request) -> its head.

        None: not plain, or llhttp objects; nothing was consumed and the caller feeds the same bytes
        to `feed`, which gives the full answer. The main parser never sees a plain message and the
        plain parser sees only whole plain messages, so both stay at message boundaries.
        """
        if self.state is not IDLE or self._carry or self._upgrade_buf is not None:
            return None
        line_end = simple_target(data, self.limits)
        if line_end < 0:
            return None
        target = data[4: line_end - 9]
        memo = self._plain_memo
        if data.endswith(memo[0]) and len(data) - len(memo[0]) == line_end:
            # the same field lines as the previous plain request on this connection (keep-alive clients
            # repeat them): the same answer as simple_fields + normalize_host, which are pure. llhttp
            # accepted these field lines already; it accepts any request-target of these characters
            _, host_header, host, fields = memo
            checked = not target.translate(None, TARGET_CHARS)
        else:
            found = simple_fields(data, line_end, self.limits)
            if found is None:
                return None
            host_header, fields = found
            normal_host = normalize_host(host_header)
            if normal_host is None:
                return None
            host = normal_host
            checked = False
        normal = normalize_path(target)
        if normal is None:
            return None
        if not checked:
            check = self._plain_check
            done = check.completed
            try:
                self._plain.feed_data(data)
            except httptools.HttpParserError:
                self._plain = httptools.HttpRequestParser(check)  # its state is spoiled; the full path answers
                return None
            if check.completed != done + 1 or self._plain.get_http_version() != "1.1":
                self._plain = httptools.HttpRequestParser(check)
                return None
            self._plain_memo = (data[line_end:], host_header, host, fields)  # only what llhttp accepted
        head = RequestHead()
        head.method = b"GET"
        head.target = target
        head.host = host
        head.host_header = host_header
        head.path, head.query = normal
        head.raw_fields = fields
        return head

    def _feed_body(self, data: bytes) -> None:
        """Feed body bytes; for chunked bodies bound the framing bytes (chunk lines, trailers) per read.

        httptools reports no chunk-line positions or extensions, so the bound is per read: the framing
        in one read (that does not end the message) may not exceed one chunk line limit per chunk started
        in it, plus one (hardening
        item 12, approximately: a single over-long line hidden among several chunks of one read passes).
        """
        head = self._head
        if head is None or not head.chunked:
            self._parser.feed_data(data)
            return
        before, chunks = self.body_received, self._chunks
        self._parser.feed_data(data)
        if self._head is not head or self.state is not RECV_BODY:
            return  # the message ended in this read: what follows it is the next head, bounded by its own limits
        framing = len(data) - (self.body_received - before)
        allowed = (self._chunks - chunks + 1) * (self.limits.chunk_line_bytes + 2) + self.limits.field_line_bytes
        if framing > allowed:
            raise RemoteProtocolError("chunk framing too large", 400)

    def _feed_counted(self, data: bytes) -> None:
        before = self.state
        self._parser.feed_data(data)
        if before is not RECV_BODY and self.state is RECV_HEAD:
            self._count_head(len(data))

    def _feed_sliced(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            if self.state is RECV_BODY:
                self._parser.feed_data(view[pos:])
                return
            piece = view[pos: pos + HEAD_FEED_SLICE]
            self._feed_counted(piece)  # type: ignore[arg-type]
            pos += len(piece)

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.limits.head_bytes:
            raise RemoteProtocolError("request head too large", 431)

    def _upgrade_tail(self, tail: bytes) -> tuple[bytes | None, RemoteProtocolError | None]:
        """llhttp stopped after a head with Upgrade: hand a WebSocket upgrade to the adapter, else go on."""
        head = self._head
        if head is None:
            self.state = ERROR
            return None, RemoteProtocolError("upgrade without a head", 400)
        if head.upgrade:
            # payload: the bytes after the head. Until the adapter calls start_tunnel() (the backend's
            # 101) or resume() (refused), later bytes are kept, not parsed (hardening item 10)
            self._upgrade_buf = tail
            self.events.append((EV_UPGRADE, tail))
            return None, None
        # not an upgrade we honour (h2c, HTTP/1.0...): a plain request without body; parse on
        self._finish_message(head)
        return (tail or None), None

    @property
    def upgrade_pending(self) -> bool:
        return self._upgrade_buf is not None

    def start_tunnel(self) -> bytes:
        """The backend accepted the upgrade: from now on bytes are relayed; returns those already received."""
        buffered = self._upgrade_buf or b""
        self._upgrade_buf = None
        self._set_state(TUNNEL)
        return buffered

    def resume(self, tail: bytes | None = None) -> tuple[list[tuple[int, object]], RemoteProtocolError | None]:
        """The upgrade was refused: the request is complete; parse what followed it (kept, or `tail`) as HTTP."""
        head = self._head
        assert head is not None
        data = self._upgrade_buf if self._upgrade_buf is not None else (tail or b"")
        self._upgrade_buf = None
        head.upgrade = b""
        self.events = []
        self._finish_message(head)
        done = self.events  # the refused upgrade request's end comes first
        if not data:
            self.events = []
            return done, None
        more, error = self.feed(data)
        return done + more, error

    def _map_parser_error(self, exc: Exception, line: bytes) -> RemoteProtocolError:
        """http1-hardening item 3: parser errors to statuses; our own errors come back as __context__.

        llhttp gives no error position: `line` is the failing request line when it is known (the read
        began with it), else b"" and the answer is a plain 400.
        """
        inner = exc.__context__
        if isinstance(inner, RemoteProtocolError):
            return inner
        if isinstance(exc, httptools.HttpParserInvalidMethodError):
            token = line.split(b" ", 1)[0]
            tchar_only = bool(token) and not token.translate(None, _TCHAR)
            return RemoteProtocolError(f"invalid method: {exc}", 501 if tchar_only else 400)
        if isinstance(exc, httptools.HttpParserInvalidURLError):
            return RemoteProtocolError(f"invalid request-target: {exc}", 400)
        version = _VERSION_AT_END.search(line)
        if version is not None and int(version.group(1)) >= 2:
            return RemoteProtocolError(f"HTTP/{version.group(1).decode()} is not supported", 505)
        return RemoteProtocolError(f"malformed request: {exc}", 400)

    # --- httptools callbacks: record only ---
    def on_message_begin(self) -> None:
        # hot path: the per-message reset inlined (one call less per request, bench_hotpath)
        self._carry = b""  # bytes kept from earlier reads belong to earlier messages
        self._known_start = self._read_idle and not self.events  # this message starts its read
        self._head = None
        self._url = b""
        self._raw = []
        self._head_bytes = self._chunk_overhead = self.body_received = 0
        if RECV_HEAD not in TRANSITIONS[self.state]:  # hot path: _set_state inlined (one call per event less)
            check_transition(self.state, RECV_HEAD)
        self.state = RECV_HEAD

    def on_url(self, url: bytes) -> None:
        if self._url:
            url = self._url + url
        self._url = url
        if len(url) > self.limits.request_line_bytes:
            raise RemoteProtocolError("request-target too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        # hot path: only record; limits and meaning are checked once in on_headers_complete
        if self.state is RECV_HEAD:
            self._raw.append((name, value))
        else:
            self._count_trailer(len(name) + len(value))  # trailers are dropped (hardening item 4)

    def _count_trailer(self, n: int) -> None:
        self._chunk_overhead += n
        if self._chunk_overhead > self.limits.field_line_bytes:
            raise RemoteProtocolError("trailer section too large", 400)

    def on_headers_complete(self) -> None:
        head = build_request_head(self._parser, self._url, self._raw, self.limits)
        # hardening item 5: the request line must end in HTTP/1.x (llhttp also accepts RTSP/ and ICE/)
        if b" " + self._url + b" HTTP/1." not in self._carry + self._feeding:
            raise RemoteProtocolError("the request line must end in HTTP/1.0 or HTTP/1.1", 400)
        self._head = head
        if RECV_BODY not in TRANSITIONS[self.state]:  # hot path: _set_state inlined
            check_transition(self.state, RECV_BODY)
        self.state = RECV_BODY
        self.events.append((EV_HEAD, head))

    def on_body(self, body: bytes) -> None:
        self.body_received += len(body)
        limit = self.limits.body_bytes
        if limit and self.body_received > limit:
            raise RemoteProtocolError("request body too large", 413)
        self.events.append((EV_BODY, body))

    def on_chunk_header(self) -> None:
        self._chunk_overhead = 0
        self._chunks += 1

    def on_message_complete(self) -> None:
        if self._parser.should_upgrade():
            return  # llhttp raises HttpParserUpgrade next; _upgrade_tail decides
        head = self._head
        assert head is not None
        self._finish_message(head)

    def _finish_message(self, head: RequestHead) -> None:
        new = IDLE if head.keep_alive else MUST_CLOSE
        if new not in TRANSITIONS[self.state]:  # hot path: _set_state inlined
            check_transition(self.state, new)
        self.state = new
        self.events.append((EV_END, None))


def _tokens(value: bytes) -> tuple[bytes, ...]:
    return tuple(t for t in (p.strip(b" \t").lower() for p in value.split(b",")) if t)


Fields = list[tuple[bytes, bytes]]


def _classify(raw: Fields, limits: Limits) -> tuple[Fields, dict[bytes, bytes], int]:
    """Split raw fields into end-to-end `fields` and the `special` ones we interpret; count Host fields.

    Enforces the field count and field-line limits (431); drops names with "_" (nginx's
    underscores_in_headers off, hardening item 15); strips trailing OWS (llhttp strips leading OWS).
    """
    if len(raw) > limits.header_count:
        raise RemoteProtocolError("too many header fields", 431)
    line_limit = limits.field_line_bytes
    fields: list[tuple[bytes, bytes]] = []
    special: dict[bytes, bytes] = {}
    hosts = 0
    size = 0
    for name, value in raw:
        line = len(name) + len(value)
        if line > line_limit:
            raise RemoteProtocolError("header field too large", 431)
        size += line + 4  # ": " and CRLF
        if b"_" in name:
            continue
        value = value.rstrip(b" \t")
        lname = name.lower()
        if lname in _SPECIAL:
            if lname == _HOST:
                hosts += 1
            prev = special.get(lname)
            special[lname] = value if prev is None else prev + b", " + value
        else:
            fields.append((name, value))
    if size > limits.head_bytes:  # the whole head may arrive in one read: counted here, not only per slice
        raise RemoteProtocolError("request head too large", 431)
    return fields, special, hosts


def build_request_head(parser: httptools.HttpRequestParser, url: bytes, raw: list[tuple[bytes, bytes]],
                       limits: Limits) -> RequestHead:
    """Validate a complete head (http1-hardening items 5-15) and build the RequestHead."""
    fields, special, hosts = _classify(raw, limits)
    head = RequestHead()
    version = parser.get_http_version()
    if version not in ("1.1", "1.0"):
        raise RemoteProtocolError(f"HTTP/{version} is not supported", 505 if version[:1] >= "2" else 400)
    head.version = b"1.1" if version == "1.1" else b"1.0"
    head.method = method = parser.get_method()
    if method in _METHODS_REFUSED:
        raise RemoteProtocolError(f"{method.decode()} is not allowed", 405)
    head.target = url
    head.fields = fields
    head.keep_alive = parser.should_keep_alive()
    _check_target_and_host(head, url, special, hosts)
    if _TE in special or _CL in special:
        _check_framing(head, special, limits)
    connection = special.get(_CONNECTION)
    if connection is not None:
        head.connection_tokens = _tokens(connection)
    if _EXPECT in special or _UPGRADE in special:
        _check_expect_and_upgrade(head, special)
    if len(special) > 1 or _HOST not in special:  # any X-Forwarded-*/X-Real-IP/X-Request-ID at all?
        for name in FORWARDED_FIELDS:
            value = special.get(name)
            if value is not None:
                head.forwarded[name] = value
    return head


def _check_target_and_host(head: RequestHead, url: bytes, special: dict[bytes, bytes], hosts: int) -> None:
    if url[:1] != b"/":
        url = _absolute_form(head, url, special)
    if hosts > 1:
        raise RemoteProtocolError("more than one Host field", 400)
    host_header = special.get(_HOST)
    if host_header is None:
        raise RemoteProtocolError("missing Host field", 400)
    host = normalize_host(host_header)
    if host is None:
        raise RemoteProtocolError("invalid Host field", 400)
    normal = normalize_path(url)
    if normal is None:
        raise RemoteProtocolError("request-target cannot be normalised", 400)
    head.host, head.host_header = host, host_header
    head.path, head.query = normal


def _absolute_form(head: RequestHead, url: bytes, special: dict[bytes, bytes]) -> bytes:
    """http://authority/path: the authority replaces Host (RFC 9112 section 3.2.2); else 400."""
    lower = url[:8].lower()
    if lower.startswith(b"http://"):
        rest = url[7:]
    elif lower.startswith(b"https://"):
        rest = url[8:]
    else:
        raise RemoteProtocolError("request-target must be origin-form or http(s) absolute-form", 400)
    slash = rest.find(b"/")
    authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
    query = authority.find(b"?")
    if query >= 0:
        authority, path = authority[:query], b"/" + authority[query:]
    if b"@" in authority or not authority:
        raise RemoteProtocolError("absolute-form authority must be host[:port] without userinfo", 400)
    special[_HOST] = authority
    return path


def _check_framing(head: RequestHead, special: dict[bytes, bytes], limits: Limits) -> None:
    te = special.get(_TE)
    cl = special.get(_CL)
    if te is not None:
        if head.version == b"1.0":
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request", 400)
        codings = _tokens(te)
        if codings != (b"chunked",):
            if any(c != b"chunked" for c in codings):
                raise RemoteProtocolError("unsupported transfer coding", 501)
            raise RemoteProtocolError("invalid Transfer-Encoding", 400)
        if cl is not None:  # llhttp refuses this already; kept explicit (request smuggling)
            raise RemoteProtocolError("both Content-Length and Transfer-Encoding", 400)
        head.chunked = True
    elif cl is not None:
        if not cl or cl.translate(None, _DIGITS) or len(cl) > 18:
            raise RemoteProtocolError("invalid Content-Length", 400)
        head.content_length = int(cl)
        if limits.body_bytes and head.content_length > limits.body_bytes:
            raise RemoteProtocolError("request body too large", 413)


def _check_expect_and_upgrade(head: RequestHead, special: dict[bytes, bytes]) -> None:
    expect = special.get(_EXPECT)
    if expect is not None:
        if expect.lower() != b"100-continue":
            raise RemoteProtocolError("unsupported expectation", 417)
        head.expect_continue = head.version == b"1.1"
    upgrade = special.get(_UPGRADE)
    if upgrade is None:
        return
    if head.chunked or head.content_length > 0:
        # llhttp skips the body of any upgrade request and would hand it over as the "tail": parsed as
        # HTTP after a refused upgrade it would smuggle a request (hardening item 10)
        raise RemoteProtocolError("upgrade request with a body", 400)
    if (upgrade.lower() == b"websocket" and head.method == b"GET" and head.version == b"1.1"
            and b"upgrade" in head.connection_tokens):
        head.upgrade = b"websocket"
