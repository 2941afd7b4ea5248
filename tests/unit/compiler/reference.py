"""`reference_match`: an obviously-correct route matcher over a CompiledConfig, the oracle for lookups.

Deliberately naive and independent of the compiler's route order: it scans every route of the
selected virtual host and keeps the best by (path length, Exact over Prefix). Hosts and paths passed in
are already normalised (lower-case host without port; normalised path without query).
"""

from __future__ import annotations

from fastingress.compiler.types import MATCH_EXACT, CompiledConfig, Route, VirtualHost


def reference_match(config: CompiledConfig, host: str, path: str) -> Route | None:
    """The route a request for (host, path) takes: a path route, else the vhost default, else None."""
    vhost = select_vhost(config, host)
    if vhost is None:
        return None
    best: Route | None = None
    for route in vhost.routes:
        if path_matches(route, path) and (best is None or _rank(route) > _rank(best)):
            best = route
    return best if best is not None else vhost.default


def select_vhost(config: CompiledConfig, host: str) -> VirtualHost | None:
    """Exact host, then "*.parent" (exactly one more label), then the catch-all "" vhost."""
    by_host = {vhost.host: vhost for vhost in config.vhosts}
    if host and not host.startswith("*") and host in by_host:
        return by_host[host]
    dot = host.find(".")
    if dot > 0 and "*" + host[dot:] in by_host:
        return by_host["*" + host[dot:]]
    return by_host.get("")


def path_matches(route: Route, path: str) -> bool:
    """Exact: the whole path. Prefix: "/"-element prefix ("" is the root and matches everything)."""
    if route.match == MATCH_EXACT:
        return path == route.path
    return route.path == "" or path == route.path or path.startswith(route.path + "/")


def _rank(route: Route) -> tuple[int, bool]:
    return (len(route.path), route.match == MATCH_EXACT)
