"""The upstream (backend-facing) HTTP/1.1 core: response bytes in, response events out.

Theory of operation: the adapter calls `expect(method)` when it has sent a request, then `feed` with
what the backend sends. Callbacks record a `ResponseHead`, body chunks and the message end as
(EV_*, payload) pairs, like ServerConn. The framing decisions httptools cannot make are ours
(http1-hardening items 18-20): a HEAD response ends at its head; a 1xx with a body is refused; a
response without Content-Length or chunked ends at EOF (`eof()`); EOF inside a delimited body is a
truncation; bytes arriving when no response is expected poison the connection. `reusable` says
whether the connection may go back to the pool.

Must not: do I/O, read clocks or log.
"""

from __future__ import annotations

import httptools

from workers.http1.errors import RemoteProtocolError
from workers.http1.limits import Limits
from workers.http1.request_head import HOP_BY_HOP
from workers.http1.server_conn import EV_BODY, EV_END, EV_HEAD, EV_UPGRADE
from workers.http1.simple import SimpleResponse, simple_response

_CL = b"content-length"
_TE = b"transfer-encoding"
_CONNECTION = b"connection"


class ResponseHead:
    """A backend response head, with hop-by-hop fields already removed from `fields`."""

    __slots__ = ("chunked", "connection_tokens", "content_length", "fields", "keep_alive", "reason", "status",
                 "upgrade", "version")

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.version = b"1.1"
        self.fields: list[tuple[bytes, bytes]] = []
        self.content_length = -1
        self.chunked = False
        self.keep_alive = True
        self.upgrade = b""
        self.connection_tokens: tuple[bytes, ...] = ()


_RESPONSE_SPECIAL = HOP_BY_HOP | {_CL}
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b"upgrade"})  # tokens that name no field to drop


def _interpret(head: ResponseHead, lname: bytes, value: bytes) -> None:
    """Framing and hop-by-hop response fields: recorded on the head, never forwarded as received."""
    if lname == _CONNECTION:
        head.connection_tokens += tuple(t.strip(b" \t").lower() for t in value.split(b",") if t.strip())
    elif lname == _CL:
        if head.content_length != -1 and str(head.content_length).encode() != value:
            head.content_length = -2  # conflicting lengths (llhttp refuses duplicates; kept explicit)
        else:
            head.content_length = int(value) if value.isdigit() and len(value) <= 18 else -2
    elif lname == _TE:
        head.chunked = True
    elif lname == b"upgrade":
        head.upgrade = value.lower()


class _HeadComplete(Exception):
    """Raised from on_headers_complete to stop parsing a HEAD response at its head (item 19)."""


class _NoCallbacks:
    """The plain-response parser's sink: none. llhttp accepted the head, so it frames the body by the one
    Content-Length we read too (it refuses a second one), and we feed it exactly the body's bytes:
    the message ends where our count says, without a callback to confirm it."""

    __slots__ = ()


PLAIN_HEADS_MAX = 512  # distinct heads remembered per worker; then forgotten all at once
PLAIN_HEAD_MAX_BYTES = 2048  # longer heads are checked every time: the memo stays under 1 MiB
MEMO_WINDOW = 4096  # lookups over which the memo's hit ratio is judged
MEMO_MIN_HITS = 1 / 4  # below this ratio a lookup costs more than it saves (measured: +4.5k vs -15k instructions)
MEMO_PAUSE = 16 * MEMO_WINDOW  # responses checked without the memo before it is tried again


class PlainHeads:
    """A worker's memo of the plain response heads the fast lane accepted, for all its backend connections.

    head bytes through the blank line -> (status, Content-Length). A backend sends the same head for the
    same resource over and over (its Date changes once a second), and bytes llhttp accepted from a message
    boundary it accepts again, so a remembered head skips both simple_response and the plain parser. A
    lookup that misses costs about a third of what a hit saves, so when fewer than MEMO_MIN_HITS of a
    window's lookups hit (backends that put a request id or a cookie in every head), the memo pauses
    for MEMO_PAUSE responses, then tries again.

    The head found last (`last_key`, `last`) is tried first, by comparing the read's first bytes with
    it: most responses repeat the one before, and that costs one comparison instead of slicing the head
    out of the read and hashing it. Its bytes object is then the same from response to response, so
    lookups keyed by `ClientConn.head_key` (FieldHeads) find its hash already computed.
    """

    __slots__ = ("hits", "known", "last", "last_key", "misses", "paused")

    def __init__(self) -> None:
        self.known: dict[bytes, tuple[int, int]] = {}
        self.last_key = b""  # a remembered head (through its blank line), b"" when none
        self.last = (0, 0)  # what `known` says for it
        self.hits = 0
        self.misses = 0
        self.paused = 0  # responses still to check without the memo

    def remember(self, key: bytes, status: int, content_length: int) -> None:
        """A head that missed and was then accepted; judges the window when it is full."""
        known = self.known
        if len(known) >= PLAIN_HEADS_MAX:
            known.clear()
        known[key] = self.last = (status, content_length)
        self.last_key = key
        self.misses += 1
        if self.hits + self.misses >= MEMO_WINDOW:
            if self.hits < MEMO_MIN_HITS * MEMO_WINDOW:
                self.paused = MEMO_PAUSE
                known.clear()  # `last_key` stays: bytes llhttp accepted once are accepted again
            self.hits = self.misses = 0


