"""The request head the core validates: `RequestHead`, and `build_request_head`, which classifies a
head's fields and applies the head checks (target and Host, framing, Expect and Upgrade) once llhttp
has parsed it.

Pure functions of the parsed head and the limits; raise RemoteProtocolError with the status to answer.
"""

from __future__ import annotations

import httptools

from fastingress.table.normalize import normalize_host, normalize_path
from workers.http1.errors import RemoteProtocolError
from workers.http1.limits import Limits

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


_new_head = object.__new__


def plain_head(target: bytes, host: bytes, host_header: bytes, path: bytes, query: bytes,
               raw_fields: bytes) -> RequestHead:
    """The head of a plain GET (the fast lane, server_conn.ServerConn.feed_simple): every slot set once.

    Hot path: RequestHead() sets sixteen defaults that the fast lane then overwrote in part; this sets
    each slot once, in one frame.
    """
    head: RequestHead = _new_head(RequestHead)
    head.method = b"GET"
    head.target = target
    head.path = path
    head.query = query
    head.version = b"1.1"
    head.fields = []
    head.forwarded = {}
    head.host = host
    head.host_header = host_header
    head.content_length = -1
    head.chunked = False
    head.keep_alive = True
    head.expect_continue = False
    head.upgrade = b""
    head.connection_tokens = ()
    head.raw_fields = raw_fields
    return head


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
