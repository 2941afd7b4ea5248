"""Segments in memory: emit -> RouteTable/EndpointTable round trips, and corruption is always refused.

The reader's promise (style.md section 11): a segment that is foreign, of another schema or kind,
torn, truncated or stamped inconsistently raises TableError; it never yields a wrong table. Emit is
deterministic, so equal configs give byte-identical segments (the supervisor skips unchanged
publishes by comparing bytes).
"""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastingress.compiler.emit import emit_endpoints, emit_routes
from fastingress.compiler.types import (
    MATCH_EXACT,
    MATCH_PREFIX,
    CertBundle,
    CompiledConfig,
    Endpoint,
    Route,
    SniEntry,
    Upstream,
    UpstreamEndpoints,
    VirtualHost,
)
from fastingress.errors import TableError
from fastingress.model.objects import ObjectKey
from fastingress.table import schema as s
from fastingress.table.lookup import NO_ROUTE, EndpointTable, RouteTable

ING_A = ObjectKey("default", "a")
ING_B = ObjectKey("shop", "b")
FP = "ab" * 32
NOT_AFTER = 4_102_444_800  # 2100-01-01: above 2**31, so both halves of the split int64 matter


def _route(path: str, match: int, upstream: str, ingress: ObjectKey = ING_A, host: str = "",
           redirect: bool = False) -> Route:
    rule_path = path if match == MATCH_EXACT else (path or "/")
    return Route(path=path, match=match, upstream=upstream, ingress=ingress, rule_host=host, rule_path=rule_path,
                 path_type="Exact" if match == MATCH_EXACT else "Prefix", redirect_https=redirect,
                 options=b"\x81\xa1k\x01" if redirect else b"")


def sample_config(suffix: str = "") -> CompiledConfig:
    """A small but complete config: catch-all, exact and wildcard hosts, defaults, an unroutable route, TLS."""
    web, api, ext = f"default/web{suffix}:80", f"default/api{suffix}:8080", "default/ext:443"
    default = Route(path="", match=-1, upstream=web, ingress=ING_A, rule_host="", rule_path="", path_type="")
    return CompiledConfig(
        vhosts=(
            VirtualHost(host="", routes=(_route("", MATCH_PREFIX, web),)),
            VirtualHost(host="*.example.com", routes=(_route("/api", MATCH_PREFIX, api, ING_B, "*.example.com"),),
                        default=default),
            VirtualHost(host="shop.example.com", routes=(
                _route("/api/v1", MATCH_EXACT, api, ING_B, "shop.example.com", redirect=True),
                _route("/api", MATCH_PREFIX, api, ING_B, "shop.example.com"),
                _route("/broken", MATCH_PREFIX, "", ING_B, "shop.example.com"),
                _route("", MATCH_PREFIX, ext, ING_B, "shop.example.com"),
            )),
        ),
        upstreams=(
            Upstream(name=api, service=ObjectKey("default", "api"), port=8080, port_name="http"),
            Upstream(name=ext, service=ObjectKey("default", "ext"), port=443, external_name="ext.example.org"),
            Upstream(name=web, service=ObjectKey("default", "web"), port=80, error="ServiceNotFound"),
        ),
        endpoints=(
            UpstreamEndpoints(endpoints=(Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080))),
            UpstreamEndpoints(),
            UpstreamEndpoints(endpoints=(Endpoint("fd00::1", 80),), last_resort=True),
        ),
        certs=(CertBundle(secret=ObjectKey("shop", "tls"), fingerprint=FP, names=("*.example.com",),
                          not_after=NOT_AFTER, cert_pem=b"", key_pem=b""),),
        sni=(SniEntry(name="*.example.com", cert=FP), SniEntry(name="shop.example.com", cert=FP)),
    )


@pytest.fixture(scope="module")
def routes_bytes() -> bytes:
    return emit_routes(sample_config())