class ClientConn:
    """Parses responses from one backend connection.

    `heads` is the worker's memo of plain response heads (PlainHeads; its connections share it and are
    created with the same `limits`). The plain parser sees none of a message whose head was remembered,
    so it stays at a message boundary (`_plain_fed` says whether it saw the current message).
    """

    __slots__ = ("_head", "_head_bytes", "_head_request", "_heads", "_parser", "_plain", "_plain_fed", "_raw",
                 "_reason", "body_received", "complete", "events", "expecting", "head_key", "in_message", "limits",
                 "remaining", "reusable")

    def __init__(self, limits: Limits, heads: PlainHeads | None = None) -> None:
        self.limits = limits
        self._heads = PlainHeads() if heads is None else heads
        self._parser = httptools.HttpResponseParser(self)
        self._plain = httptools.HttpResponseParser(_NoCallbacks())
        self._plain_fed = False
        self.remaining = 0  # body bytes still due of a plain response
        self.head_key = b""  # the plain response's head through its blank line, as the memo keyed it (or b"")
        self.events: list[tuple[int, object]] = []
        self.expecting = False  # a request is outstanding
        self.reusable = False
        self._reset()

    def _reset(self) -> None:
        self._head: ResponseHead | None = None
        self._raw: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_bytes = 0
        self.in_message = False
        self.complete = False
        self.body_received = 0

    def expect(self, method: bytes) -> None:
        """A request was sent; its response comes next."""
        self._reset()
        self.expecting = True
        self.reusable = False
        self._head_request = method == b"HEAD"

    # --- the fast lane: plain responses to plain GETs ---
    def feed_simple(self, data: bytes) -> SimpleResponse | None:
        """The first read of the response to a plain GET: a plain head (simple.simple_response)?

        Then the head and the body bytes in this read went through the callback-free llhttp parser
        and `remaining` counts the body still due (negative: surplus bytes, item 20). None: not
        plain, or llhttp objects; nothing was consumed and the caller uses expect() + feed().
        """
        memo = self._heads
        if memo.paused:
            memo.paused -= 1
            key = b""
        else:
            key = memo.last_key
            known: tuple[int, int] | None
            if key and data.startswith(key):  # the head of the last response (the key ends at its blank line)
                known = memo.last
            else:
                blank = data.find(b"\r\n\r\n") + 4
                key = data[:blank] if 4 <= blank <= PLAIN_HEAD_MAX_BYTES else b""
                known = memo.known.get(key) if key else None
                if known is not None:
                    memo.last_key = key
                    memo.last = known
            if known is not None:
                memo.hits += 1
                status, content_length = known
                blank = len(key)
                remaining = content_length - (len(data) - blank)
                self.head_key = key
                self._plain_fed = False
                self.remaining = remaining
                self.reusable = remaining == 0
                return status, blank - 4, content_length
        found = simple_response(data, self.limits)
        if found is None:
            return None
        status, head_end, content_length = found
        remaining = content_length - (len(data) - head_end - 4)
        try:
            self._plain.feed_data(data if remaining >= 0 else data[: len(data) + remaining])
        except httptools.HttpParserError:
            self._plain = httptools.HttpResponseParser(_NoCallbacks())  # spoiled; the full path answers
            return None
        if key:
            memo.remember(key, status, content_length)
        self.head_key = key
        self._plain_fed = True
        self.remaining = remaining
        self.reusable = remaining == 0
        return found

    def feed_simple_body(self, data: bytes) -> int:
        """More body of a plain response; returns how many bytes of `data` belong to it."""
        due = self.remaining
        n = len(data) if len(data) <= due else due
        if self._plain_fed:
            self._plain.feed_data(data if n == len(data) else data[:n])  # a counted body: llhttp cannot object
        self.remaining = due - len(data)
        self.reusable = self.remaining == 0
        return n

    # --- input ---
    def feed(self, data: bytes) -> tuple[list[tuple[int, object]], RemoteProtocolError | None]:
        events, error = self._feed(data)
        if error is not None:
            self.reusable = False
        return events, error

    def _feed(self, data: bytes) -> tuple[list[tuple[int, object]], RemoteProtocolError | None]:
        events = self.events = []
        if self._head is None:
            self._head_bytes += len(data)  # a head arriving over several reads (checked below)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            events.append((EV_UPGRADE, data[int(exc.args[0]):]))
        except httptools.HttpParserCallbackError as exc:
            inner = exc.__context__
            if isinstance(inner, _HeadComplete):
                self._finish(reusable=False)  # never reuse after HEAD: the parser stopped mid-stream
            elif isinstance(inner, RemoteProtocolError):
                return events, inner
            else:
                return events, RemoteProtocolError(f"bad response: {exc}", 502)
        except httptools.HttpParserError as exc:
            return events, RemoteProtocolError(f"bad response: {exc}", 502)
        if self._head is None and self._head_bytes > self.limits.response_head_bytes:
            return events, RemoteProtocolError("response head too large", 502)
        return events, None

    def eof(self) -> tuple[list[tuple[int, object]], RemoteProtocolError | None]:
        """The backend closed: completes a close-delimited body, else it is a truncation (or idle close)."""
        events = self.events = []
        head = self._head
        if head is not None and not self.complete and head.content_length < 0 and not head.chunked:
            self._finish(reusable=False)
            return events, None
        if self.in_message or (self.expecting and not self.complete):
            return events, RemoteProtocolError("backend closed the connection mid-response", 502)
        return events, None

    # --- httptools callbacks ---
    def on_message_begin(self) -> None:
        if not self.expecting:
            raise RemoteProtocolError("backend sent bytes with no request outstanding", 502)
        self.in_message = True

    def on_status(self, reason: bytes) -> None:
        self._reason = self._reason + reason if self._reason else reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))  # hot path: only record; interpreted once in on_headers_complete

    def on_headers_complete(self) -> None:
        raw = self._raw
        if len(raw) > self.limits.header_count:
            raise RemoteProtocolError("too many response header fields", 502)
        self._head = head = ResponseHead()
        fields = head.fields
        size = len(self._reason)
        for name, value in raw:
            size += len(name) + len(value)
            lname = name.lower()
            if lname in _RESPONSE_SPECIAL:
                # hot path: the two fields nearly every response has, decided inline
                if lname == _CL and head.content_length == -1 and value.isdigit() and len(value) <= 18:
                    head.content_length = int(value)
                elif lname != _CONNECTION or value.lower() != b"keep-alive":
                    _interpret(head, lname, value.strip(b" \t"))
            else:
                fields.append((name, value.rstrip(b" \t")))
        if size > self.limits.response_head_bytes:  # a whole oversized head may arrive in one read
            raise RemoteProtocolError("response head too large", 502)
        parser = self._parser
        head.status = status = parser.get_status_code()
        head.reason = self._reason
        head.version = b"1.1" if parser.get_http_version() == "1.1" else b"1.0"
        head.keep_alive = parser.should_keep_alive()
        if head.content_length == -2:
            raise RemoteProtocolError("invalid Content-Length from backend", 502)
        drop = head.connection_tokens
        if drop and any(t not in _CONNECTION_OPTIONS for t in drop):
            head.fields = [(n, v) for n, v in fields if n.lower() not in drop]
        if status < 200 and (head.content_length >= 0 or head.chunked):
            raise RemoteProtocolError("1xx response with a body", 502)
        self.events.append((EV_HEAD, head))
        if self._head_request and status >= 200:
            raise _HeadComplete

    def on_body(self, body: bytes) -> None:
        self.body_received += len(body)
        self.events.append((EV_BODY, body))

    def on_message_complete(self) -> None:
        head = self._head
        if head is not None and 100 <= head.status < 200 and head.status != 101:
            self._reset()  # informational: the final response follows on the same message slot
            return
        delimited = head is not None and (head.content_length >= 0 or head.chunked or head.status in (204, 304))
        self._finish(reusable=bool(head and head.keep_alive and delimited and head.status != 101))

    def _finish(self, reusable: bool) -> None:
        self.complete = True
        self.in_message = False
        self.expecting = False
        self.reusable = reusable
        self.events.append((EV_END, None))
