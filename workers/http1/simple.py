"""Recognise the plain messages that need no per-field interpretation: the proxy's fast lane.

Most requests through an ingress are a keep-alive `GET` whose head arrives in one read, with one
Host, maybe `Connection: keep-alive`, and nothing else the proxy must interpret; most responses are
a keep-alive head with one `Content-Length`. For those, walking every field in Python (one parser
callback and one classification step per field, on both sides) is most of the proxy's cost
(docs/performance.md). These functions decide with C-level bytes operations and one regular
expression whether a message is that plain, and if so return what the proxy needs to forward it
with its field lines copied as received. Anything else returns None and takes the full path
(ServerConn / ClientConn), which owns every error answer.

Recognising is not validating: the caller still runs the message through httptools (a second,
callback-free parser instance per connection, fed only whole plain messages) and takes the full path
when llhttp objects. llhttp (strict, as we run it) refuses bare CR or LF, obs-fold, bad tokens and
control characters, so once it accepts the bytes every line ends in CRLF and the `\r\n<name>:`
scans below see exactly the field lines. The conditions here are deliberately narrow; a false "not
plain" costs only speed, a false "plain" would be a hardening bug, so each condition names the
http1-hardening item it preserves.

Must not: do I/O, allocate per field, or raise on any input.
"""

from __future__ import annotations

import re

from fastingress.table.normalize import PLAIN_TARGET_BYTES
from workers.http1.limits import Limits

# Request fields the proxy interprets or owns (request_head._SPECIAL) other than Host, and any
# Connection that is not exactly `keep-alive`. llhttp refuses whitespace before ":", so a name is
# always followed by ":" directly.
_REQUEST_OTHER = re.compile(
    rb"\r\n(?:(?:content-length|transfer-encoding|keep-alive|proxy-connection|te|trailer|upgrade|http2-settings"
    rb"|expect|x-forwarded-[^:\r\n]*|x-real-ip|x-request-id):|connection:(?![ \t]*keep-alive\r\n))")
_UNDERSCORE_NAME = re.compile(rb"\r\n[^:\r\n]*_")  # hardening item 15: such fields are dropped (full path)
# Response fields with framing or hop-by-hop meaning (client_conn._RESPONSE_SPECIAL) other than
# Content-Length, and any Connection that is not exactly `keep-alive`
_RESPONSE_OTHER = re.compile(  # factored by first letter: sre tries fewer branches per line
    rb"\n(?:t(?:ransfer-encoding|e|railer):|keep-alive:|proxy-connection:|upgrade:|http2-settings:"
    rb"|connection:(?![ \t]*keep-alive\r\n))")
_DIGITS = b"0123456789"
# request-target bytes llhttp accepts anywhere in an origin-form target: RFC 3986 pchar, "/", "?"
# (a strict subset of its URL character table, which admits every visible ASCII character)
TARGET_CHARS = PLAIN_TARGET_BYTES + b".%"
_NO_BODY = (b"204", b"304")
_HOST = b"\r\nhost:"
_CONNECTION = b"\r\nconnection:"
# a Content-Length of digits only (no sign, no "_" that int() would accept), at most 18 of them
_CONTENT_LENGTH_LINE = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,18})[ \t]*\r\n")


def _keep_alive_line(lowered: bytes, start: int) -> tuple[int, int] | None:
    """(start, end) of the one `Connection: keep-alive` line to drop, (0, 0) if none; None if two."""
    c = lowered.find(_CONNECTION, start)
    if c < 0:
        return 0, 0
    end = lowered.find(b"\r\n", c + 2) + 2
    if lowered.find(_CONNECTION, end - 2) >= 0:
        return None
    return c + 2, end


def simple_target(data: bytes, limits: Limits) -> int:
    """The request line of a read that is exactly one plain GET head: the index of its CRLF, or -1."""
    # items 5 and 7 (origin-form); item 12: a read no longer than one line limit cannot break the
    # request line, field line or head limit
    if not data.startswith(b"GET /") or len(data) > limits.plain_bytes:
        return -1
    line_end = data.find(b"\r\n")
    # exactly one complete head, no body, nothing pipelined behind it; the request line ends in HTTP/1.1
    if data.find(b"\r\n\r\n", line_end) != len(data) - 4 or data[line_end - 9: line_end] != b" HTTP/1.1":
        return -1
    # items 5 and 7: exactly "GET SP target SP HTTP/1.1"; a bare LF would end an HTTP/0.9 line for llhttp
    if data.count(b" ", 0, line_end) != 2 or data.find(b"\n", 0, line_end) >= 0:
        return -1
    return line_end


