"""The binary layout of route-table segments (schema version 1). See docs/route-table-format.md.

A segment is one immutable file in /dev/shm:

    header   HEADER_SIZE bytes: magic, schema, kind, generation, routes generation, total length,
             section count, header CRC, then per section (offset u64, rows u64)
    sections one per entry of the kind's section list, each 8-byte aligned; all int32 2-D arrays
             (rows x columns, row-major) except the string pool (uint8)
    trailer  TRAILER_MAGIC + generation (u64): written with the rest, checked by readers, so a
             truncated or half-copied file is never used

Two kinds of segment: ROUTES (hosts, routes, upstream identities, certificates) and ENDPOINTS
(endpoint addresses per upstream index). An endpoints segment names the routes generation its
upstream indexes belong to. Column indexes are module constants so that lookups index with
Python ints (no structured dtypes: field access on numpy records costs ~10x a plain int index).

Evolving the ABI: new columns go at the end of a section and new sections at the end of a kind's
list; a reader checks `rows`/column counts it knows. Anything else bumps SCHEMA_VERSION.
"""

from __future__ import annotations

import struct
import zlib

from fastingress.errors import TableError

SCHEMA_VERSION = 1
MAGIC = b"FINGTBL\x00"
TRAILER_MAGIC = b"FINGEND\x00"
TRAILER_SIZE = 16

KIND_ROUTES = 1
KIND_ENDPOINTS = 2

# header: magic(8) schema(u32) kind(u32) generation(u64) routes_generation(u64) total_len(u64)
#         n_sections(u32) header_crc(u32), then n_sections x (offset u64, rows u64)
_HEAD = struct.Struct("<8sIIQQQII")
_SECTION = struct.Struct("<QQ")
HEADER_SIZE = 256  # room for 13 sections; fixed so that the first section offset never moves
ALIGN = 8

# --- section lists: (name, columns); columns 0 means a flat uint8 array (the string pool) ---
# routes segment; the pool goes last: the small sections then share the header's first pages, so a
# swap touches (page-faults) as few pages as possible whatever the table's size
S_META = 0  # one row: META_* columns
S_HOST_SLOTS = 1  # open-addressing hash table of vhost indexes (-1 empty); 1 column
S_VHOSTS = 2
S_ROUTES = 3
S_UPSTREAMS = 4
S_INGRESSES = 5
S_CERTS = 6
S_SNI_SLOTS = 7  # open-addressing hash table of SNI entry indexes (-1 empty); 1 column
S_SNI = 8
S_POOL = 9

META_CATCH_ALL = 0  # vhost index of the host-less catch-all, or -1
META_N_VHOSTS = 1
META_N_ROUTES = 2
META_DEFAULT_CERT = 3  # certs index of the default certificate (FASTINGRESS_DEFAULT_TLS_SECRET), or -1
META_COLS = 4

VH_HOST_OFF, VH_HOST_LEN, VH_ROUTE_START, VH_ROUTE_COUNT, VH_DEFAULT_ROUTE = range(5)
VH_COLS = 5

(RT_PATH_OFF, RT_PATH_LEN, RT_MATCH, RT_UPSTREAM, RT_INGRESS, RT_FLAGS, RT_VHOST,
 RT_RULE_HOST_OFF, RT_RULE_HOST_LEN, RT_RULE_PATH_OFF, RT_RULE_PATH_LEN, RT_PATH_TYPE,
 RT_OPT_OFF, RT_OPT_LEN) = range(14)
RT_COLS = 14

MATCH_DEFAULT = -1  # a virtual host's default backend
MATCH_EXACT = 0
MATCH_PREFIX = 1
PATH_TYPES = ("", "Exact", "Prefix", "ImplementationSpecific")  # RT_PATH_TYPE indexes this
FLAG_REDIRECT_HTTPS = 1  # RT_FLAGS bit: plain HTTP gets a 308 to https://host/uri
FLAG_HSTS = 2  # RT_FLAGS bit: HTTPS responses carry Strict-Transport-Security (the host has its own cert)

(UP_NAME_OFF, UP_NAME_LEN, UP_PORT, UP_PORT_NAME_OFF, UP_PORT_NAME_LEN, UP_EXT_OFF, UP_EXT_LEN,
 UP_ERROR_OFF, UP_ERROR_LEN) = range(9)
UP_COLS = 9

ING_NAME_OFF, ING_NAME_LEN = range(2)
ING_COLS = 2

(CERT_FP_OFF, CERT_FP_LEN, CERT_SECRET_OFF, CERT_SECRET_LEN, CERT_NOT_AFTER_HI,
 CERT_NOT_AFTER_LO) = range(6)
CERT_COLS = 6

SNI_NAME_OFF, SNI_NAME_LEN, SNI_CERT = range(3)
SNI_COLS = 3

ROUTES_SECTIONS: tuple[tuple[str, int], ...] = (
    ("meta", META_COLS), ("host_slots", 1), ("vhosts", VH_COLS), ("routes", RT_COLS),
    ("upstreams", UP_COLS), ("ingresses", ING_COLS), ("certs", CERT_COLS), ("sni_slots", 1),
    ("sni", SNI_COLS), ("pool", 0),
)

