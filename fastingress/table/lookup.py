"""Lookups over one mapped table generation: (host, path) -> route, route -> upstream -> endpoints.

Theory of operation: a `RouteTable` wraps one routes segment (shared memory or any buffer) with a
fixed number of numpy views; building one costs the same for 10 or 100,000 routes. Nothing is
decoded up front. The first request for a host probes the shared host hash table and builds a small
per-host `HostMatcher` (two dicts); later requests for that host cost one dict lookup plus one dict
lookup per path element. Matchers, route entries and endpoint lists are cached per generation and
bounded, so a worker's private memory does not grow with the table, only with the hosts it serves.

Precedence (design.md section 3): exact host, then `*.parent`, then the host-less catch-all; within a
host the longest matching path wins and `Exact` beats `Prefix` on equal length (an exact match is
always the longest possible); no match -> the host's default backend, else no route (404).

Must not: copy the table, iterate numpy arrays in Python on the request path, or use Python's
`hash()` (see schema.hash_key).
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

from fastingress.table import schema as s

Buffer = memoryview | bytes | bytearray | mmap.mmap
NO_ROUTE = -1
HOST_CACHE_MAX = 8192  # distinct Host values cached per generation; bounds memory under random-Host floods
_I32 = np.dtype("<i4")


def _views(buf: memoryview, header: s.Header) -> list[np.ndarray]:
    """One numpy view per section: O(number of sections), independent of the table's size.

    All int32 sections are sliced from one int32 view of the segment (slicing an array is several
    times cheaper than np.frombuffer), the pool is a uint8 view.
    """
    whole = np.frombuffer(buf, dtype=_I32, count=(header.total_len - s.TRAILER_SIZE) // 4)
    views: list[np.ndarray] = []
    for (off, rows), (_, cols) in zip(header.sections, s.SECTIONS[header.kind], strict=True):
        if cols == 0:
            views.append(np.frombuffer(buf, dtype=np.uint8, count=rows, offset=off))
        else:
            start = off // 4
            views.append(whole[start: start + rows * cols].reshape(rows, cols))
    return views


class HostMatcher:
    """Path matching for one virtual host, built from its route rows on first use."""

    __slots__ = ("default", "exact", "lengths", "prefixes")

    def __init__(self, exact: dict[bytes, int], prefixes: dict[bytes, int], default: int) -> None:
        self.exact = exact
        self.prefixes = prefixes
        self.default = default
        # distinct prefix lengths, longest first: a host has few, so probing by length beats
        # walking every "/" of a long request path (measured in loadtest/bench_table.py)
        self.lengths = tuple(sorted({len(p) for p in prefixes}, reverse=True))

    def match(self, path: bytes) -> int:
        """Route index for a normalised path (no query), or the default route, or NO_ROUTE."""
        # hot path: dict probes only; an exact hit is the longest possible match
        route = self.exact.get(path)
        if route is not None:
            return route
        n = len(path)
        prefixes = self.prefixes
        for length in self.lengths:
            # a prefix of `length` bytes matches on an element boundary: the whole path, or a "/" next
            if length > n or (length < n and path[length] != 0x2F):
                continue
            route = prefixes.get(path[:length])
            if route is not None:
                return route
        return self.default


_NO_HOST = HostMatcher({}, {}, NO_ROUTE)


class RouteEntry:
    """A route's fields decoded once per generation (the worker's view of one rule)."""

    __slots__ = ("host", "hsts", "index", "ingress", "match", "options", "path", "path_type",
                 "redirect_https", "rule_host", "rule_path", "upstream")

    def __init__(self, table: RouteTable, index: int) -> None:
        row = table.routes[index].tolist()
        text = table.text
        self.index = index
        self.path = text(row[s.RT_PATH_OFF], row[s.RT_PATH_LEN])
        self.match = row[s.RT_MATCH]
        self.upstream = row[s.RT_UPSTREAM]  # index into the upstreams (and endpoint ranges), -1: none
        self.ingress = table.ingress_name(row[s.RT_INGRESS])
        self.redirect_https = bool(row[s.RT_FLAGS] & s.FLAG_REDIRECT_HTTPS)
        self.hsts = bool(row[s.RT_FLAGS] & s.FLAG_HSTS)  # HTTPS responses get Strict-Transport-Security
        vh = table.vhosts[row[s.RT_VHOST]].tolist()
        self.host = text(vh[s.VH_HOST_OFF], vh[s.VH_HOST_LEN])
        self.rule_host = text(row[s.RT_RULE_HOST_OFF], row[s.RT_RULE_HOST_LEN])
        self.rule_path = text(row[s.RT_RULE_PATH_OFF], row[s.RT_RULE_PATH_LEN])
        self.path_type = s.PATH_TYPES[row[s.RT_PATH_TYPE]]
        self.options = table.raw(row[s.RT_OPT_OFF], row[s.RT_OPT_LEN])


class UpstreamEntry:
    """An upstream's identity: name "ns/svc:port", Service port, ExternalName, and why it is unusable."""

    __slots__ = ("error", "external_name", "index", "name", "port", "port_name")

    def __init__(self, table: RouteTable, index: int) -> None:
        row = table.upstreams[index].tolist()
        text = table.text
        self.index = index
        self.name = text(row[s.UP_NAME_OFF], row[s.UP_NAME_LEN])
        self.port = row[s.UP_PORT]
        self.port_name = text(row[s.UP_PORT_NAME_OFF], row[s.UP_PORT_NAME_LEN])
        self.external_name = text(row[s.UP_EXT_OFF], row[s.UP_EXT_LEN])
        self.error = text(row[s.UP_ERROR_OFF], row[s.UP_ERROR_LEN])