@pytest.fixture(scope="module")
def endpoints_bytes() -> bytes:
    return emit_endpoints(sample_config().endpoints)


def _lookup(table: RouteTable, host: bytes, path: bytes) -> tuple[str, str, int] | None:
    """(vhost, route path, match) the table picks, or None for no route."""
    index = table.match(host, path)
    if index == NO_ROUTE:
        return None
    entry = table.route(index)
    return entry.host, entry.path, entry.match


# --- round trips ---


def test_routes_round_trip(routes_bytes: bytes) -> None:
    table = RouteTable(routes_bytes)
    assert table.generation == 0
    assert table.upstream_count == 3
    assert _lookup(table, b"shop.example.com", b"/api/v1") == ("shop.example.com", "/api/v1", s.MATCH_EXACT)
    assert _lookup(table, b"shop.example.com", b"/api/v1/x") == ("shop.example.com", "/api", s.MATCH_PREFIX)
    assert _lookup(table, b"shop.example.com", b"/apix") == ("shop.example.com", "", s.MATCH_PREFIX)
    assert _lookup(table, b"x.example.com", b"/api") == ("*.example.com", "/api", s.MATCH_PREFIX)
    assert _lookup(table, b"x.example.com", b"/other") == ("*.example.com", "", s.MATCH_DEFAULT)
    assert _lookup(table, b"a.b.example.com", b"/api") == ("", "", s.MATCH_PREFIX)  # one label only
    assert _lookup(table, b"other.org", b"/") == ("", "", s.MATCH_PREFIX)
    assert _lookup(table, b"", b"/x") == ("", "", s.MATCH_PREFIX)


def test_route_entry_fields(routes_bytes: bytes) -> None:
    table = RouteTable(routes_bytes)
    entry = table.route(table.match(b"shop.example.com", b"/api/v1"))
    assert (entry.ingress, entry.rule_host, entry.rule_path, entry.path_type) == (
        "shop/b", "shop.example.com", "/api/v1", "Exact")
    assert entry.redirect_https is True
    assert entry.options == b"\x81\xa1k\x01"
    up = table.upstream(entry.upstream)
    assert (up.name, up.port, up.port_name, up.external_name, up.error) == ("default/api:8080", 8080, "http", "", "")
    broken = table.route(table.match(b"shop.example.com", b"/broken/x"))
    assert broken.upstream == -1 and broken.redirect_https is False and broken.options == b""
    ext = table.upstream(table.route(table.match(b"shop.example.com", b"/")).upstream)
    assert (ext.external_name, ext.port) == ("ext.example.org", 443)
    default = table.route(table.match(b"x.example.com", b"/"))
    assert (default.path_type, default.rule_path, default.ingress) == ("", "", "default/a")
    assert table.upstream(default.upstream).error == "ServiceNotFound"


def test_certs_round_trip(routes_bytes: bytes) -> None:
    table = RouteTable(routes_bytes)
    for name in (b"shop.example.com", b"a.example.com"):
        cert = table.lookup_cert(name)
        assert cert is not None
        assert (cert.fingerprint, cert.secret, cert.not_after) == (FP, "shop/tls", NOT_AFTER)
    assert table.lookup_cert(b"example.com") is None
    assert table.lookup_cert(b"a.b.example.com") is None


def test_endpoints_round_trip(endpoints_bytes: bytes) -> None:
    eps = EndpointTable(endpoints_bytes)
    assert (eps.generation, eps.routes_generation) == (0, 0)
    assert eps.endpoints(0) == (("10.0.0.1", 8080), ("10.0.0.2", 8080))
    assert eps.endpoints(1) == ()
    assert eps.endpoints(2) == (("fd00::1", 80),)
    assert [eps.is_last_resort(i) for i in range(3)] == [False, False, True]
    assert eps.endpoints(-1) == () and eps.endpoints(3) == ()


