"""Chunked-body framing walk for the request core: bounds each chunk line and the trailer section exactly.

`ServerConn._walk_chunked` follows the bytes of each llhttp call that involved a chunked body with a
`ChunkLines`, because llhttp reports no byte positions (http1-hardening item 12). The walk measures and
never decides: llhttp alone says what a message is.

Must not: do I/O, allocate per byte, or repeat llhttp's syntax checks.
"""

from __future__ import annotations

import re

from workers.http1.limits import Limits

_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]*")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]++)[^\n]*+\n")  # possessive: no backtracking over a long line
LINE, DATA, TRAILERS, LOST = 0, 1, 2, 3  # ChunkLines.mode
TOO_LONG = -2  # ChunkLines.walk: a chunk line is over the limit
TOO_LARGE = -3  # ChunkLines.walk: the trailer section is over its bound
OVER = {TOO_LONG: "chunk line too long", TOO_LARGE: "trailer section too large"}


def blank_line_end(data: bytes, pos: int, end: int, before: bytes) -> int:
    """The end of the first CRLF CRLF in `before` + data[pos:end], as a position in data; -1: none."""
    if before:  # at most 3 bytes, so an occurrence in the seam straddles it and comes first
        seam = (before + data[pos:min(pos + 3, end)]).find(b"\r\n\r\n")
        if seam >= 0:
            return pos + seam + 4 - len(before)
    found = data.find(b"\r\n\r\n", pos, end)
    return found + 4 if found >= 0 else -1


class ChunkLines:
    """Follows the framing of one chunked body so that each chunk line is bounded exactly (item 12).

    It measures and never decides: llhttp alone parses the message, and this walk only rejects a
    chunk-size line (size and extensions, CRLF excluded) of more than `chunk_line_bytes`, or a trailer
    section of more than twice `field_line_bytes` on the wire, however the reads are cut. (on_header
    bounds the trailers' names and values to `field_line_bytes`, but only once a field line is complete:
    until then httptools accumulates the value, read after read; the factor 2 leaves room for the
    field syntax and whitespace.) The work is per chunk, not per byte: a line is matched within the
    limit by one regex, chunk data and its CRLF are skipped by arithmetic, and the trailer section ends
    at its blank line. A line without a hex digit makes llhttp reject the message: the walk stops there
    (LOST) rather than repeat llhttp's checks.
    """

    __slots__ = ("body", "digits", "left", "mode", "seen", "size", "tail")

    def __init__(self, mode: int = LINE) -> None:
        self.mode = mode
        self.seen = 0  # LINE: bytes of the current line in earlier calls; TRAILERS: of the trailer section
        self.size = -1  # LINE: the chunk size read so far; -1: no hex digit yet
        self.digits = True  # LINE: the size's hex digits may go on
        self.left = 0  # DATA: chunk data bytes plus their CRLF still to come
        self.tail = b""  # TRAILERS: the last bytes (at most 3) seen
        self.body = 0  # chunk data bytes passed in the last walk() call

    def walk(self, data: bytes, pos: int, end: int, limits: Limits) -> int:
        """Follow data[pos:end]: the position after the end of the message, -1 (it goes on), TOO_LONG or
        TOO_LARGE."""
        body = 0
        window = limits.chunk_line_bytes + 2  # a line within the limit has its LF before its start + window
        while True:
            mode = self.mode
            if mode == DATA:
                left = self.left
                if end - pos < left:  # the call ends within this chunk's data or its CRLF
                    n, data_left = end - pos, left - 2
                    self.left = left - n
                    self.body = body + (n if n < data_left else data_left if data_left > 0 else 0)
                    return -1
                if left > 2:
                    body += left - 2
                pos += left
                self.mode = mode = LINE
            if mode == LINE:
                if pos >= end:
                    self.body = body
                    return -1
                if not self.seen:
                    # hot path: a whole line costs one regex match and one int(); the whole chunks that
                    # follow it in this call are skipped in this loop (bench: small chunks, many per read)
                    stop = pos + window
                    line = _CHUNK_LINE.match(data, pos, stop if stop < end else end)
                    while line is not None:
                        size = int(line[1], 16)
                        pos = line.end()
                        if not size or end - pos < size + 2:
                            break
                        body += size
                        pos += size + 2
                        if pos == end:
                            self.body = body
                            return -1
                        stop = pos + window
                        line = _CHUNK_LINE.match(data, pos, stop if stop < end else end)
                    if line is not None:
                        if size:
                            self.mode, self.left = DATA, size + 2
                        else:
                            self.mode, self.tail = TRAILERS, b"\r\n"  # the last chunk's line ended with CRLF
                        continue
                pos = self._line(data, pos, end, window)
                if pos < 0:
                    self.body = body
                    return pos
                continue
            self.body = body
            if mode == TRAILERS:
                tail = self.tail
                if tail == b"\r\n" and data.startswith(b"\r\n", pos, end):
                    return pos + 2  # no trailer fields, the usual case
                found = blank_line_end(data, pos, end, tail)
                seen = self.seen + (end if found < 0 else found) - pos
                if seen > 2 * limits.field_line_bytes:
                    return TOO_LARGE
                if found < 0:
                    self.seen = seen
                    self.tail = (tail + data[max(pos, end - 3):end])[-3:]
                return found
            return -1  # LOST

    def _line(self, data: bytes, pos: int, end: int, window: int) -> int:
        """A line the hot path could not take whole: one that goes on past `end` or began before this
        call, one too long, or one without a hex digit. Returns the position after it, -1 (the call ends
        within it) or TOO_LONG."""
        stop = pos + window - self.seen
        line_end = min(stop, end)
        nl = data.find(b"\n", pos, line_end)
        if nl < 0 and stop <= end:
            return TOO_LONG
        if nl >= 0:
            line_end = nl
        if self.digits:
            digits_end = _HEX_DIGITS.match(data, pos, line_end).end()  # type: ignore[union-attr]
            if digits_end > pos:
                self.size = max(self.size, 0) << 4 * (digits_end - pos) | int(data[pos:digits_end], 16)
            self.digits = digits_end == line_end
        if nl < 0:
            self.seen += end - pos
            return -1
        size = self.size
        if size < 0:
            self.mode = LOST
        elif size:
            self.mode, self.left = DATA, size + 2
        else:
            self.mode, self.tail = TRAILERS, b"\r\n"
        self.seen, self.size, self.digits = 0, -1, True
        return nl + 1