class CertEntry:
    """A certificate the table names: fingerprint (PEM file name), Secret, expiry."""

    __slots__ = ("fingerprint", "not_after", "secret")

    def __init__(self, fingerprint: str, secret: str, not_after: int) -> None:
        self.fingerprint = fingerprint
        self.secret = secret
        self.not_after = not_after


_ROUTE_VIEWS = frozenset({"host_slots", "vhosts", "routes", "upstreams", "ingresses", "certs", "sni_slots", "sni",
                          "pool", "catch_all", "_host_mask", "_sni_mask", "_default_cert_index"})


class RouteTable:
    """One routes generation, mapped; lookups and per-generation caches.

    Construction (the swap) checks the header only; the numpy views are built on first
    use by `__getattr__`, which Python calls only while an attribute is still missing.
    """

    def __init__(self, buf: Buffer, keep: object = None, check_trailer: bool = True) -> None:
        self.buf = memoryview(buf)
        self.keep = keep  # the mmap (or other owner) that must outlive the views
        self.header = s.parse_header(self.buf, s.KIND_ROUTES, check_trailer)
        self.generation = self.header.generation
        self.pool_off = self.header.sections[s.S_POOL][0]
        self._hosts: dict[bytes, HostMatcher] = {}
        self._by_vhost: dict[int, HostMatcher] = {}
        self._routes: dict[int, RouteEntry] = {}
        self._upstreams: dict[int, UpstreamEntry] = {}
        self._default_cert: CertEntry | None = None
        self._default_cert_read = False

    def __getattr__(self, name: str) -> Any:
        if name not in _ROUTE_VIEWS:
            raise AttributeError(name)
        (meta, self.host_slots, self.vhosts, self.routes, self.upstreams, self.ingresses, self.certs,
         self.sni_slots, self.sni, self.pool) = _views(self.buf, self.header)
        self.catch_all = int(meta[0, s.META_CATCH_ALL])
        self._default_cert_index = int(meta[0, s.META_DEFAULT_CERT])
        self._host_mask = len(self.host_slots) - 1
        self._sni_mask = len(self.sni_slots) - 1
        return object.__getattribute__(self, name)

    # --- raw access (cold) ---
    def raw(self, off: int, length: int) -> bytes:
        start = self.pool_off + off
        return self.buf[start: start + length].tobytes()

    def text(self, off: int, length: int) -> str:
        return self.raw(off, length).decode("utf-8")

    def ingress_name(self, index: int) -> str:
        if index < 0:
            return ""
        row = self.ingresses[index].tolist()
        return self.text(row[s.ING_NAME_OFF], row[s.ING_NAME_LEN])

    def _probe(self, slots: np.ndarray, mask: int, rows: np.ndarray, key: bytes) -> int:
        """Open-addressing probe of a shared hash table; row index or -1."""
        i = s.hash_key(key) & mask
        while True:
            idx = int(slots[i, 0])
            if idx < 0:
                return -1
            off, length = int(rows[idx, 0]), int(rows[idx, 1])  # name offset/length are columns 0/1
            if length == len(key) and self.raw(off, length) == key:
                return idx
            i = (i + 1) & mask

    # --- hosts ---
    def lookup_vhost(self, host: bytes) -> int:
        """Virtual host index for a normalised host: exact, then `*.parent`, then catch-all, else -1."""
        vh = self._probe(self.host_slots, self._host_mask, self.vhosts, host)
        if vh < 0:
            dot = host.find(b".")
            if dot > 0:
                vh = self._probe(self.host_slots, self._host_mask, self.vhosts, b"*" + host[dot:])
        return self.catch_all if vh < 0 else vh

    def matcher(self, host: bytes) -> HostMatcher:
        """The cached per-host matcher (hot path: one dict lookup once warm)."""
        m = self._hosts.get(host)
        if m is None:
            m = self._build_host(host)
        return m

    def _build_host(self, host: bytes) -> HostMatcher:
        vh = self.lookup_vhost(host)
        m = self._by_vhost.get(vh) if vh >= 0 else _NO_HOST
        if m is None:
            m = self._build_matcher(vh)
            self._by_vhost[vh] = m
        if len(self._hosts) >= HOST_CACHE_MAX:
            self._hosts.clear()
        self._hosts[host] = m
        return m

    def _build_matcher(self, vh: int) -> HostMatcher:
        row = self.vhosts[vh].tolist()
        start, count = row[s.VH_ROUTE_START], row[s.VH_ROUTE_COUNT]
        exact: dict[bytes, int] = {}
        prefixes: dict[bytes, int] = {}
        for i, r in enumerate(self.routes[start: start + count].tolist(), start=start):
            target = exact if r[s.RT_MATCH] == s.MATCH_EXACT else prefixes
            target.setdefault(self.raw(r[s.RT_PATH_OFF], r[s.RT_PATH_LEN]), i)  # first = precedence
        return HostMatcher(exact, prefixes, row[s.VH_DEFAULT_ROUTE])

    def match(self, host: bytes, path: bytes) -> int:
        """Route index for a normalised host and path, or NO_ROUTE (404)."""
        m = self._hosts.get(host)
        if m is None:
            m = self._build_host(host)
        return m.match(path)

    # --- entries ---
    def route(self, index: int) -> RouteEntry:
        entry = self._routes.get(index)
        if entry is None:
            entry = self._routes[index] = RouteEntry(self, index)
        return entry

    def upstream(self, index: int) -> UpstreamEntry:
        entry = self._upstreams.get(index)
        if entry is None:
            entry = self._upstreams[index] = UpstreamEntry(self, index)
        return entry

    @property
    def upstream_count(self) -> int:
        return len(self.upstreams)

    # --- TLS ---
    def lookup_cert(self, server_name: bytes) -> CertEntry | None:
        """Certificate for an SNI name (lower-case): exact entry, then `*.parent`; None: default cert."""
        idx = self._probe(self.sni_slots, self._sni_mask, self.sni, server_name)
        if idx < 0:
            dot = server_name.find(b".")
            if dot > 0:
                idx = self._probe(self.sni_slots, self._sni_mask, self.sni, b"*" + server_name[dot:])
        if idx < 0:
            return None
        return self.cert(int(self.sni[idx, s.SNI_CERT]))

    @property
    def default_cert(self) -> CertEntry | None:
        """The default certificate (FASTINGRESS_DEFAULT_TLS_SECRET) when it is usable; None: the self-signed one.

        One meta cell, decoded once per generation.
        """
        if not self._default_cert_read:
            index = self._default_cert_index
            self._default_cert = self.cert(index) if index >= 0 else None
            self._default_cert_read = True
        return self._default_cert

    def cert(self, index: int) -> CertEntry:
        row = self.certs[index].tolist()
        not_after = (row[s.CERT_NOT_AFTER_HI] << 32) | (row[s.CERT_NOT_AFTER_LO] & 0xFFFFFFFF)
        return CertEntry(self.text(row[s.CERT_FP_OFF], row[s.CERT_FP_LEN]),
                         self.text(row[s.CERT_SECRET_OFF], row[s.CERT_SECRET_LEN]), not_after)


