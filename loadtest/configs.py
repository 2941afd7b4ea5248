"""The benchmark's routing, written once as manifests and rendered for fastingress, nginx and haproxy.

Responsibility: produce the Kubernetes manifests a scenario serves (`simple_manifests`,
`many_routes_manifests`, `tls_manifests`), compile them with fastingress's own compiler
(`compiled_routes`, the same code `fastingress check`/`routes` and the workers' table use), and
render that compiled route list as an nginx `http {}` body (`nginx_http_block`) and a complete
haproxy.cfg (`haproxy_config`), over plain HTTP or, given the run's certificate (loadtest/tls.py),
HTTPS only. The three proxies therefore route the same requests to the same endpoints, and a change
of manifests changes all three.

What it must not do: start processes, write files, or decide Ingress semantics itself: hosts, paths
and their precedence come from the compiled configuration, in its order (`match` only walks that
order), and this module translates them.

Semantics carried over (design.md section 3, `fastingress.table.lookup`):
- a request's host selects one virtual host: the exact name, else `*.parent` (one label), else the
  host-less catch-all; the other hosts' routes are never consulted afterwards;
- within a host: an Exact route matches the whole path; a Prefix route `/p` matches `/p` and `/p/...`
  but not `/px`; the longest match wins and Exact beats Prefix on a tie; no match -> the host's
  default backend (rendered as the Prefix `/` it is equivalent to), else 404;
- a route without usable endpoints (no Service, no ready endpoint) answers 503;
- over HTTPS (the TLS scenarios): TLS 1.2 and 1.3 with one certificate for every host, session
  tickets and caches at each proxy's defaults, HTTP/1.1 only (no ALPN h2), and Strict-Transport-
  Security on the responses of hosts the certificate covers (fastingress's default for a host with
  a certificate of its own).
Not carried over (the benchmarks use none of it): the HTTP->HTTPS redirect (a TLS scenario's nginx and
haproxy listen for HTTPS only and only fastingress's HTTPS port is measured), SNI-selected
certificates (one certificate serves every name), ExternalName
upstreams (their names are resolved by the workers; here they have no endpoints), a named host
whose rules have no paths (fastingress: 404; here: the catch-all), path normalisation in haproxy
(its `normalize-uri` is experimental in 2.6: haproxy routes /a/../b and /%62 on the raw path), and
nginx's decoding of %2F (nginx routes /a%2Fb as /a/b, fastingress keeps the escape).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from fastingress.compiler.certs import is_host_covered
from fastingress.compiler.types import MATCH_EXACT, CompiledConfig
from fastingress.settings import Settings
from fastingress.supervisor.offline import build_from_manifests
from loadtest.tls import TLSFiles

SERVICE = "be"  # the one Service every benchmark Ingress points at
HOSTS_PER_INGRESS = 100  # many_routes_manifests: rules per Ingress (1,000 hosts -> 10 Ingresses)
KEEPALIVE = 64  # idle upstream connections nginx keeps per worker (fastingress and haproxy reuse theirs)
TLS_HOST = "tls.bench.example"  # the one host of the TLS scenarios: SNI, Host and the certificate's name
TLS_SECRET = "bench-tls"  # the kubernetes.io/tls Secret tls_manifests names (loadtest/tls.py writes it)


@dataclass(frozen=True)
class Route:
    """One compiled path rule in precedence order: host ("" = any host without its own rules)."""

    host: str  # lower-case name, "*.parent" for a wildcard, "" for the catch-all
    path: str  # "/" for the root prefix (and for a default backend)
    exact: bool  # True: the whole path; False: "/"-element prefix
    endpoints: tuple[tuple[str, int], ...]  # (address, port), sorted; () -> 503


# --- manifests ---------------------------------------------------------------------------------------

def _service(backend_port: int) -> str:
    # manifests mode without a cluster: the annotation gives the Service its endpoint addresses and each
    # port's targetPort is the port on them (examples/demo/10-services.yaml)
    return ("apiVersion: v1\nkind: Service\n"
            f"metadata: {{name: {SERVICE}, annotations: {{fastingress.io/endpoints: '127.0.0.1'}}}}\n"
            f"spec: {{ports: [{{name: http, port: 80, targetPort: {backend_port}}}]}}\n")


_BACKEND = f"{{service: {{name: {SERVICE}, port: {{number: 80}}}}}}"


def simple_manifests(backend_port: int) -> str:
    """One Service on 127.0.0.1:backend_port and one Ingress sending every request to it (a default backend)."""
    return (_service(backend_port) + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: be}\n"
            f"spec: {{ingressClassName: fastingress, defaultBackend: {_BACKEND}}}\n")


def tls_manifests(backend_port: int, host: str = TLS_HOST) -> str:
    """One Service and one Ingress routing `host` to it, with `spec.tls` naming TLS_SECRET for `host`.

    The Secret itself is written next to these manifests by the harness, from the run's certificate.
    """
    return (_service(backend_port) + "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: be}\n"
            f"spec:\n  ingressClassName: fastingress\n  tls: [{{hosts: [{host}], secretName: {TLS_SECRET}}}]\n"
            f"  rules:\n  - host: {host}\n    http:\n      paths:\n"
            f"      - {{path: /, pathType: Prefix, backend: {_BACKEND}}}\n")


def hsts_value() -> str:
    """The Strict-Transport-Security value fastingress sends by default ("" when it sends none)."""
    settings = Settings()
    if not settings.hsts:
        return ""
    return f"max-age={settings.hsts_max_age_s}" + ("; includeSubDomains" if settings.hsts_include_subdomains else "")


def _hsts_hosts(hosts: dict[str, list[Route]], tls: TLSFiles | None) -> set[str]:
    """The virtual hosts whose HTTPS responses carry HSTS: named hosts the certificate covers."""
    if tls is None or not hsts_value():
        return set()
    return {h for h in hosts if h and is_host_covered(tls.hosts, h)}


def many_routes_manifests(hosts: int, paths: int, backend_port: int) -> str:
    """`hosts` hosts h{i}.bench.example x `paths` Prefix paths /p{j}, all to one Service; 404 elsewhere.

    Hosts are grouped HOSTS_PER_INGRESS to an Ingress; flow-style path entries keep 10,000 routes at
    about 1 MB of YAML.
    """
    docs = [_service(backend_port)]
    path_lines = "".join(f"      - {{path: /p{j}, pathType: Prefix, backend: {_BACKEND}}}\n" for j in range(paths))
    for first in range(0, hosts, HOSTS_PER_INGRESS):
        rules = "".join(f"  - host: h{i}.bench.example\n    http:\n      paths:\n{path_lines}"
                        for i in range(first, min(first + HOSTS_PER_INGRESS, hosts)))
        docs.append("apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
                    f"metadata: {{name: bench-{first // HOSTS_PER_INGRESS}}}\n"
                    f"spec:\n  ingressClassName: fastingress\n  rules:\n{rules}")
    return "---\n".join(docs)


# --- compiled routes ---------------------------------------------------------------------------------

def compiled_routes(manifests_dir: Path) -> list[Route]:
    """The routes fastingress would serve for a manifests directory, host by host in precedence order.

    Raises ValueError when the compiler reports a problem: a benchmark must not silently compare
    proxies on a configuration one of them half-rejected.
    """
    build = build_from_manifests(manifests_dir, Settings())
    if build.problems:
        listed = "; ".join(f"{p.origin} {p.kind} {p.key} {p.field}: {p.reason}" for p in build.problems[:5])
        raise ValueError(f"{len(build.problems)} problem(s) in {manifests_dir}: {listed}")
    return routes_of(build.config)


def routes_of(config: CompiledConfig) -> list[Route]:
    """A CompiledConfig's routes as `Route`s (vhosts sorted, catch-all first; routes in precedence order)."""
    endpoints = {up.name: tuple((e.address, e.port) for e in ue.endpoints) if not up.error else ()
                 for up, ue in zip(config.upstreams, config.endpoints, strict=True)}
    out: list[Route] = []
    for vh in config.vhosts:
        has_root = False
        for r in vh.routes:
            exact = r.match == MATCH_EXACT
            has_root = has_root or (not exact and r.path == "")
            out.append(Route(vh.host, r.path if exact else r.path or "/", exact, endpoints.get(r.upstream, ())))
        if vh.default is not None and not has_root:
            # a default backend catches what no path matched: exactly what the root prefix does, and the
            # root prefix is the shortest, so it is last in precedence order too
            out.append(Route(vh.host, "/", False, endpoints.get(vh.default.upstream, ())))
    return out


