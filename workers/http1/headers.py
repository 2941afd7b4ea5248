"""Head serialisation for both directions: the request we send upstream, the response we send back.

Hop-by-hop fields are already gone (the cores never put them in `fields`); here the proxy adds its
own: framing, `X-Forwarded-*`, `X-Real-IP`, `X-Request-ID` (RFC 9110 section 7.6, nginx's and
ingress-nginx's behaviour). Incoming forwarded fields are kept only from trusted peers; otherwise
they are overwritten (X-Forwarded-For restarts from the peer address).

Hot path: one `b"".join` per head; status lines and fixed fields are precomputed bytes.
"""

from __future__ import annotations

import http

from workers.http1.client_conn import ResponseHead
from workers.http1.request_head import RequestHead

CRLF = b"\r\n"
_XFF = b"x-forwarded-for"
_XFP = b"x-forwarded-proto"
_XFH = b"x-forwarded-host"
_XFPORT = b"x-forwarded-port"
_XRID = b"x-request-id"
STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus}
_NO_BODY_STATUSES = frozenset({204, 304})


def status_line(status: int, reason: bytes = b"") -> bytes:
    line = STATUS_LINES.get(status) if not reason else None
    return line or b"HTTP/1.1 %d %s\r\n" % (status, reason or b"Unknown")


def forwarded_block(peer: bytes, scheme: bytes, port: bytes) -> bytes:
    """The forwarded fields that depend only on the client connection (computed once per connection)."""
    return b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Port: %s\r\nX-Real-IP: %s\r\n" % (
        peer, scheme, port, peer)


def plain_request_middle(raw_fields: bytes, block: bytes, host_header: bytes) -> bytes:
    """What a plain request's upstream head carries between its request line and its X-Request-ID value: the
    field lines as received, the connection's forwarded block, X-Forwarded-Host. A connection whose client
    repeats its field lines builds it once (`DownstreamProtocol.middle`, in Exchange.start)."""
    return b"".join((raw_fields, block, b"X-Forwarded-Host: ", host_header, b"\r\nX-Request-ID: "))


def plain_upstream_request(head: RequestHead, middle: bytes, request_id: bytes) -> bytes:
    """The upstream head of a plain GET (simple.py): its request line, `middle` (plain_request_middle), its id."""
    return b"".join((b"GET ", head.path, head.query, b" HTTP/1.1\r\n", middle, request_id, b"\r\n\r\n"))


def build_upstream_request(head: RequestHead, peer: bytes, scheme: bytes, port: bytes, request_id: bytes,
                           trusted: bool, block: bytes | None = None) -> bytes:
    """The request head sent to a backend: origin-form normalised target, end-to-end fields, ours.

    `block` is forwarded_block(peer, scheme, port), passed by callers that keep it per connection.
    """
    if head.raw_fields:  # a plain GET (no forwarded fields, no framing, no hop-by-hop fields)
        middle = plain_request_middle(head.raw_fields, block or forwarded_block(peer, scheme, port), head.host_header)
        return plain_upstream_request(head, middle, request_id)
    fwd = head.forwarded
    parts = [head.method, b" ", head.path, head.query, b" HTTP/1.1\r\nHost: ", head.host_header, CRLF]
    drop = head.connection_tokens
    for name, value in head.fields:
        if drop and name.lower() in drop:
            continue  # fields named by Connection are hop-by-hop too (RFC 9110 section 7.6.1)
        parts += (name, b": ", value, CRLF)
    if trusted and fwd:
        xff = fwd.get(_XFF)
        parts += (
            b"X-Forwarded-For: ", (xff + b", " + peer) if xff else peer, CRLF,
            b"X-Forwarded-Proto: ", fwd.get(_XFP) or scheme, CRLF,
            b"X-Forwarded-Host: ", fwd.get(_XFH) or head.host_header, CRLF,
            b"X-Forwarded-Port: ", fwd.get(_XFPORT) or port, CRLF,
            b"X-Real-IP: ", (xff.split(b",", 1)[0].strip() if xff else peer), CRLF,
        )
    else:  # hot path: an untrusted peer's forwarded fields are replaced by ours, mostly per-connection bytes
        parts += (block or forwarded_block(peer, scheme, port), b"X-Forwarded-Host: ", head.host_header, CRLF)
    parts += (b"X-Request-ID: ", request_id, CRLF)
    if head.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length >= 0:
        parts += (b"Content-Length: ", b"%d" % head.content_length, CRLF)
    if head.upgrade:
        parts.append(b"Connection: upgrade\r\nUpgrade: websocket\r\n")
    if head.expect_continue:
        parts.append(b"Expect: 100-continue\r\n")
    parts.append(CRLF)
    return b"".join(parts)


def response_framing(resp: ResponseHead, request_method: bytes, client_version: bytes) -> tuple[int, bool]:
    """(mode, keep_alive_possible): mode 0 no body, 1 Content-Length, 2 re-chunk, 3 close-delimited."""
    if request_method == b"HEAD" or resp.status in _NO_BODY_STATUSES or resp.status < 200:
        return 0, True
    if resp.content_length >= 0 and not resp.chunked:
        return 1, True
    if client_version == b"1.1":
        return 2, True
    return 3, False


def build_client_response(resp: ResponseHead, mode: int, keep_alive: bool, extra: bytes = b"") -> bytes:
    """The response head for the client; `extra` is pre-encoded proxy fields (e.g. HSTS)."""
    parts = [status_line(resp.status, resp.reason)]
    for name, value in resp.fields:
        parts += (name, b": ", value, CRLF)
    if mode == 1:
        parts += (b"Content-Length: ", b"%d" % resp.content_length, CRLF)
    elif mode == 2:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif mode == 0 and resp.content_length >= 0 and resp.status >= 200 and resp.status != 204:
        parts += (b"Content-Length: ", b"%d" % resp.content_length, CRLF)  # HEAD/304 keep it; 204 never has one
    if resp.status == 101:
        parts.append(b"Connection: upgrade\r\nUpgrade: websocket\r\n")
    elif not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts += (extra, CRLF)
    return b"".join(parts)


_date_line = [b""]  # "Date: ...\r\n" for the proxy's own responses; set by the adapter's clock tick


def set_date(http_date: bytes) -> None:
    """The current IMF-fixdate (RFC 9110 section 5.6.7), refreshed once a second by the worker (no clock here)."""
    _date_line[0] = b"Date: " + http_date + CRLF


def build_local_response(status: int, body: bytes, keep_alive: bool, extra: bytes = b"") -> bytes:
    """A response the proxy makes itself (errors, redirects): short text body, always length-delimited."""
    return b"".join((
        STATUS_LINES[status], _date_line[0], b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: ",
        b"%d" % len(body), CRLF, b"" if keep_alive else b"Connection: close\r\n", extra, CRLF, body,
    ))


def chunk(data: bytes) -> bytes:
    """One chunk of our own framing (no extensions; hardening item 16)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