class EndpointTable:
    """One endpoints generation: the addresses per upstream index of its routes generation.

    As RouteTable, the views are built on first use.
    """

    def __init__(self, buf: Buffer, keep: object = None, check_trailer: bool = True) -> None:
        self.buf = memoryview(buf)
        self.keep = keep
        self.header = s.parse_header(self.buf, s.KIND_ENDPOINTS, check_trailer)
        self.generation = self.header.generation
        self.routes_generation = self.header.routes_generation
        self.pool_off = self.header.sections[s.E_POOL][0]
        self._cache: dict[int, tuple[tuple[str, int], ...]] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in ("ranges", "rows", "pool"):
            raise AttributeError(name)
        self.ranges, self.rows, self.pool = _views(self.buf, self.header)
        return object.__getattribute__(self, name)

    def endpoints(self, upstream: int) -> tuple[tuple[str, int], ...]:
        """(address, port) pairs of an upstream, cached per generation; () when it has none."""
        eps = self._cache.get(upstream)
        if eps is None:
            eps = self._cache[upstream] = self._decode(upstream)
        return eps

    def is_last_resort(self, upstream: int) -> bool:
        return bool(int(self.ranges[upstream, s.RANGE_FLAGS]) & s.RANGE_LAST_RESORT)

    def _decode(self, upstream: int) -> tuple[tuple[str, int], ...]:
        if upstream < 0 or upstream >= len(self.ranges):
            return ()
        start, count, _ = self.ranges[upstream].tolist()
        base = self.pool_off
        out = []
        for off, length, port in self.rows[start: start + count].tolist():
            out.append((self.buf[base + off: base + off + length].tobytes().decode("ascii"), port))
        return tuple(out)