def simple_fields(data: bytes, line_end: int, limits: Limits) -> tuple[bytes, bytes] | None:
    """The field lines of a plain GET head (after simple_target) -> (Host value, field lines to forward).

    The field lines are the head's lines after the request line, each with its CRLF, without a
    `Connection: keep-alive` line (hop-by-hop). None: not plain, use the full path.
    """
    if data.count(b"\n") - 2 > limits.header_count:  # item 12 (lines end in CRLF: llhttp checks it)
        return None
    lowered = data.lower()
    if _REQUEST_OTHER.search(lowered, line_end) is not None:
        return None
    h = lowered.find(_HOST, line_end)
    if h < 0 or lowered.find(_HOST, h + 7) >= 0:  # item 8: exactly one Host
        return None
    if lowered.find(b"_") >= 0 and _UNDERSCORE_NAME.search(lowered, line_end) is not None:
        return None
    cut = _keep_alive_line(lowered, line_end)
    if cut is None:
        return None
    host = data[h + 7: data.find(b"\r\n", h + 7)].strip(b" \t")  # item 13
    cut_start, cut_end = cut
    base = line_end + 2
    if cut_end:
        return host, data[base:cut_start] + data[cut_end:-2]
    return host, data[base:-2]


def simple_request(data: bytes, limits: Limits) -> tuple[bytes, bytes, bytes] | None:
    """One read holding exactly one plain GET head and nothing else -> (target, Host value, field lines)."""
    line_end = simple_target(data, limits)
    if line_end < 0:
        return None
    found = simple_fields(data, line_end, limits)
    if found is None:
        return None
    return data[4: line_end - 9], found[0], found[1]


# a plain response head: (status, head_end, content_length); head_end is the index of the blank
# line's CRLF, so data[:head_end] is the head without it (a tuple: the hot path builds one per response)
SimpleResponse = tuple[int, int, int]


def closing_head(data: bytes, head_end: int) -> bytes:
    """`data` (a plain response from its first byte) with `Connection: close` for its Connection lines."""
    blank = head_end + 2
    lowered = data[:blank].lower()
    parts = []
    start = 0
    c = lowered.find(_CONNECTION)
    while c >= 0:
        parts.append(data[start: c + 2])
        start = lowered.find(b"\r\n", c + 2) + 2
        c = lowered.find(_CONNECTION, start - 2)
    parts += (data[start:blank], b"Connection: close\r\n", data[blank:])
    return b"".join(parts)


HSTS_NAME = b"strict-transport-security"  # the field WorkerContext.hsts_field adds (lower-case)


class FieldHeads:
    """Response heads with `field` added (head_with_field), remembered by the backend's head bytes.

    The key is the head through its blank line as the memo of plain response heads took it
    (`ClientConn.head_key`): the same bytes object, whose hash that lookup already computed. So a head
    the backend repeats costs a dict probe and one concatenation here instead of slicing, lower-casing
    and searching the head again (HSTS on every HTTPS response: docs/performance.md, tls-keepalive).
    Bounded like that memo: `limit` heads, then all forgotten at once.
    """

    __slots__ = ("field", "known", "limit", "name")

    def __init__(self, field: bytes, name: bytes, limit: int) -> None:
        self.field = field
        self.name = name
        self.limit = limit
        self.known: dict[bytes, bytes] = {}

    def add(self, key: bytes, data: bytes, head_end: int) -> bytes:
        """head_with_field(data, head_end, field, name); `key` is data's head through the blank line, or
        b"" when there is none to remember it by."""
        if not key:
            return head_with_field(data, head_end, self.field, self.name)
        known = self.known
        head = known.get(key)
        if head is None:
            if len(known) >= self.limit:
                known.clear()
            head = known[key] = head_with_field(key, head_end, self.field, self.name)
        return head + data[len(key):]


def head_with_field(data: bytes, head_end: int, field: bytes, name: bytes) -> bytes:
    """`data` (a plain response from its first byte) with `field` ("Name: value\\r\\n") added to its head,
    unless the head already has a field `name` (lower-case, without the colon): the backend's value wins."""
    blank = head_end + 2
    if b"\n" + name + b":" in data[:blank].lower():
        return data
    return data[:blank] + field + data[blank:]


def simple_response(data: bytes, limits: Limits) -> SimpleResponse | None:
    """The first read of a response to a GET: a plain HTTP/1.1 keep-alive head with one Content-Length?

    Plain: status 200-599 except 204 and 304 (their framing is special, item 19), a reason phrase,
    exactly one Content-Length of digits, no Transfer-Encoding or other hop-by-hop field except
    `Connection: keep-alive` (what the proxy says itself on a keep-alive client connection; see
    closing_head for the others), within the response head limits (item 18).
    """
    if data[:17] == b"HTTP/1.1 200 OK\r\n":  # most responses: the checks below, decided at once
        status = 200
    else:
        if data[:9] != b"HTTP/1.1 " or data[12:13] != b" " or data[9:10] < b"2" or data[9:10] > b"5":
            return None
        if data[13:14] == b"\r":  # no reason phrase: the full path supplies one
            return None
        code = data[9:12]
        if code in _NO_BODY or code.translate(None, _DIGITS):
            return None
        status = int(code)
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > limits.response_head_bytes:
        return None
    head = data[: end + 2]
    if head.count(b"\n") - 1 > limits.header_count:  # item 18
        return None
    lowered = head.lower()
    if _RESPONSE_OTHER.search(lowered) is not None:
        return None
    cl = _CONTENT_LENGTH_LINE.search(lowered)  # llhttp refuses a second one
    if cl is None:
        return None
    return status, end, int(cl.group(1))
