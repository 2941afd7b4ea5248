"""The downstream (client-facing) HTTP/1.1 core: bytes from the client in, request events out.

Theory of operation: `feed(data)` runs httptools' llhttp parser over the bytes. Its callbacks only
record: a validated `RequestHead`, body chunks and message ends are appended to `events` as
(EV_*, payload) pairs, and the adapter acts on them after `feed` returns. Acting only after the
parser returns matters: llhttp reports some framing errors after `on_headers_complete`
(http1-hardening item 2). If `feed` completed N messages before an error, their events are still
returned (serve them, then answer the error). While a head is incomplete the bytes are fed in
HEAD_FEED_SLICE pieces so that head limits hold however large the read was. llhttp reports no byte
positions, so after each llhttp call that involved a chunked body `_walk_chunked` follows the bytes of
that call beside it (ChunkLines), to bound each chunk line and the trailer section exactly however
the reads are cut (hardening item 12); it measures, and llhttp alone decides what a message is.

Must not: do I/O, read clocks, log, or resynchronise after an error (ERROR is final).
"""

from __future__ import annotations

import re

import httptools

from fastingress.table.normalize import PLAIN_TARGET_BYTES, normalize_host, normalize_path
from workers.http1.chunked import LOST, OVER, ChunkLines, blank_line_end
from workers.http1.errors import RemoteProtocolError
from workers.http1.limits import HEAD_FEED_SLICE, Limits
from workers.http1.request_head import RequestHead, build_request_head, plain_head
from workers.http1.simple import TARGET_CHARS, simple_fields, simple_target
from workers.http1.states import TRANSITIONS, ConnState, check_transition

IDLE, RECV_HEAD, RECV_BODY = ConnState.IDLE, ConnState.RECV_HEAD, ConnState.RECV_BODY
MUST_CLOSE, TUNNEL, ERROR = ConnState.MUST_CLOSE, ConnState.TUNNEL, ConnState.ERROR

EV_HEAD = 0
EV_BODY = 1
EV_END = 2
EV_UPGRADE = 3  # a validated WebSocket upgrade head is complete; payload: the bytes after it