class RouteTarget:
    """A route with its upstream and endpoints resolved in one view: what a request needs after matching."""

    __slots__ = ("endpoints", "generation", "route", "upstream")

    def __init__(self, route: RouteEntry, upstream: UpstreamEntry | None, endpoints: tuple[tuple[str, int], ...],
                 generation: int) -> None:
        self.route = route
        self.upstream = upstream  # None: the route has no Service backend
        self.endpoints = endpoints
        self.generation = generation  # of the endpoints (round-robin positions are per generation)


class TableView:
    """What a request reads once and keeps: a routes generation and an endpoints generation for it."""

    __slots__ = ("endpoints", "routes", "targets")

    def __init__(self, routes: RouteTable, endpoints: EndpointTable) -> None:
        self.routes = routes
        self.endpoints = endpoints
        # route index -> RouteTarget, filled on first use: one dict probe per request once warm; bounded
        # by the number of routes, like the route entries it refers to
        self.targets: dict[int, RouteTarget] = {}

    def target(self, index: int) -> RouteTarget:
        """The route at `index` (from RouteTable.match) with its upstream entry and endpoints."""
        target = self.targets.get(index)
        if target is None:
            route = self.routes.route(index)
            up = route.upstream
            upstream = self.routes.upstream(up) if up >= 0 else None
            eps = self.endpoints.endpoints(up) if up >= 0 else ()
            target = self.targets[index] = RouteTarget(route, upstream, eps, self.endpoints.generation)
        return target

    @property
    def generation(self) -> tuple[int, int]:
        return self.routes.generation, self.endpoints.generation
