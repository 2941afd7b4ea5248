"""CompiledConfig -> segment bytes laid out per `fastingress.table.schema` (routes and endpoints).

Pure and deterministic: equal configs give byte-identical segments (generation fields are 0; the
TableWriter stamps them), so the supervisor can skip publishing an unchanged table by comparing
bytes. Must not: read clocks, touch shared memory, or depend on dict/set iteration order.
"""

from __future__ import annotations

import numpy as np

from fastingress.compiler.types import MATCH_EXACT, CompiledConfig, Route, UpstreamEndpoints
from fastingress.model.objects import ObjectKey
from fastingress.table import schema as s


class StringPool:
    """Deduplicated UTF-8 strings in one byte blob; `add` returns (offset, length)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._seen: dict[bytes, int] = {}

    def add(self, value: str | bytes) -> tuple[int, int]:
        data = value.encode("utf-8") if isinstance(value, str) else value
        off = self._seen.get(data)
        if off is None:
            off = self._seen[data] = self._size
            self._chunks.append(data)
            self._size += len(data)
        return off, len(data)

    def to_array(self) -> np.ndarray:
        return np.frombuffer(b"".join(self._chunks), dtype=np.uint8)


def _rows(rows: list[list[int]], cols: int) -> np.ndarray:
    arr = np.array(rows, dtype="<i4") if rows else np.zeros((0, cols), dtype="<i4")
    return arr.reshape(len(rows), cols)


def _hash_slots(names: list[tuple[bytes, int]]) -> np.ndarray:
    """Open-addressing table (linear probing) of row indexes keyed by name; -1 is empty."""
    cap = s.slot_capacity(len(names))
    slots = np.full((cap, 1), -1, dtype="<i4")
    mask = cap - 1
    for name, idx in names:
        i = s.hash_key(name) & mask
        while slots[i, 0] >= 0:
            i = (i + 1) & mask
        slots[i, 0] = idx
    return slots


def build_segment(kind: int, arrays: list[np.ndarray]) -> bytes:
    """Header + 8-byte aligned sections + trailer, generation 0."""
    parts: list[bytes] = []
    sections: list[tuple[int, int]] = []
    off = s.HEADER_SIZE
    for arr in arrays:
        data = np.ascontiguousarray(arr).tobytes()
        pad = (-len(data)) % s.ALIGN
        sections.append((off, arr.shape[0]))
        parts.append(data + bytes(pad))
        off += len(data) + pad
    total = off + s.TRAILER_SIZE
    return s.pack_header(kind, 0, 0, total, sections) + b"".join(parts) + s.pack_trailer(0)


def _route_row(route: Route, vh: int, pool: StringPool, upstreams: dict[str, int],
               ingresses: dict[ObjectKey, int]) -> list[int]:
    path = pool.add(route.path)
    rule_host = pool.add(route.rule_host)
    rule_path = pool.add(route.rule_path)
    opts = pool.add(route.options)
    match = s.MATCH_DEFAULT if route.match < 0 else (s.MATCH_EXACT if route.match == MATCH_EXACT
                                                      else s.MATCH_PREFIX)
    flags = (s.FLAG_REDIRECT_HTTPS if route.redirect_https else 0) | (s.FLAG_HSTS if route.hsts else 0)
    return [path[0], path[1], match, upstreams.get(route.upstream, -1), ingresses[route.ingress], flags, vh,
            rule_host[0], rule_host[1], rule_path[0], rule_path[1], s.PATH_TYPES.index(route.path_type),
            opts[0], opts[1]]


def emit_routes(config: CompiledConfig) -> bytes:
    """The routes segment: hosts, routes in precedence order, upstream identities, certificates."""
    pool = StringPool()
    upstreams = {u.name: i for i, u in enumerate(config.upstreams)}
    keys = sorted({r.ingress for vh in config.vhosts for r in vh.routes}
                  | {vh.default.ingress for vh in config.vhosts if vh.default is not None})
    ingresses = {k: i for i, k in enumerate(keys)}
    vh_rows: list[list[int]] = []
    rt_rows: list[list[int]] = []
    host_names: list[tuple[bytes, int]] = []
    catch_all = -1
    for vi, vh in enumerate(config.vhosts):
        start = len(rt_rows)
        rt_rows.extend(_route_row(r, vi, pool, upstreams, ingresses) for r in vh.routes)
        default = -1
        if vh.default is not None:
            default = len(rt_rows)
            rt_rows.append(_route_row(vh.default, vi, pool, upstreams, ingresses))
        off, length = pool.add(vh.host)
        vh_rows.append([off, length, start, len(vh.routes), default])
        if vh.host:
            host_names.append((vh.host.encode(), vi))
        else:
            catch_all = vi
    up_rows = []
    for u in config.upstreams:
        up_rows.append([*pool.add(u.name), u.port, *pool.add(u.port_name), *pool.add(u.external_name),
                        *pool.add(u.error)])
    ing_rows = [list(pool.add(str(k))) for k in keys]
    certs = {c.fingerprint: i for i, c in enumerate(config.certs)}
    cert_rows = [[*pool.add(c.fingerprint), *pool.add(str(c.secret)), c.not_after >> 32,
                  _as_i32(c.not_after & 0xFFFFFFFF)] for c in config.certs]
    sni_rows = [[*pool.add(e.name), certs[e.cert]] for e in config.sni]
    sni_names = [(e.name.encode(), i) for i, e in enumerate(config.sni)]
    meta = [[catch_all, len(vh_rows), len(rt_rows), certs.get(config.default_cert, -1)]]
    return build_segment(s.KIND_ROUTES, [
        _rows(meta, s.META_COLS), _hash_slots(host_names), _rows(vh_rows, s.VH_COLS),
        _rows(rt_rows, s.RT_COLS), _rows(up_rows, s.UP_COLS), _rows(ing_rows, s.ING_COLS),
        _rows(cert_rows, s.CERT_COLS), _hash_slots(sni_names), _rows(sni_rows, s.SNI_COLS), pool.to_array(),
    ])


def _as_i32(value: int) -> int:
    """An unsigned 32-bit value as the signed int32 with the same bits."""
    return value - (1 << 32) if value >= (1 << 31) else value


def emit_endpoints(endpoints: tuple[UpstreamEndpoints, ...]) -> bytes:
    """The endpoints segment: one range per upstream index (aligned with CompiledConfig.upstreams)."""
    pool = StringPool()
    ranges: list[list[int]] = []
    rows: list[list[int]] = []
    for ue in endpoints:
        ranges.append([len(rows), len(ue.endpoints), s.RANGE_LAST_RESORT if ue.last_resort else 0])
        rows.extend([*pool.add(ep.address), ep.port] for ep in ue.endpoints)
    return build_segment(s.KIND_ENDPOINTS, [
        _rows(ranges, s.RANGE_COLS), _rows(rows, s.EP_COLS), pool.to_array(),
    ])
