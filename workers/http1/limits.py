"""Size limits of the HTTP/1.1 cores, with the precedent behind each default.

They are counted on raw bytes by the cores (not by the parser), so that an attacker cannot make a
worker buffer more than these bounds per connection.
"""

from __future__ import annotations

# nginx large_client_header_buffers is 4 x 8k: a request line or a header line over 8 KiB is refused
# (414 / 431 there too); h11 allows 16 KiB for the whole head, Envoy 60 KiB, HAProxy tune.bufsize 16 KiB.
MAX_REQUEST_LINE_BYTES = 8 * 1024
MAX_FIELD_LINE_BYTES = 8 * 1024
MAX_HEAD_BYTES = 32 * 1024  # between h11's 16 KiB and Envoy's 60 KiB; fits 4 nginx 8k buffers
MAX_HEADER_COUNT = 100  # Envoy's default max_headers_count and Go's net/http ballpark
# chunk-size line with extensions: nginx and HAProxy bound it by their buffers; 4 KiB is plenty for a
# hex size (we forward no extensions), and trailers by one field line limit
MAX_CHUNK_LINE_BYTES = 4 * 1024
MAX_TRAILER_BYTES = 8 * 1024
# responses from backends are trusted more: Envoy allows 60 KiB of response head, nginx proxy_buffer 4-8k+
MAX_RESPONSE_HEAD_BYTES = 64 * 1024
HEAD_FEED_SLICE = 4 * 1024  # feed the parser at most this much while a head is incomplete (limits checked between)


class Limits:
    """Per-connection limits; body size 0 = unlimited."""

    __slots__ = ("body_bytes", "chunk_line_bytes", "field_line_bytes", "head_bytes", "header_count", "plain_bytes",
                 "request_line_bytes", "response_head_bytes")

    def __init__(self, *, body_bytes: int = 0, request_line_bytes: int = MAX_REQUEST_LINE_BYTES,
                 field_line_bytes: int = MAX_FIELD_LINE_BYTES, head_bytes: int = MAX_HEAD_BYTES,
                 header_count: int = MAX_HEADER_COUNT, chunk_line_bytes: int = MAX_CHUNK_LINE_BYTES,
                 response_head_bytes: int = MAX_RESPONSE_HEAD_BYTES) -> None:
        self.body_bytes = body_bytes
        self.request_line_bytes = request_line_bytes
        self.field_line_bytes = field_line_bytes
        self.head_bytes = head_bytes
        self.header_count = header_count
        self.chunk_line_bytes = chunk_line_bytes
        self.response_head_bytes = response_head_bytes
        # a head no longer than this cannot break a line or head limit (the fast lane's bound, simple.py)
        self.plain_bytes = min(request_line_bytes, field_line_bytes, head_bytes)
