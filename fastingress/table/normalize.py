"""Canonical request hosts and paths: the one definition both the workers and `fastingress explain` use.

design.md section 3: hosts are compared lower-cased with the port and one trailing dot stripped;
paths are matched *and forwarded* in normalised form (percent-encoded unreserved characters decoded,
dot segments removed, `//` merged, `%2F` kept encoded), so what was routed is what is served.
Anything that cannot be normalised safely (a path climbing above `/`, a NUL, a bad escape, a
backslash or `#`) is refused: the caller answers 400.

Hot path: both functions run once per request. The common case (a plain path, a plain host) is
decided by C-level bytes methods (`find`, `translate`) without a Python loop.
"""

from __future__ import annotations

import ipaddress

# RFC 3986 section 2.3 unreserved characters: the only escapes that are safe to decode (6.2.2.2)
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = b"0123456789abcdefABCDEF"
# host characters we route on: DNS names, IPv4, "_" (seen in internal names; nginx accepts it)
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"
_DIGITS = b"0123456789"
# target bytes that never need decoding, resolving or refusing ("%" and "." may; "//" is checked apart)
PLAIN_TARGET_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~!$&'()*+,;=:@/?"
MAX_HOST_BYTES = 253  # RFC 1035 section 2.3.4 limit for a DNS name (without the trailing dot)


def normalize_host(raw: bytes) -> bytes | None:
    """Host header (or URL authority) -> lower-case host without port/trailing dot; None if invalid.

    An empty Host gives b"" (routes to the host-less rules). IPv6 literals keep their brackets.
    """
    host = raw.strip(b" \t")
    if not host:
        return b""
    if host[0] == 0x5B:  # "[": IP-literal, RFC 3986 section 3.2.2
        end = host.find(b"]")
        if end < 0 or not _is_port_suffix(host[end + 1:]):
            return None
        try:
            ipaddress.IPv6Address(host[1:end].decode("ascii"))
        except ValueError:
            return None
        return host[: end + 1].lower()
    colon = host.rfind(b":")
    if colon >= 0:
        if not _is_port_suffix(host[colon:]):
            return None
        host = host[:colon]
    if host.endswith(b"."):
        host = host[:-1]
    if not host or len(host) > MAX_HOST_BYTES or host.translate(None, _HOST_CHARS):
        return None
    return host.lower()


def _is_port_suffix(tail: bytes) -> bool:
    """b"" or b":" followed by at most five digits (RFC 3986 allows an empty port)."""
    if not tail:
        return True
    return tail[0] == 0x3A and len(tail) <= 6 and not tail[1:].translate(None, _DIGITS)


def normalize_path(target: bytes) -> tuple[bytes, bytes] | None:
    """Origin-form request-target -> (normalised path, query including its "?" or b""); None: 400."""
    if not target or target[0] != 0x2F:  # "/"
        return None
    q = target.find(b"?")
    if q >= 0:
        path, query = target[:q], target[q:]
    else:
        path, query = target, b""
    # hot path: a target of letters, digits and the plain pchar punctuation, without "//", needs nothing
    # (two C-level scans; no "%" to decode, no "." to resolve, nothing to refuse)
    if not target.translate(None, PLAIN_TARGET_BYTES) and target.find(b"//") < 0:
        return path, query
    if b"\x00" in target or b"#" in target or b"\\" in path:
        return None
    if b"%" not in path and b"/." not in path and b"//" not in path:
        return path, query
    decoded = _decode_unreserved(path) if b"%" in path else path
    if decoded is None:
        return None
    resolved = _remove_dot_segments(decoded)
    if resolved is None:
        return None
    return resolved, query


def _decode_unreserved(path: bytes) -> bytes | None:
    """Decode %XX of unreserved characters, upper-case the rest; None on a bad escape or %00."""
    parts = path.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        hx = part[:2]
        if len(hx) < 2 or hx.translate(None, _HEX):
            return None
        value = int(hx, 16)
        if value == 0:
            return None
        if value in _UNRESERVED:
            out.append(bytes((value,)))
        else:
            out.append(b"%" + hx.upper())
        out.append(part[2:])
    return b"".join(out)


def _remove_dot_segments(path: bytes) -> bytes | None:
    """RFC 3986 section 5.2.4 with empty segments merged; None when ".." climbs above the root."""
    segments = path.split(b"/")
    out: list[bytes] = []
    last = len(segments) - 1
    trailing = False
    for i, seg in enumerate(segments[1:], start=1):
        if seg == b"..":
            if not out:
                return None
            out.pop()
            trailing = True
        elif seg == b"." or seg == b"":
            trailing = True
        else:
            out.append(seg)
            trailing = False
        if i == last:
            break
    result = b"/" + b"/".join(out)
    if trailing and out:
        result += b"/"
    return result