_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # RFC 9110 5.6.2
_VERSION_AT_END = re.compile(rb" [A-Z]+/(\d+)\.\d+\s*$")
RECENT_KEEP = 40 * 1024  # a head is at most 32 KiB: its request line is within what we keep
# the chunk-line walk (ChunkLines, _walk_chunked)
_CR_LF = (13, 10)
_EMPTY_LINES = re.compile(rb"[\r\n]*")  # llhttp skips empty lines before a request line (RFC 9112 section 2.2)
_START, _HEAD, _BODY, _CHUNKED = 0, 1, 2, 3  # _walk_chunked: where it is in the messages of one llhttp call


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
        "_feeding",
        "_head",
        "_head_bytes",
        "_known_start",
        "_parser",
        "_plain",
        "_plain_bytes",
        "_plain_check",
        "_plain_memo",
        "_raw",
        "_read_idle",
        "_tracker",
        "_trailer_bytes",
        "_upgrade_buf",
        "_url",
        "_walk",
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
        self._trailer_bytes = 0
        self.body_received = 0
        self._carry = b""
        self._feeding = b""
        self._walk = False  # the llhttp call just made involved a chunked body: walk its bytes (_walk_chunked)
        self._tracker: ChunkLines | None = None  # the chunked body in progress at the end of the last walk
        self._read_idle = True
        self._known_start = False
        self._upgrade_buf: bytes | None = None
        self._plain_check = _PlainCheck()
        self._plain = httptools.HttpRequestParser(self._plain_check)
        # (field lines after the request line as received, Host value, normalised host, field lines to forward);
        # until a plain request sets it, a tail longer than any read feed_simple takes, so it never matches
        self._plain_memo: tuple[bytes, bytes, bytes, bytes] = (b"\n" * (limits.plain_bytes + 1), b"", b"", b"")
        self._plain_bytes = limits.plain_bytes

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
        first = 0  # the first event of this pass
        while True:
            state = self.state
            if state is ERROR or state is MUST_CLOSE or state is TUNNEL:
                return events, None  # nothing more is parsed on this connection
            self._feeding = data  # a head completing in this read is in _carry + data (request-line check)
            self._read_idle = state is IDLE
            try:
                if state is RECV_BODY or len(data) <= HEAD_FEED_SLICE:
                    # hot path: _execute inlined (one call into llhttp for the read; bench_hotpath)
                    carry = self._carry
                    try:
                        self._parser.feed_data(data)
                    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                        if self._walk:
                            self._walk_chunked(data, 0, len(data), first, state, carry, True)
                        raise
                    if self._walk:
                        self._walk_chunked(data, 0, len(data), first, state, carry, False)
                    if state is not RECV_BODY and self.state is RECV_HEAD:
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
                first = len(events)
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
        memo = self._plain_memo
        tail = memo[0]
        if data.endswith(tail) and data.startswith(b"GET /") and len(data) <= self._plain_bytes:
            # hot path: the same field lines as the previous plain request on this connection (keep-alive
            # clients repeat them), so only the request line is new. A target of plain bytes (no space,
            # CR or LF: the line is exactly "GET SP target SP HTTP/1.1", what simple_target asks) without
            # "//" is already normal (normalize_path returns it as it is) and llhttp accepts it with the
            # field lines it accepted before: the same head as below, without scanning the read again.
            line_end = len(data) - len(tail)
            if data[line_end - 9: line_end] == b" HTTP/1.1":
                target = data[4: line_end - 9]
                if not target.translate(None, PLAIN_TARGET_BYTES) and target.find(b"//") < 0:
                    q = target.find(b"?")
                    if q < 0:
                        return plain_head(target, memo[2], memo[1], target, b"", memo[3])
                    return plain_head(target, memo[2], memo[1], target[:q], target[q:], memo[3])
        line_end = simple_target(data, self.limits)
        if line_end < 0:
            return None
        target = data[4: line_end - 9]
        if data.endswith(tail) and len(data) - len(tail) == line_end:
            # the same field lines as before, a target with "." or "%" (normalised below). llhttp accepted
            # these field lines already; it accepts any request-target of these characters
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
        return plain_head(target, host, host_header, normal[0], normal[1], fields)

    def _execute(self, data: bytes, pos: int, end: int, first: int, state: ConnState) -> None:
        """One llhttp call over data[pos:end] (its events from events[first], begun in `state`), then the
        chunk-line walk when it involved a chunked body."""
        carry = self._carry  # kept for the walk: a message beginning in this call resets it
        try:
            self._parser.feed_data(data if pos == 0 and end == len(data) else memoryview(data)[pos:end])
        except httptools.HttpParserUpgrade as exc:
            if self._walk:
                self._walk_chunked(data, pos, end, first, state, carry, True)
            if pos:  # the offset is into the bytes of this call: make it one into data
                raise httptools.HttpParserUpgrade(pos + int(exc.args[0])) from None
            raise
        except httptools.HttpParserError:
            if self._walk:
                self._walk_chunked(data, pos, end, first, state, carry, True)
            raise
        if self._walk:
            self._walk_chunked(data, pos, end, first, state, carry, False)

    def _feed_sliced(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos < size:
            state = self.state
            if state is RECV_BODY:
                self._execute(data, pos, size, len(self.events), state)
                return
            end = min(pos + HEAD_FEED_SLICE, size)
            self._execute(data, pos, end, len(self.events), state)
            if self.state is RECV_HEAD:
                self._count_head(end - pos)
            pos = end

    def _walk_chunked(self, data: bytes, pos: int, end: int, first: int, state: ConnState, carry: bytes,
                      failed: bool) -> None:
        """Bound the chunk framing in data[pos:end], which llhttp has just parsed (or `failed` on).

        The call began in `state` (`carry`: the bytes kept before it); its events begin at events[first]
        and place its messages: a head ends at its first blank line, a Content-Length body spans its body
        events, and a chunked body is followed by its ChunkLines, kept across calls. A line or trailer
        section over its bound drops the events after it and raises the 400. What the walk cannot follow
        (llhttp rejects it) ends the tracking of the current message.
        """
        events, count = self.events, len(self.events)
        i = body_at = first
        tracker = self._tracker if state is RECV_BODY else None
        before = b""
        if state is RECV_BODY:
            step = _BODY if tracker is None else _CHUNKED
        elif state is RECV_HEAD:
            step = _HEAD  # a head begun before this call: its blank line may straddle the seam
            before = data[pos - 3:pos] if pos >= 3 else (carry + data[:pos])[-3:]
        else:
            step = _START
        while True:
            if step == _CHUNKED:
                assert tracker is not None
                found = tracker.walk(data, pos, end, self.limits)
                if found < 0:
                    if found != -1:
                        self._framing_too_large(body_at, tracker.body, failed, OVER[found])
                        tracker.mode = LOST  # llhttp failed before that point: its error stands
                    break
                while i < count and events[i][0] == EV_BODY:
                    i += 1
                if i >= count or events[i][0] != EV_END:  # llhttp failed before the end found here
                    tracker.mode = LOST
                    break
                i, pos, step, tracker = i + 1, found, _START, None
            if step == _START:
                if pos < end and data[pos] in _CR_LF:
                    pos = _EMPTY_LINES.match(data, pos, end).end()  # type: ignore[union-attr]
                step, before = _HEAD, b""
            if step == _HEAD:
                if i >= count:
                    break  # no further head is complete in this call
                if before:
                    pos = blank_line_end(data, pos, end, before)
                else:
                    found = data.find(b"\r\n\r\n", pos, end)
                    pos = found + 4 if found >= 0 else -1
                head = events[i][1]
                if pos < 0 or events[i][0] != EV_HEAD or not isinstance(head, RequestHead):
                    tracker = ChunkLines(LOST)
                    break
                i = body_at = i + 1
                if head.chunked:
                    step, tracker = _CHUNKED, ChunkLines()
                    continue
            while i < count and events[i][0] == EV_BODY:  # _BODY: a Content-Length body, or none
                pos += len(events[i][1])  # type: ignore[arg-type]
                i += 1
            if i >= count:
                break  # the message goes on after this call
            if events[i][0] != EV_END:
                tracker = ChunkLines(LOST)
                break
            i, step = i + 1, _START
        self._tracker = tracker
        self._walk = tracker is not None and tracker.mode != LOST

    def _framing_too_large(self, body_at: int, before: int, failed: bool, what: str) -> None:
        """A chunk line or the trailer section of the message whose body events begin at events[body_at]
        is too large: keep its events up to the `before` body bytes ahead of that point and raise the
        400, unless llhttp `failed` before it (its events stop short of it): then its own error stands."""
        events = self.events
        keep, seen = body_at, 0
        while keep < len(events) and events[keep][0] == EV_BODY:
            size = len(events[keep][1])  # type: ignore[arg-type]
            if seen + size > before:
                break
            seen, keep = seen + size, keep + 1
        if failed and seen < before and keep == len(events):
            return
        del events[keep:]
        raise RemoteProtocolError(what, 400)

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
        self._head_bytes = self._trailer_bytes = self.body_received = 0
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
        self._trailer_bytes += n
        if self._trailer_bytes > self.limits.field_line_bytes:
            raise RemoteProtocolError("trailer section too large", 400)

    def on_headers_complete(self) -> None:
        head = build_request_head(self._parser, self._url, self._raw, self.limits)
        # hardening item 5: the request line must end in HTTP/1.x (llhttp also accepts RTSP/ and ICE/)
        if b" " + self._url + b" HTTP/1." not in self._carry + self._feeding:
            raise RemoteProtocolError("the request line must end in HTTP/1.0 or HTTP/1.1", 400)
        self._head = head
        if head.chunked:
            self._walk = True
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
