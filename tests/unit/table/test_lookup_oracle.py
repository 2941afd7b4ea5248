"""The shared-table lookup agrees with the naive reference matcher on random tables and paths.

Tables are random CompiledConfigs (hosts exact, wildcard and catch-all; Exact and Prefix routes over a
small alphabet of path elements so that near-misses are common), emitted to bytes and looked up by
`RouteTable.match`, the function the workers call. The oracle is tests/unit/compiler/reference.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fastingress.compiler import CompileOptions, compile_config
from fastingress.compiler.emit import emit_routes
from fastingress.compiler.types import MATCH_EXACT, MATCH_PREFIX, CompiledConfig, Route, Upstream, VirtualHost
from fastingress.model.objects import ObjectKey
from fastingress.table.lookup import NO_ROUTE, RouteTable
from tests.unit.compiler.reference import reference_match
from tests.unit.compiler.test_compiler_properties import NOW, PROBES, REQUEST_HOSTS, scenarios

ELEMENTS = ["a", "ab", "b", "%2F", "a.b", ""]
HOSTS = ["", "a.example.com", "b.example.com", "*.example.com", "*.b.example.com", "x.b.example.com"]
KEY = ObjectKey("default", "ing")
UPSTREAMS = ("default/a:80", "default/b:80", "default/c:80")


def _path(elements: list[str], trailing: bool) -> str:
    path = "/" + "/".join(elements)
    return path + "/" if trailing and not path.endswith("/") else path


paths = st.builds(_path, st.lists(st.sampled_from(ELEMENTS[:-1]), max_size=3), st.booleans())
request_paths = st.builds(_path, st.lists(st.sampled_from(ELEMENTS), max_size=4), st.booleans())


def _route(path: str, match: int, upstream: str) -> Route:
    stored = path if match == MATCH_EXACT else path.rstrip("/")
    return Route(path=stored, match=match, upstream=upstream, ingress=KEY, rule_host="", rule_path=path,
                 path_type="Exact" if match == MATCH_EXACT else "Prefix")


@st.composite
def vhosts(draw: st.DrawFn, host: str) -> VirtualHost:
    routes: dict[tuple[str, int], Route] = {}
    for path, match, up in draw(st.lists(st.tuples(paths, st.sampled_from([MATCH_EXACT, MATCH_PREFIX]),
                                                   st.sampled_from(UPSTREAMS)), max_size=6)):
        route = _route(path, match, up)
        routes.setdefault((route.path, route.match), route)  # the compiler keeps one route per (path, type)
    ordered = sorted(routes.values(), key=lambda r: (-len(r.path), r.match != MATCH_EXACT, r.path))
    default = draw(st.one_of(st.none(), st.sampled_from(UPSTREAMS).map(
        lambda u: Route(path="", match=-1, upstream=u, ingress=KEY, rule_host="", rule_path="", path_type=""))))
    return VirtualHost(host=host, routes=tuple(ordered), default=default)


@st.composite
def configs(draw: st.DrawFn) -> CompiledConfig:
    hosts = sorted(draw(st.sets(st.sampled_from(HOSTS), max_size=len(HOSTS))))
    upstreams = tuple(Upstream(name=u, service=KEY, port=80) for u in UPSTREAMS)
    return CompiledConfig(vhosts=tuple(draw(vhosts(h)) for h in hosts), upstreams=upstreams)


def _identity(route: Route | None) -> tuple[str, int, str] | None:
    return None if route is None else (route.path, route.match, route.upstream)


def _lookup(table: RouteTable, config: CompiledConfig, host: str, path: str) -> tuple[str, int, str] | None:
    index = table.match(host.encode(), path.encode())
    if index == NO_ROUTE:
        return None
    entry = table.route(index)
    return entry.path, entry.match, table.upstream(entry.upstream).name if entry.upstream >= 0 else ""


@settings(max_examples=300, deadline=None)
@given(configs(), st.lists(st.tuples(st.sampled_from([*HOSTS[1:], "c.example.com", "z.b.example.com", "other"]),
                                     request_paths), min_size=1, max_size=20))
def test_table_lookup_agrees_with_reference(config: CompiledConfig, requests: list[tuple[str, str]]) -> None:
    table = RouteTable(emit_routes(config))
    for host, path in requests:
        # twice: the first lookup builds the per-host matcher, the second uses the cache
        assert _lookup(table, config, host, path) == _identity(reference_match(config, host, path)), (host, path)
        assert _lookup(table, config, host, path) == _identity(reference_match(config, host, path)), (host, path)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_compiled_snapshots_lookup_agrees_with_reference(pair: tuple[object, object]) -> None:
    snapshot = pair[0]
    config, _ = compile_config(snapshot, CompileOptions(now=NOW))  # type: ignore[arg-type]
    table = RouteTable(emit_routes(config))
    for host in REQUEST_HOSTS:
        for path in PROBES:
            assert _lookup(table, config, host, path) == _identity(reference_match(config, host, path)), (host, path)