def test_empty_config_round_trips() -> None:
    table = RouteTable(emit_routes(CompiledConfig()))
    assert table.match(b"example.com", b"/") == NO_ROUTE
    assert table.lookup_cert(b"example.com") is None
    assert EndpointTable(emit_endpoints(())).endpoints(0) == ()


def test_tables_work_over_any_buffer(routes_bytes: bytes) -> None:
    for buf in (bytearray(routes_bytes), memoryview(routes_bytes)):
        assert _lookup(RouteTable(buf), b"shop.example.com", b"/api") == ("shop.example.com", "/api", s.MATCH_PREFIX)


# --- determinism and stamping ---


def test_emit_is_deterministic() -> None:
    a, b = sample_config(), sample_config()
    assert a is not b
    assert emit_routes(a) == emit_routes(b)
    assert emit_endpoints(a.endpoints) == emit_endpoints(b.endpoints)
    assert emit_routes(sample_config("2")) != emit_routes(a)


def test_segments_are_aligned(routes_bytes: bytes, endpoints_bytes: bytes) -> None:
    for seg, kind in ((routes_bytes, s.KIND_ROUTES), (endpoints_bytes, s.KIND_ENDPOINTS)):
        header = s.parse_header(seg, kind)
        assert all(off % s.ALIGN == 0 and off >= s.HEADER_SIZE for off, _ in header.sections)
        assert len(seg) % s.ALIGN == 0


def test_stamp_generation(routes_bytes: bytes, endpoints_bytes: bytes) -> None:
    seg = bytearray(routes_bytes)
    s.stamp_generation(seg, 7, 7)
    table = RouteTable(seg)
    assert table.generation == 7
    assert _lookup(table, b"shop.example.com", b"/api") == ("shop.example.com", "/api", s.MATCH_PREFIX)
    assert seg[s.HEADER_SIZE:-s.TRAILER_SIZE] == routes_bytes[s.HEADER_SIZE:-s.TRAILER_SIZE]  # body untouched
    eps = bytearray(endpoints_bytes)
    s.stamp_generation(eps, 2**32 - 1, 7)
    table_e = EndpointTable(eps)
    assert (table_e.generation, table_e.routes_generation) == (2**32 - 1, 7)
    s.stamp_generation(eps, 0, 0)  # stamping back gives the emitted bytes
    assert bytes(eps) == endpoints_bytes


# --- corruption: always TableError ---

KINDS = [("routes", s.KIND_ROUTES), ("endpoints", s.KIND_ENDPOINTS)]


def _segment(which: str, gen: int = 5) -> bytearray:
    config = sample_config()
    seg = bytearray(emit_routes(config) if which == "routes" else emit_endpoints(config.endpoints))
    s.stamp_generation(seg, gen, gen)
    return seg


def _open(which: str, buf: bytes | bytearray) -> RouteTable | EndpointTable:
    return RouteTable(buf) if which == "routes" else EndpointTable(buf)


def _rewrite_header(seg: bytearray, **fields: int) -> None:
    """Rewrite header fields and recompute a valid CRC, so that only the named check can fail."""
    _, schema, kind, gen, rgen, total, n, _ = struct.unpack_from("<8sIIQQQII", seg, 0)
    values = {"schema": schema, "kind": kind, "generation": gen, "routes_generation": rgen, "total_len": total}
    values.update(fields)
    sections = [struct.unpack_from("<QQ", seg, 48 + 16 * i) for i in range(n)]
    header = bytearray(s.pack_header(values["kind"], values["generation"], values["routes_generation"],
                                     values["total_len"], sections))
    struct.pack_into("<I", header, 8, values["schema"])
    struct.pack_into("<I", header, 44, _crc(header, n))
    seg[: s.HEADER_SIZE] = header


def _crc(header: bytearray, n: int) -> int:
    return zlib.crc32(bytes(header[:44]) + bytes(header[48: 48 + 16 * n]))


