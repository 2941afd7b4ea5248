"""Request host and path normalisation: worked examples and hypothesis properties.

`normalize_host` and `normalize_path` are the one canonical form both the workers and `explain` use
(design.md section 3), so the properties here are the contract: a normalised path is a fixed point, holds
no empty or dot segment, keeps `%2F` encoded, and anything unsafe (NUL, `#`, backslash, a bad escape, a
climb above `/`) is refused with None.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastingress.table.normalize import MAX_HOST_BYTES, normalize_host, normalize_path

# --- hosts ---


@pytest.mark.parametrize(("raw", "expected"), [
    (b"example.com", b"example.com"),
    (b"Example.COM", b"example.com"),
    (b"example.com:8080", b"example.com"),
    (b"example.com:", b"example.com"),  # RFC 3986 allows an empty port
    (b"example.com.", b"example.com"),  # one trailing dot: the absolute form of the same name
    (b"example.com.:443", b"example.com"),
    (b"  example.com\t", b"example.com"),
    (b"10.0.0.1", b"10.0.0.1"),
    (b"10.0.0.1:80", b"10.0.0.1"),
    (b"my_svc.internal", b"my_svc.internal"),
    (b"[::1]", b"[::1]"),
    (b"[::1]:8443", b"[::1]"),
    (b"[2001:DB8::A]", b"[2001:db8::a]"),
    (b"[2001:db8::a]:", b"[2001:db8::a]"),
    (b"", b""),  # no Host: the host-less rules
    (b" \t", b""),
])
def test_normalize_host_examples(raw: bytes, expected: bytes) -> None:
    assert normalize_host(raw) == expected


@pytest.mark.parametrize("raw", [
    b"example.com:http",  # a port is digits
    b"example.com:123456",  # at most five digits
    b"example.com:80:80",
    b":80",  # a port and no host
    b".",
    b"exa mple.com",
    b"example.com/path",
    b"user@example.com",
    b"ex\x00ample.com",
    b"ex\xc3\xa4mple.com",  # IDNs arrive as punycode; raw UTF-8 is refused
    b"::1",  # an IPv6 literal needs brackets
    b"[::1",
    b"[::1]x",
    b"[::1]:http",
    b"[not-an-address]",
    b"[1.2.3.4]",
    b"[v1.fe80::a]",  # IPvFuture: not routable
    b"a" * (MAX_HOST_BYTES + 1),
])
def test_normalize_host_rejects(raw: bytes) -> None:
    assert normalize_host(raw) is None


def test_normalize_host_length_limit_excludes_port_and_trailing_dot() -> None:
    name = b"a" * MAX_HOST_BYTES
    assert normalize_host(name) == name
    assert normalize_host(name + b".:80") == name


host_labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
                      min_size=1, max_size=12)


@given(st.lists(host_labels, min_size=1, max_size=4), st.one_of(st.none(), st.integers(0, 65535)),
       st.booleans())
def test_normalize_host_is_lower_case_without_port_or_dot(labels: list[str], port: int | None, dot: bool) -> None:
    name = ".".join(labels)
    raw = name + ("." if dot else "") + ("" if port is None else f":{port}")
    out = normalize_host(raw.encode())
    assert out == name.lower().encode()
    assert normalize_host(out) == out  # idempotent


# --- paths: examples ---


@pytest.mark.parametrize(("target", "expected"), [
    (b"/", (b"/", b"")),
    (b"/a/b", (b"/a/b", b"")),
    (b"/a/b/", (b"/a/b/", b"")),
    (b"/a?x=1&y=/../", (b"/a", b"?x=1&y=/../")),  # the query is not a path: verbatim
    (b"/a?", (b"/a", b"?")),
    (b"/?%zz", (b"/", b"?%zz")),
    (b"//a///b//", (b"/a/b/", b"")),
    (b"/a/./b", (b"/a/b", b"")),
    (b"/a/.", (b"/a/", b"")),
    (b"/a/..", (b"/", b"")),
    (b"/a/b/../c", (b"/a/c", b"")),
    (b"/a/b/..", (b"/a/", b"")),
    (b"/./", (b"/", b"")),
    (b"/.a/..b/...", (b"/.a/..b/...", b"")),  # only whole "." and ".." segments are special
    (b"/%7Euser/%41%62", (b"/~user/Ab", b"")),  # unreserved escapes decoded
    (b"/a%2fb", (b"/a%2Fb", b"")),  # %2F kept (upper-cased), never a separator
    (b"/a%2F..%2Fb", (b"/a%2F..%2Fb", b"")),
    (b"/%2e%2E/", None),  # a decoded ".." is still a climb
    (b"/a/%2e%2e/b", (b"/b", b"")),
    (b"/a/%2E", (b"/a/", b"")),
    (b"/%c3%a4", (b"/%C3%A4", b"")),  # non-ASCII stays encoded
    (b"/%25", (b"/%25", b"")),  # "%" itself is never decoded
    (b"/a%20b", (b"/a%20b", b"")),
])
def test_normalize_path_examples(target: bytes, expected: tuple[bytes, bytes] | None) -> None:
    assert normalize_path(target) == expected


@pytest.mark.parametrize("target", [
    b"",
    b"a/b",  # not origin-form
    b"*",
    b"http://example.com/",
    b"?x",
    b"/..",
    b"/../a",
    b"/a/../..",
    b"/a/../../b",
    b"/a/./../../b",
    b"/%2e%2e",
    b"/a\x00b",
    b"/a?b\x00",  # NUL anywhere, query included
    b"/a#frag",
    b"/a?b#frag",
    b"/a\\b",
    b"/a%",
    b"/a%2",
    b"/a%zz",
    b"/a%g0",
    b"/a%00",  # an encoded NUL
])
def test_normalize_path_rejects(target: bytes) -> None:
    assert normalize_path(target) is None


# --- paths: properties ---

# elements chosen so that dot segments, empty segments, escapes (good, bad, %2F) and climbs are common
PATH_ATOMS = ["a", "B", "~", ".", "..", "...", "", "%2e", "%2E%2e", "%2f", "%2F", "%41", "%7e", "%25", "%c3%a4",
              "%", "%4", "%zz", "%00", "x.y", "\\", "#", "\x00", ";p=1", "%20"]
QUERIES = ["", "?", "?a=1", "?a=/../b", "?%zz", "?x#y", "?\x00"]

segments = st.lists(st.lists(st.sampled_from(PATH_ATOMS), max_size=3).map("".join), max_size=8)
targets = st.builds(lambda segs, trailing, query: ("/" + "/".join(segs) + ("/" if trailing else "") + query).encode(
    "latin-1"), segments, st.booleans(), st.sampled_from(QUERIES))


def _is_segment_bad(path: bytes) -> bool:
    return (b"//" in path or b"/./" in path or b"/../" in path or path.endswith(b"/.")
            or path.endswith(b"/.."))


@settings(max_examples=500)
@given(targets)
@example(b"/a/../../b")
@example(b"/a//./b/%2e/")
def test_normalize_path_properties(target: bytes) -> None:
    out = normalize_path(target)
    q = target.find(b"?")
    raw_path = target if q < 0 else target[:q]
    if b"\x00" in target or b"#" in target or b"\\" in raw_path:
        assert out is None
        return
    if out is None:
        return  # the other refusals are checked by the examples and by test_climbing_above_root_is_refused
    path, query = out
    assert query == (b"" if q < 0 else target[q:])  # verbatim
    assert path.startswith(b"/")
    assert not _is_segment_bad(path)
    # %2F is never decoded into a "/" (a ".." may remove a whole segment that contained one)
    assert path.upper().count(b"%2F") <= raw_path.upper().count(b"%2F")
    if b".." not in raw_path and b"%2E" not in raw_path.upper():
        assert path.upper().count(b"%2F") == raw_path.upper().count(b"%2F")
    assert normalize_path(path) == (path, b"")  # idempotent
    assert normalize_path(path + query) == (path, query)


@given(segments)
def test_bad_escapes_are_refused(segs: list[str]) -> None:
    path = ("/" + "/".join(segs)).encode("latin-1")
    if b"\x00" in path or b"#" in path or b"\\" in path or b"?" in path:
        return
    pieces = path.split(b"%")[1:]
    bad = any(len(p) < 2 or not all(c in b"0123456789abcdefABCDEF" for c in p[:2]) or p[:2] == b"00"
              for p in pieces)
    if bad:
        assert normalize_path(path) is None


def _climbs(path: bytes) -> bool:
    """The reference: does resolving dot segments (after decoding %2E) go above the root?"""
    depth = 0
    for seg in path.replace(b"%2e", b".").replace(b"%2E", b".").split(b"/")[1:]:
        if seg == b"..":
            if depth == 0:
                return True
            depth -= 1
        elif seg not in (b".", b""):
            depth += 1
    return False


@given(st.lists(st.sampled_from(["a", "bb", ".", "..", "", "%2e", "%2e%2E", "%2F"]), max_size=10), st.booleans())
@example(["a", "..", "..", "b"], False)
def test_climbing_above_root_is_refused(segs: list[str], trailing: bool) -> None:
    path = ("/" + "/".join(segs) + ("/" if trailing else "")).encode()
    out = normalize_path(path)
    assert (out is None) == _climbs(path)