def match(host_routes: list[Route], path: str) -> Route | None:
    """The route of one host's routes (in precedence order) that takes a normalised path; None: 404.

    Precedence order puts longer paths first and Exact before Prefix on a tie, and a route longer
    than the path cannot match it, so the first route that matches is fastingress's choice.
    """
    for r in host_routes:
        if r.exact:
            if r.path == path:
                return r
        elif r.path == "/" or path == r.path or path.startswith(r.path + "/"):
            return r
    return None


def _by_host(routes: list[Route]) -> dict[str, list[Route]]:
    hosts: dict[str, list[Route]] = {}
    for r in routes:
        hosts.setdefault(r.host, []).append(r)
    return hosts


def _endpoint_sets(routes: list[Route]) -> dict[tuple[tuple[str, int], ...], int]:
    """Distinct non-empty endpoint sets, numbered in order of first use."""
    sets: dict[tuple[tuple[str, int], ...], int] = {}
    for r in routes:
        if r.endpoints and r.endpoints not in sets:
            sets[r.endpoints] = len(sets)
    return sets


def _address(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --- nginx -------------------------------------------------------------------------------------------

_NGINX_PLAIN = re.compile(r"[A-Za-z0-9._~!&'()*+,=:@/%-]*")
_NGINX_HOST = re.compile(r"[a-z0-9._-]+")


def _nginx_str(value: str) -> str:
    if _NGINX_PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _nginx_server_name(host: str) -> str:
    if host.startswith("*."):
        # nginx's "*.parent" also matches a.b.parent; Kubernetes' wildcard is exactly one label
        return '"~^[^.]+' + re.escape(host[1:]).replace("\\", "\\\\") + '$"'
    return host if _NGINX_HOST.fullmatch(host) else _nginx_str(host)


def _nginx_action(route: Route | None, ups: dict[tuple[tuple[str, int], ...], int]) -> str:
    if route is None:
        return "return 404;"
    if not route.endpoints:
        return "return 503;"
    # request bodies streamed as fastingress and haproxy do (else nginx spools uploads over 16 KiB to
    # temporary files first). Responses keep nginx's default buffering, the configuration the data-plane
    # issue names: `proxy_buffering off` (ingress-nginx's default) measured slower for nginx here, 16 KiB
    # 31k -> 17.5k req/s and 1 MiB 635 -> 321 (docs/performance.md)
    return (f"proxy_pass http://u{ups[route.endpoints]}; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; proxy_set_header Host $host; '
            "proxy_request_buffering off; client_max_body_size 0;")


def nginx_tls(tls: TLSFiles) -> str:
    """The `http {}` directives every HTTPS server inherits: the certificate, its key, TLS 1.2 and 1.3.

    Session tickets and cache stay at nginx's defaults (tickets on, no shared cache), as fastingress's
    and haproxy's stay at theirs.
    """
    return (f"  ssl_certificate {_nginx_str(str(tls.cert))};\n  ssl_certificate_key {_nginx_str(str(tls.key))};\n"
            "  ssl_protocols TLSv1.2 TLSv1.3;\n")


def nginx_http_block(routes: list[Route], listen_port: int, tls: TLSFiles | None = None) -> str:
    """The inside of nginx's `http {}`: upstreams with keepalive, one server per host, locations per route.

    A Prefix `/p` becomes `location = /p` plus `location /p/` (nginx prefixes are byte prefixes, so
    `location /p` would also take /px). nginx picks `=` locations first and then the longest prefix,
    which is fastingress's order. Requests no route covers get 404, as do unknown hosts when there is
    no catch-all host. With `tls` every server listens for HTTPS only (`listen ... ssl`), with that
    certificate, and the hosts it covers add Strict-Transport-Security as fastingress does.
    """
    ups = _endpoint_sets(routes)
    hosts = _by_host(routes)
    hsts = _hsts_hosts(hosts, tls)
    names = sum(1 for h in hosts if h)
    max_size = 512
    while max_size < 2 * names:
        max_size *= 2
    out = [f"  server_names_hash_max_size {max_size};\n  server_names_hash_bucket_size 128;\n"]
    if tls is not None:
        out.append(nginx_tls(tls))
    for eps, n in ups.items():
        servers = " ".join(f"server {_address(a, p)};" for a, p in eps)
        out.append(f"  upstream u{n} {{ {servers} keepalive {KEEPALIVE}; }}\n")
    listen = f"127.0.0.1:{listen_port}" + (" ssl" if tls is not None else "")
    if "" not in hosts:
        out.append(f"  server {{ listen {listen} default_server; server_name _; keepalive_requests 1000000;\n"
                   "    location / { return 404; } }\n")
    for host, host_routes in sorted(hosts.items(), key=lambda item: item[0] != ""):  # catch-all first
        head = f"listen {listen} default_server; server_name _;" if host == "" else \
            f"listen {listen}; server_name {_nginx_server_name(host)};"
        out.append(f"  server {{ {head} keepalive_requests 1000000;\n")
        if host in hsts:
            # `always`: fastingress adds it to every proxied response, whatever its status
            out.append(f'    add_header Strict-Transport-Security "{hsts_value()}" always;\n')
        exact_done: set[str] = set()
        prefix_done: set[str] = set()
        for r in host_routes:  # precedence order: the first route for a location wins
            path = unquote(r.path)  # nginx matches locations against the decoded path
            if (r.exact or path != "/") and path not in exact_done:
                exact_done.add(path)
                out.append(f"    location = {_nginx_str(path)} {{ {_nginx_action(r, ups)} }}\n")
            if not r.exact:
                below = path if path.endswith("/") else path + "/"
                if below not in prefix_done:
                    prefix_done.add(below)
                    out.append(f"    location {_nginx_str(below)} {{ {_nginx_action(r, ups)} }}\n")
        for r in host_routes:
            # nginx answers /x with a 301 to /x/ when a proxying location is exactly /x/ and nothing is /x:
            # give /x the route fastingress would pick for it
            bare = r.path[:-1]
            if r.exact and bare and unquote(bare) not in exact_done:
                exact_done.add(unquote(bare))
                action = _nginx_action(match(host_routes, bare), ups)
                out.append(f"    location = {_nginx_str(unquote(bare))} {{ {action} }}\n")
        if "/" not in prefix_done:
            out.append("    location / { return 404; }\n")
        out.append("  }\n")
    return "".join(out)


# --- haproxy -----------------------------------------------------------------------------------------

PATTERNS_PER_LINE = 58  # haproxy reads at most 64 words a line; "acl <name> <fetch> -m <method>" takes 5
# keys per bucket (about 10 acl lines): measured best with 10,000 keys, the many-routes scenario
PATTERNS_PER_BUCKET = 600
_HAPROXY_ESCAPE = re.compile(r"([\\\s\"'#$])")


def _haproxy_word(value: str) -> str:
    return _HAPROXY_ESCAPE.sub(r"\\\1", value)


def haproxy_config(routes: list[Route], listen_port: int, buckets: int | None = None,
                   tls: TLSFiles | None = None) -> str:
    """A complete haproxy.cfg routing like fastingress: one frontend, one backend per endpoint set, 404 default.

    Why not one `acl` + `use_backend` per route: haproxy evaluates `use_backend` rules in order, so
    10,000 per-route rules would cost every request thousands of ACL evaluations; and a map file
    (`map_beg`, what haproxy-based ingress controllers use) would be a second file, where this
    returns one self-contained haproxy.cfg. Instead the frontend computes one key per request,
    "<virtual host><path>/", and looks it up in inline pattern lists, which haproxy keeps as trees:
    - the virtual host is the Host header lower-cased without its port if a rule names it, else its
      `*.parent` wildcard if one exists, else "" (the catch-all: the key is the path alone, which a
      named key never is, since host names do not contain "/");
    - an Exact route `/e` is the key "host/e/" (`-m str`); a Prefix `/p` is "host/p/" (`-m beg`),
      which the keys of /p, /p/ and /p/x begin with and that of /p10 does not: Kubernetes'
      element-wise prefix as a byte-prefix lookup;
    - exact rules come first (one per backend: only one key can equal the request's), then prefix
      rules by key length, longest first (two prefixes of one key differ in length, so the first
      that matches is the longest, as in fastingress; consecutive lengths with one backend share a
      rule); nothing matched: `not_found` answers 404; a backend without servers answers 503.
    Scale: haproxy reads at most 64 words a line and every line of a repeated `acl` is its own tree,
    tried in turn, so 10,000 keys in one list would be ~170 lookups a request. The virtual hosts are
    spread over `buckets` buckets (default: one per PATTERNS_PER_BUCKET keys) by CRC32 of their name
    (haproxy's `crc32` is zlib's): a request computes its bucket once, each rule checks the bucket
    number first, and only that bucket's lines are searched. `tune.pattern.cache-size 0`: the
    pattern cache hashes every sample it looks up, which costs more than these tree lookups (for
    1,000 hosts x 10 paths: 21k req/s with the cache and one bucket, 43k without it and 16 buckets,
    47k for the same header work with no lookup at all; 2-core machine, 2025).
    With `tls` the frontend listens for HTTPS only (`ssl crt`, TLS 1.2 and 1.3, haproxy's default
    session cache and tickets) and the virtual hosts the certificate covers get Strict-Transport-
    Security as in fastingress (an `http-response` rule on the virtual host found for the request).
    """
    ups = _endpoint_sets(routes)
    hosts = _by_host(routes)
    hsts = sorted(_hsts_hosts(hosts, tls))
    named = sorted(h for h in hosts if h and not h.startswith("*."))
    wildcards = sorted(h for h in hosts if h.startswith("*."))
    exact: dict[str, tuple[str, str]] = {}  # key -> (virtual host, backend); the first route takes a key
    prefix: dict[str, tuple[str, str]] = {}
    default = ""
    for r in routes:
        backend = f"b{ups[r.endpoints]}" if r.endpoints else "unavailable"
        if not named and not wildcards and r.path == "/" and not r.exact:
            # only a catch-all host: its root prefix takes what nothing longer took, which is what the
            # default backend does (the `simple` scenario then costs haproxy no ACL, like a hand-written config)
            default = default or backend
            continue
        if r.exact:
            exact.setdefault(r.host + r.path + "/", (r.host, backend))
        else:
            prefix.setdefault(r.host + r.path.rstrip("/") + "/", (r.host, backend))
    if buckets is None:
        buckets = max(1, min(len(hosts), round((len(exact) + len(prefix)) / PATTERNS_PER_BUCKET)))

    lines = ["global", "  nbthread 1", "  maxconn 4096", "  tune.pattern.cache-size 0",
             "defaults", "  mode http", "  timeout connect 5s", "  timeout client 60s", "  timeout server 60s",
             "  timeout http-keep-alive 60s", "  http-reuse always",
             "frontend fe", f"  bind 127.0.0.1:{listen_port}"
             + (f" ssl crt {_haproxy_word(str(tls.bundle))} ssl-min-ver TLSv1.2" if tls is not None else "")]

    def acl(name: str, expr: str, patterns: list[str]) -> None:
        for i in range(0, len(patterns), PATTERNS_PER_LINE):
            chunk = " ".join(_haproxy_word(p) for p in patterns[i: i + PATTERNS_PER_LINE])
            lines.append(f"  acl {name} {expr} {chunk}")

    if exact or prefix:
        lines.append("  http-request set-var(txn.path) path")
        if "" in hosts or wildcards:
            lines.append("  http-request set-var(txn.host) req.hdr(host),field(1,:),lower")
            if named:
                acl("vh_named", "var(txn.host) -m str", named)
                lines.append("  http-request set-var(txn.vh) var(txn.host) if vh_named")
            if wildcards:
                acl("vh_wild", "var(txn.host),regsub(^[^.]+,*) -m str", wildcards)
                lines.append("  http-request set-var(txn.vh) var(txn.host),regsub(^[^.]+,*) "
                             "if !{ var(txn.vh) -m found } vh_wild")
        else:  # no catch-all nor wildcard: an unknown host's keys match nothing, a 404 as it should be
            lines.append("  http-request set-var(txn.vh) req.hdr(host),field(1,:),lower")
        lines += ["  http-request set-var(txn.key) var(txn.vh),concat(,txn.path,/) if { var(txn.vh) -m found }",
                  "  http-request set-var(txn.key) var(txn.path),concat(,,/) if !{ var(txn.vh) -m found }"]
        if buckets > 1:
            lines += [f"  http-request set-var(txn.bucket) var(txn.vh),crc32,mod({buckets}) "
                      "if { var(txn.vh) -m found }",
                      f"  http-request set-var(txn.bucket) int({_bucket('', buckets)}) "
                      "if !{ var(txn.vh) -m found }"]
    rules: list[str] = []
    # (bucket, 0 exact | 1 prefix, -length for prefixes, backend) -> keys; sorted, that is the rules' order
    groups: dict[tuple[int, int, int, str], list[str]] = {}
    for key, (host, backend) in exact.items():
        groups.setdefault((_bucket(host, buckets), 0, 0, backend), []).append(key)
    for key, (host, backend) in prefix.items():
        groups.setdefault((_bucket(host, buckets), 1, -len(key), backend), []).append(key)
    merged: list[tuple[int, int, str, list[str]]] = []  # (bucket, is_prefix, backend, keys)
    for (bucket, is_prefix, _, backend), keys in sorted(groups.items()):
        if is_prefix and merged and merged[-1][:3] == (bucket, 1, backend):
            # consecutive lengths with one backend: whichever of them matches, the backend is the same
            merged[-1][3].extend(keys)
        else:
            merged.append((bucket, is_prefix, backend, keys))
    for n, (bucket, is_prefix, backend, keys) in enumerate(merged):
        acl(f"r{n}", "var(txn.key) -m beg" if is_prefix else "var(txn.key) -m str", keys)
        gate = f"{{ var(txn.bucket) -m int {bucket} }} " if buckets > 1 else ""
        rules.append(f"  use_backend {backend} if {gate}r{n}")
    if hsts:  # txn.vh is set: a covered host is a named or wildcard host, so `exact or prefix` held above
        acl("hsts", "var(txn.vh) -m str", hsts)
        lines.append(f"  http-response set-header Strict-Transport-Security {_haproxy_word(hsts_value())} if hsts")
    lines += [*rules, f"  default_backend {default or 'not_found'}",
              "backend not_found", "  http-request return status 404",
              "backend unavailable"]  # no server: haproxy answers 503
    for eps, n in ups.items():
        lines.append(f"backend b{n}")
        lines += [f"  server s{i} {_address(a, p)}" for i, (a, p) in enumerate(eps)]
    return "\n".join(lines) + "\n"


def _bucket(host: str, buckets: int) -> int:
    """haproxy's `crc32,mod(buckets)` of a virtual host name (0 when there is one bucket)."""
    return zlib.crc32(host.encode()) % buckets if buckets > 1 else 0