# endpoints segment (pool last, as above)
E_RANGES = 0  # one row per upstream index of the routes generation
E_ENDPOINTS = 1
E_POOL = 2
RANGE_START, RANGE_COUNT, RANGE_FLAGS = range(3)
RANGE_COLS = 3
RANGE_LAST_RESORT = 1  # flag: no endpoint is ready; these are serving-but-terminating
EP_ADDR_OFF, EP_ADDR_LEN, EP_PORT = range(3)
EP_COLS = 3
ENDPOINTS_SECTIONS: tuple[tuple[str, int], ...] = (
    ("ranges", RANGE_COLS), ("endpoints", EP_COLS), ("pool", 0),
)

SECTIONS = {KIND_ROUTES: ROUTES_SECTIONS, KIND_ENDPOINTS: ENDPOINTS_SECTIONS}


class Header:
    """A parsed, checked segment header."""

    __slots__ = ("generation", "kind", "routes_generation", "sections", "total_len")

    def __init__(self, kind: int, generation: int, routes_generation: int, total_len: int,
                 sections: list[tuple[int, int]]) -> None:
        self.kind = kind
        self.generation = generation
        self.routes_generation = routes_generation
        self.total_len = total_len
        self.sections = sections  # (byte offset, rows) per section, in the kind's order


def hash_key(key: bytes) -> int:
    """The stable hash of shared hash tables (never Python's hash(): PYTHONHASHSEED differs per process)."""
    return zlib.crc32(key)


def slot_capacity(n: int) -> int:
    """Open-addressing capacity: a power of two with load factor <= 0.5 (short probe chains)."""
    cap = 8
    while cap < 2 * n:
        cap *= 2
    return cap


def pack_header(kind: int, generation: int, routes_generation: int, total_len: int,
                sections: list[tuple[int, int]]) -> bytes:
    """The header bytes (HEADER_SIZE long) with its CRC over everything but the CRC field."""
    directory = b"".join(_SECTION.pack(off, rows) for off, rows in sections)
    head = _HEAD.pack(MAGIC, SCHEMA_VERSION, kind, generation, routes_generation, total_len,
                      len(sections), 0)
    crc = zlib.crc32(directory, zlib.crc32(head[:-4]))
    head = head[:-4] + struct.pack("<I", crc)
    out = head + directory
    if len(out) > HEADER_SIZE:
        raise TableError("too many sections for the header")
    return out + bytes(HEADER_SIZE - len(out))


def pack_trailer(generation: int) -> bytes:
    return TRAILER_MAGIC + struct.pack("<Q", generation)


def parse_header(buf: memoryview, expect_kind: int, check_trailer: bool = True) -> Header:
    """Check magic, schema, kind, CRC, length and trailer; raise TableError when anything is off.

    Runs on every swap: no copies (crc32 and comparisons read the mapping in place), O(1) in size.
    `check_trailer=False` is for the reader's swap path: a published file was complete before it
    was renamed into place, and a truncated one fails the length check; reading the trailer would
    cost a page fault at the far end of a large segment (~10 us on a VM) for no extra safety.
    """
    if len(buf) < HEADER_SIZE + TRAILER_SIZE:
        raise TableError(f"segment too short ({len(buf)} bytes)")
    magic, schema, kind, gen, rgen, total, n, crc = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise TableError("bad magic: not a fastingress table segment")
    if schema != SCHEMA_VERSION:
        raise TableError(f"schema version {schema}, this reader knows {SCHEMA_VERSION}")
    if kind != expect_kind:
        raise TableError(f"segment kind {kind}, expected {expect_kind}")
    want = len(SECTIONS[kind])
    if n < want or _HEAD.size + n * _SECTION.size > HEADER_SIZE:
        raise TableError(f"{n} sections, expected at least {want}")
    dir_end = _HEAD.size + n * _SECTION.size
    if zlib.crc32(buf[_HEAD.size:dir_end], zlib.crc32(buf[: _HEAD.size - 4])) != crc:
        raise TableError("header checksum mismatch")
    if total != len(buf):
        raise TableError(f"segment is {len(buf)} bytes, header says {total}")
    if check_trailer and buf[total - TRAILER_SIZE: total] != pack_trailer(gen):
        raise TableError("trailer missing or of another generation: segment is torn")
    sections = [_SECTION.unpack_from(buf, _HEAD.size + i * _SECTION.size) for i in range(want)]
    return Header(kind, gen, rgen, total, sections)


def segment_length(buf: memoryview | bytes) -> int:
    """The total length a segment's header claims (to split a file holding two segments)."""
    if len(buf) < HEADER_SIZE:
        raise TableError(f"segment too short ({len(buf)} bytes)")
    total = int(_HEAD.unpack_from(buf, 0)[5])
    if not HEADER_SIZE + TRAILER_SIZE <= total <= len(buf):
        raise TableError(f"segment length {total} outside the file's {len(buf)} bytes")
    return total


def stamp_generation(seg: bytearray, generation: int, routes_generation: int) -> None:
    """Rewrite a segment's generations (header, CRC, trailer) in place: emit writes 0, the writer stamps."""
    _, _, kind, _, _, total, n, _ = _HEAD.unpack_from(seg, 0)
    sections = [_SECTION.unpack_from(seg, _HEAD.size + i * _SECTION.size) for i in range(n)]
    seg[:HEADER_SIZE] = pack_header(kind, generation, routes_generation, total, sections)
    seg[total - TRAILER_SIZE: total] = pack_trailer(generation)