@pytest.mark.parametrize(("which", "kind"), KINDS)
def test_good_segment_opens(which: str, kind: int) -> None:
    seg = _segment(which)
    _rewrite_header(seg)  # the helper itself keeps a good segment good
    assert _open(which, seg).generation == 5


@pytest.mark.parametrize(("which", "kind"), KINDS)
def test_bad_magic(which: str, kind: int) -> None:
    seg = _segment(which)
    seg[:8] = b"NOTATABL"
    with pytest.raises(TableError, match="magic"):
        _open(which, seg)
    with pytest.raises(TableError):
        _open(which, bytes(len(seg)))  # all zeroes: a freshly truncated file


@pytest.mark.parametrize(("which", "kind"), KINDS)
def test_other_schema_version(which: str, kind: int) -> None:
    seg = _segment(which)
    _rewrite_header(seg, schema=s.SCHEMA_VERSION + 1)
    with pytest.raises(TableError, match="schema"):
        _open(which, seg)


@pytest.mark.parametrize(("which", "kind"), KINDS)
def test_wrong_kind(which: str, kind: int) -> None:
    seg = _segment(which)
    other = "endpoints" if which == "routes" else "routes"
    with pytest.raises(TableError, match="kind"):
        _open(other, seg)
    _rewrite_header(seg, kind=99)
    with pytest.raises(TableError, match="kind"):
        _open(which, seg)


@pytest.mark.parametrize(("which", "kind"), KINDS)
def test_every_flipped_header_byte_is_refused_or_harmless(which: str, kind: int) -> None:
    good = _segment(which)
    n = struct.unpack_from("<I", good, 40)[0]
    covered = 48 + 16 * n  # fixed fields, CRC and section directory; the rest is zero padding
    reference = s.parse_header(bytes(good), kind)
    for pos in range(s.HEADER_SIZE):
        for bit in (0x01, 0x80):
            seg = bytearray(good)
            seg[pos] ^= bit
            if pos < covered:
                with pytest.raises(TableError):
                    _open(which, seg)
            else:  # padding carries no meaning: the table must be exactly the good one, or refused
                try:
                    header = s.parse_header(bytes(seg), kind)
                except TableError:
                    continue
                assert (header.generation, header.sections) == (reference.generation, reference.sections)


@pytest.mark.parametrize(("which", "kind"), KINDS)
def test_every_truncation_is_refused(which: str, kind: int) -> None:
    seg = bytes(_segment(which))
    for cut in range(len(seg)):
        with pytest.raises(TableError):
            _open(which, seg[:cut])


@pytest.mark.parametrize(("which", "kind"), KINDS)
def test_extended_file_is_refused(which: str, kind: int) -> None:
    seg = bytes(_segment(which))
    with pytest.raises(TableError, match="header says"):
        _open(which, seg + bytes(8))


@pytest.mark.parametrize(("which", "kind"), KINDS)
def test_trailer_of_another_generation(which: str, kind: int) -> None:
    old, new = _segment(which, gen=4), _segment(which, gen=5)
    torn = new[: -s.TRAILER_SIZE] + old[-s.TRAILER_SIZE:]  # header of 5, trailer of 4: a half-copied file
    with pytest.raises(TableError, match="trailer"):
        _open(which, torn)
    new[-s.TRAILER_SIZE] ^= 0xFF  # trailer magic damaged
    with pytest.raises(TableError, match="trailer"):
        _open(which, new)


@pytest.mark.parametrize(("which", "kind"), KINDS)
def test_total_len_mismatch(which: str, kind: int) -> None:
    seg = _segment(which)
    for total in (len(seg) - 8, len(seg) + 8, 0, 2**63):
        bad = bytearray(seg)
        _rewrite_header(bad, total_len=total)
        with pytest.raises(TableError):
            _open(which, bad)


@given(st.binary(max_size=600))
def test_random_bytes_are_refused(data: bytes) -> None:
    for which in ("routes", "endpoints"):
        with pytest.raises(TableError):
            _open(which, data)
